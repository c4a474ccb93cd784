"""Scoring as DataFrame transforms: tensor blocks → per-timestamp scores (mapInArrow) → flags → intervals."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
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


def window_scores(blocks: DataFrame, model_key: str, payload_broadcast, stats_dicts: dict[str, dict],
                  batch_size: int, max_masked_share: float = 1.0, device: str = "auto") -> DataFrame:
    """Per-timestamp scores of every window in ``blocks``: asset_id, timestamp_us, score, label.

    Each Python worker loads the model once (per version and device) and scores ``batch_size`` windows at a
    time, on the task's GPU where Spark assigned one (worker_device)."""
    stats_by_id = {k: NormalisationStats.from_dict(v) for k, v in stats_dicts.items()}

    def score_batches(batches):
        bundle = _bundle_from_payload(model_key, payload_broadcast.value, worker_device(device))
        for batch in batches:
            yield from score_blocks(bundle, pa.Table.from_batches([batch]), stats_by_id, batch_size,
                                    max_masked_share).to_batches()

    schema = T.StructType([T.StructField(names.ASSET, T.StringType()), T.StructField("timestamp_us", T.LongType()),
                           T.StructField(names.SCORE, T.DoubleType()), T.StructField(names.LABEL, T.ByteType())])
    return blocks.mapInArrow(score_batches, schema)


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
