"""Scoring as Spark transforms: block files → per-timestamp scores (mapInArrow) → flags → intervals."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmad import names
from lstmad.intervals import merge_flags
from lstmad.scoring import interval_id, score_blocks
from lstmad.series import NormalisationStats

# One loaded model per Python worker process, keyed by model version: Spark reuses its Python workers
# across tasks, so each worker deserialises the weights once, not once per partition.
_LOADED_BUNDLES: dict = {}

SCORE_STRUCT = T.StructType([T.StructField(names.ASSET, T.StringType()), T.StructField("timestamp_us", T.LongType()),
                             T.StructField(names.SCORE, T.DoubleType()), T.StructField(names.LABEL, T.ByteType())])


def model_payload(model_dir: Path) -> dict[str, bytes]:
    """The files of a saved model bundle, to broadcast to the workers."""
    return {p.name: p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file()}


def worker_device(preference: str = "auto") -> str:
    """Where a scoring task runs its model: the GPU Spark assigned to the task (its ``gpu`` resource), any
    visible GPU in local mode, else the CPU."""
    import torch

    if preference == "cpu" or not torch.cuda.is_available():
        if preference == "cuda":
            raise RuntimeError("score.device is 'cuda' but this Spark worker sees no CUDA device")
        return "cpu"
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return f"cuda:{gpus.addresses[0]}" if gpus is not None and gpus.addresses else "cuda"


def _bundle_from_payload(key: str, payload: dict[str, bytes], device: str = "cpu"):
    key = f"{key}@{device}"
    if key not in _LOADED_BUNDLES:
        from lstmad.bundle import ModelBundle

        folder = Path(tempfile.mkdtemp(prefix="lstmad-worker-model-"))
        for name, content in payload.items():
            (folder / name).write_bytes(content)
        bundle = ModelBundle.load(folder)
        bundle.detector.to(device)
        _LOADED_BUNDLES[key] = bundle
    return _LOADED_BUNDLES[key]


def work_items(files: list[str], parallelism: int, per_core: int = 4) -> list[tuple[str, int, int]]:
    """(file, first block, number of blocks) pieces of the block files, at least ``per_core`` per core: whole
    files when there are enough of them, else each file cut into equal runs of blocks (a single date still
    spreads over every core)."""
    import pyarrow.parquet as pq

    wanted = max(1, parallelism * per_core)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    pieces_per_file = max(1, -(-wanted // max(1, len(files))))
    items = []
    for file, blocks in zip(files, sizes):
        step = max(1, -(-blocks // pieces_per_file))
        items += [(file, lo, min(step, blocks - lo)) for lo in range(0, blocks, step)]
    return items


def _read_piece(file: str, first: int, count: int):
    """Blocks [first, first + count) of a block file: only the row groups that hold them are decoded
    (prepare writes row groups of tensors.BLOCKS_PER_ROW_GROUP blocks)."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(file) as handle:
        sizes = [handle.metadata.row_group(i).num_rows for i in range(handle.metadata.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        groups = [i for i in range(len(sizes)) if starts[i] < first + count and starts[i + 1] > first]
        if not groups:
            return handle.schema_arrow.empty_table()
        return handle.read_row_groups(groups, use_threads=False).slice(first - int(starts[groups[0]]), count)


def file_scores(spark, files: list[str], model_key: str, payload_broadcast, stats_dicts: dict[str, dict],
                batch_size: int, max_masked_share: float = 1.0, device: str = "auto",
                per_core: int = 4) -> DataFrame:
    """Per-timestamp scores (asset_id, timestamp_us, score, label) of every window in the block ``files``.

    The tasks read the files themselves with pyarrow, one piece at a time (work_items): no JVM scan and no
    shuffle of the blocks, and memory per task stays at one piece. The executors must see the files (as they
    must to write them in prepare). Each Python worker loads the model once (per version and device) and
    scores ``batch_size`` windows at a time on the task's GPU where Spark assigned one (worker_device).
    """
    tasks = max(1, spark.sparkContext.defaultParallelism * per_core)
    items = work_items(files, spark.sparkContext.defaultParallelism, per_core)
    stats_by_id = {k: NormalisationStats.from_dict(v) for k, v in stats_dicts.items()}

    def score_items(batches):
        bundle = _bundle_from_payload(model_key, payload_broadcast.value, worker_device(device))
        for batch in batches:
            for index in batch.column(0).to_pylist():
                file, first, count = items[index]
                yield from score_blocks(bundle, _read_piece(file, first, count), stats_by_id, batch_size,
                                        max_masked_share).to_batches()

    # contiguous runs of items per task: consecutive pieces of one file stay together
    return spark.range(0, len(items), numPartitions=max(1, min(len(items), tasks))).mapInArrow(score_items,
                                                                                           SCORE_STRUCT)


def flagged_scores(scores: DataFrame, threshold: float) -> DataFrame:
    return scores.withColumn(names.THRESHOLD, F.lit(float(threshold))) \
        .withColumn(names.FLAG, F.col(names.SCORE) > F.lit(float(threshold)))


def anomaly_intervals(flagged: DataFrame, step_s: int, min_duration_s: int, merge_gap_s: int,
                      model_name: str, model_version: str) -> DataFrame:
    """Intervals per asset from flagged per-timestamp scores (lstmad.intervals.merge_flags)."""

    def merge(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("timestamp_us", kind="stable")
        asset = str(pdf[names.ASSET].iloc[0])
        rows = merge_flags(pdf["timestamp_us"].to_numpy(np.int64), pdf[names.FLAG].to_numpy(bool),
                           pdf[names.SCORE].to_numpy(np.float64), step_s, min_duration_s, merge_gap_s)
        for row in rows:
            row["interval_id"] = interval_id(asset, row["start_us"], model_name, model_version)
            row[names.ASSET] = asset
        return pd.DataFrame(rows, columns=["interval_id", names.ASSET, "start_us", "end_us", "duration_s",
                                           "n_points", "peak_score", "mean_score"])

    schema = T.StructType([
        T.StructField("interval_id", T.StringType()), T.StructField(names.ASSET, T.StringType()),
        T.StructField("start_us", T.LongType()), T.StructField("end_us", T.LongType()),
        T.StructField("duration_s", T.LongType()), T.StructField("n_points", T.LongType()),
        T.StructField("peak_score", T.DoubleType()), T.StructField("mean_score", T.DoubleType()),
    ])
    return flagged.select(names.ASSET, "timestamp_us", names.SCORE, names.FLAG) \
        .groupBy(names.ASSET).applyInPandas(merge, schema)
