"""Scoring as Spark transforms: block files → per-timestamp scores (mapInArrow) → flags → intervals."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from lstmad import names
from lstmad.io.lakehouse import CHANNEL_SHARES_TYPE
from lstmad.serving.scoring import interval_id, operating_state_names, score_blocks, scored_blocks
from lstmad.transforms.intervals import FOUND_SCHEMA, AlarmRules, alarm_intervals
from lstmad.transforms.series import NormalisationStats

# One loaded model per Python worker process, keyed by model version: Spark reuses its Python workers
# across tasks, so each worker deserialises the weights once, not once per partition.
_LOADED_BUNDLES: dict = {}

SCORE_STRUCT = T.StructType([T.StructField(names.ASSET, T.StringType()), T.StructField("timestamp_us", T.LongType()),
                             T.StructField(names.SCORE, T.DoubleType()), T.StructField(names.LABEL, T.ByteType()),
                             T.StructField(names.STATE, T.ByteType())])


def model_payload(model_dir: Path) -> dict[str, bytes]:
    """The files of a saved model bundle, to broadcast to the workers."""
    return {p.name: p.read_bytes() for p in Path(model_dir).iterdir() if p.is_file()}


def payload_digest(payload: dict[str, bytes]) -> str:
    """A short digest of a model payload's files: part of the key workers cache loaded models under."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(payload):
        digest.update(name.encode() + b"\0" + hashlib.sha256(payload[name]).digest())
    return digest.hexdigest()[:16]


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
        from lstmad.serving.bundle import ModelBundle

        # every detector reads its files whole on load, so the folder goes at once: a long-lived worker
        # (or many nights of short ones) would otherwise leave one folder per model version in the temp dir
        with tempfile.TemporaryDirectory(prefix="lstmad-worker-model-") as folder:
            for name, content in payload.items():
                (Path(folder) / name).write_bytes(content)
            bundle = ModelBundle.load(folder)
        bundle.detector.to(device)
        _LOADED_BUNDLES[key] = bundle
    return _LOADED_BUNDLES[key]


# The most blocks one scoring piece holds: a task's memory (its windows and errors) then stays the same
# whatever the fleet's size; 64 blocks of 4,096 rows × 26 channels are about 27 MB of float32 values.
MAX_BLOCKS_PER_PIECE = 64


def work_items(files: list[str], parallelism: int, per_core: int = 4,
               max_blocks: int = MAX_BLOCKS_PER_PIECE) -> list[tuple[str, int, int]]:
    """(file, first block, number of blocks) pieces of the block files, at least ``per_core`` per core and at
    most ``max_blocks`` blocks each: whole files when there are enough small ones, else each file cut into
    equal runs of blocks (a single date still spreads over every core)."""
    import pyarrow.parquet as pq

    wanted = max(1, parallelism * per_core)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    pieces_per_file = max(1, -(-wanted // max(1, len(files))))
    items = []
    for file, blocks in zip(files, sizes):
        step = min(max(1, -(-blocks // pieces_per_file)), max(1, max_blocks))
        items += [(file, lo, min(step, blocks - lo)) for lo in range(0, blocks, step)]
    return items


def read_piece(file: str, first: int, count: int):
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
    items = work_items(files, spark.sparkContext.defaultParallelism, per_core)
    stats_by_id = {k: NormalisationStats.from_dict(v) for k, v in stats_dicts.items()}

    def score_pieces(pieces):
        bundle = _bundle_from_payload(model_key, payload_broadcast.value, worker_device(device))
        for file, blocks in pieces:
            yield from score_blocks(bundle, blocks, stats_by_id, batch_size, max_masked_share).to_batches()

    return _over_items(spark, items, per_core, score_pieces, SCORE_STRUCT)


def _over_items(spark, items: list[tuple[str, int, int]], per_core: int, score_pieces, schema) -> DataFrame:
    """Run ``score_pieces`` over the block pieces ``items`` in Spark tasks: each task gets a contiguous run
    of items (consecutive pieces of one file stay together) and reads only its pieces."""
    tasks = max(1, spark.sparkContext.defaultParallelism * per_core)

    def run(batches):
        def pieces():
            for batch in batches:
                for index in batch.column(0).to_pylist():
                    file, first, count = items[index]
                    yield file, read_piece(file, first, count)
        yield from score_pieces(pieces())

    return spark.range(0, len(items), numPartitions=max(1, min(len(items), tasks))).mapInArrow(run, schema)


# Rows of a scoring pass (scored_pieces): "file" rows carry the add action (JSON) of an anomaly_scores data
# file a task wrote; "flag" rows one timestamp an interval can contain (flagged, or above the hysteresis level,
# in normal operation) with its channel shares in the model's channel order (flagged ones only);
# "score" rows (no lake to write to: delta-spark) every timestamp with its anomaly_scores columns.
PASS_STRUCT = T.StructType([
    T.StructField("kind", T.StringType()), T.StructField(names.ASSET, T.StringType()),
    T.StructField("timestamp_us", T.LongType()), T.StructField(names.SCORE, T.DoubleType()),
    T.StructField(names.LABEL, T.ByteType()), T.StructField(names.FLAG, T.BooleanType()),
    T.StructField("shares", T.ArrayType(T.DoubleType())),
    T.StructField(names.CHANNEL_SHARES, T.ArrayType(T.StructType([T.StructField("channel", T.StringType()),
                                                                  T.StructField("share", T.DoubleType())]))),
    T.StructField(names.SCORED_DATE, T.StringType()), T.StructField("file", T.StringType()),
    T.StructField(names.OPERATING_STATE, T.StringType()),
])


_ARROW_PASS = pa.schema([
    ("kind", pa.string()), (names.ASSET, pa.string()), ("timestamp_us", pa.int64()), (names.SCORE, pa.float64()),
    (names.LABEL, pa.int8()), (names.FLAG, pa.bool_()), ("shares", pa.list_(pa.float64())),
    (names.CHANNEL_SHARES, CHANNEL_SHARES_TYPE), (names.SCORED_DATE, pa.string()), ("file", pa.string()),
    (names.OPERATING_STATE, pa.string()),
])


def date_of_block_file(file: str) -> str:
    """The date partition a tensor-block file belongs to (its folder is date=YYYY-MM-DD)."""
    folder = Path(file).parent.name
    if not folder.startswith(f"{names.DATE}="):
        raise ValueError(f"{file}: not inside a {names.DATE}=YYYY-MM-DD folder of a tensor-block table")
    return folder.split("=", 1)[1]


def scored_pieces(spark, files: list[str], model_key: str, payload_broadcast, stats_dicts: dict[str, dict],
                  threshold: float, batch_size: int, max_masked_share: float = 1.0, device: str = "auto",
                  lake: Optional[str] = None, lineage: Optional[dict] = None,
                  source_versions: Optional[dict[str, str]] = None, per_core: int = 4,
                  interval_level: Optional[float] = None, state_names: tuple[str, ...] = ()) -> DataFrame:
    """One scoring pass over the block ``files`` (PASS_STRUCT rows), flagging score > ``threshold`` and
    attributing flagged timestamps to channels.

    With ``lake``, each task writes its piece's anomaly_scores rows (with the constant ``lineage`` columns
    and the date's ``source_versions``) as a Delta data file of that table and returns the file's add action
    ("file") plus the timestamps intervals can contain ("flag": those above ``interval_level``, by default the
    threshold; a lower level under hysteresis): the scores never travel to the driver, which only commits
    the files (lakehouse.commit_files). Without ``lake``, every timestamp comes back ("score"). Timestamps
    outside normal operation are never flagged and carry the name of their state (``state_names``, the
    configured operating states in order).
    """
    from lstmad.io import lakehouse

    items = work_items(files, spark.sparkContext.defaultParallelism, per_core)
    stats_by_id = {k: NormalisationStats.from_dict(v) for k, v in stats_dicts.items()}
    lineage, source_versions = lineage or {}, source_versions or {}

    def score_pieces(pieces):
        from lstmad import progress

        progress.in_worker()
        done = progress.Progress("score task", unit="timestamps")
        bundle = _bundle_from_payload(model_key, payload_broadcast.value, worker_device(device))
        for file, blocks in pieces:
            day = date_of_block_file(file)
            table, share_rows = scored_blocks(bundle, blocks, stats_by_id, batch_size, max_masked_share, threshold)
            done.advance(table.num_rows)
            states = table.column(names.STATE).to_numpy()
            table = table.append_column(names.OPERATING_STATE, operating_state_names(states, state_names))
            flags = table.column(names.FLAG).to_numpy(zero_copy_only=False)
            n = table.num_rows
            if lake is None:
                yield _pass_rows("score", table, np.ones(n, dtype=bool), share_rows, day, None)
                continue
            rows = table.append_column(names.TIMESTAMP, pa.array(table.column("timestamp_us").to_numpy(),
                                                                 lakehouse.UTC_US).cast(lakehouse.UTC_US))
            constants = {**lineage, names.THRESHOLD: float(threshold), names.SOURCE_VERSION: source_versions.get(day)}
            for name, value in constants.items():
                rows = rows.append_column(name, pa.array([value] * n, lakehouse.SCHEMAS[names.ANOMALY_SCORES]
                                                         .field(name).type))
            action = lakehouse.write_data_file(Path(lake), names.ANOMALY_SCORES, rows, day)
            yield _pass_rows("file", table.slice(0, 0), np.zeros(0, dtype=bool), None, day, json.dumps(action))
            level = threshold if interval_level is None else interval_level
            above = (table.column(names.SCORE).to_numpy() > level) & (states == 0)  # never outside normal operation
            yield _pass_rows("flag", table, flags | above, share_rows, day, None)
        done.finish(only_if_long=True)

    return _over_items(spark, items, per_core, score_pieces, PASS_STRUCT)


def _pass_rows(kind: str, table: pa.Table, keep: np.ndarray, share_rows: Optional[np.ndarray], day: str,
               file: Optional[str]) -> pa.RecordBatch:
    """PASS_STRUCT rows of the ``keep`` rows of a scored table (one "file" row when ``file`` is given)."""
    if file is not None:
        nulls = {f.name: pa.nulls(1, _ARROW_PASS.field(f.name).type) for f in _ARROW_PASS}
        return pa.RecordBatch.from_pydict({**nulls, "kind": pa.array([kind]), names.SCORED_DATE: pa.array([day]),
                                           "file": pa.array([file])}, schema=_ARROW_PASS)
    kept = table.filter(pa.array(keep))
    n = kept.num_rows
    if share_rows is None:
        shares = pa.nulls(n, pa.list_(pa.float64()))
    else:  # share_rows belong to the flagged rows, in order; every flagged row is kept
        flagged = kept.column(names.FLAG).to_numpy(zero_copy_only=False).astype(bool)
        width = share_rows.shape[1]
        offsets = pa.array(np.concatenate([[0], np.cumsum(flagged * width)]).astype(np.int32))
        shares = pa.ListArray.from_arrays(offsets, pa.array(np.asarray(share_rows, np.float64).ravel()),
                                          mask=pa.array(~flagged))
    channel_shares = kept.column(names.CHANNEL_SHARES).combine_chunks() if kind == "score" else \
        pa.nulls(n, CHANNEL_SHARES_TYPE)
    return pa.RecordBatch.from_pydict({
        "kind": pa.array([kind] * n, pa.string()), names.ASSET: kept.column(names.ASSET).combine_chunks(),
        "timestamp_us": kept.column("timestamp_us").combine_chunks(), names.SCORE: kept.column(names.SCORE).combine_chunks(),
        names.LABEL: kept.column(names.LABEL).combine_chunks(), names.FLAG: kept.column(names.FLAG).combine_chunks(),
        "shares": shares, names.CHANNEL_SHARES: channel_shares,
        names.SCORED_DATE: pa.array([day] * n, pa.string()), "file": pa.nulls(n, pa.string()),
        names.OPERATING_STATE: kept.column(names.OPERATING_STATE).combine_chunks()}, schema=_ARROW_PASS)


def anomaly_intervals(flagged: DataFrame, threshold: float, rules: AlarmRules,
                      model_name: str, model_version: str, new_from_us: Optional[int] = None,
                      carried: Optional[dict[str, dict]] = None) -> DataFrame:
    """Intervals per asset (lstmad.transforms.intervals.alarm_intervals under ``threshold`` and ``rules``) from
    the timestamps of a scoring pass that can belong to one (asset_id, timestamp_us, score, shares: those above
    the hysteresis level): interval_id, asset_id, start_us, end_us, duration_s, n_points,
    peak_score, mean_score, shares (mean channel shares in the model's channel order over the timestamps
    inside that have them; null when none does).

    ``carried``: per asset, the candidate timestamps of earlier nights ({"timestamp_us": [...], "score": [...],
    "shares": [[...] or None, ...]}: serving.intervals.carried_tails) that may continue into this pass, which
    starts at ``new_from_us``; an interval that began in it keeps its start and id.
    """
    carried = carried or {}

    def intervals_of(asset: str, times: np.ndarray, scores: np.ndarray, rows: list) -> list[dict]:
        tail = carried.get(asset) or {"timestamp_us": [], "score": [], "shares": []}
        times = np.concatenate([np.asarray(tail["timestamp_us"], np.int64), times])
        scores = np.concatenate([np.asarray(tail["score"], np.float64), scores])
        # shares (n, C) with NaN rows where a timestamp has none (no attribution, or written without it)
        rows = list(tail["shares"]) + rows
        width = next((len(r) for r in rows if r is not None), 0)
        shares = np.array([np.full(width, np.nan) if r is None else np.asarray(r, np.float64) for r in rows]) \
            .reshape(len(rows), width) if width else None
        order = np.argsort(times, kind="stable")
        found = alarm_intervals(times[order], scores[order], threshold, rules,
                                None if shares is None else shares[order], new_from_us)
        for row in found:
            row["interval_id"] = interval_id(asset, row["start_us"], model_name, model_version)
            row[names.ASSET] = asset
            mean = row.pop("shares", None)
            row["shares"] = None if mean is None or np.isnan(mean).any() else mean.tolist()
        return found

    def each_partition(batches):
        # every asset of the partition in one call (a grouped pandas UDF paid a DataFrame per asset)
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        assets = table.column(names.ASSET).to_numpy(zero_copy_only=False).astype(object)
        times = table.column("timestamp_us").to_numpy()
        scores = table.column(names.SCORE).to_numpy()
        share_rows = table.column("shares").to_pylist()
        order = np.argsort(assets, kind="stable")
        bounds = np.flatnonzero(assets[order][1:] != assets[order][:-1]) + 1
        found = []
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [order.size]])):
            mine = order[lo:hi]
            found += intervals_of(str(assets[mine[0]]), times[mine], scores[mine], [share_rows[i] for i in mine])
        if found:
            yield pa.RecordBatch.from_pylist(found, schema=FOUND_SCHEMA)

    partitions = max(1, flagged.sparkSession.sparkContext.defaultParallelism)
    return (flagged.select(names.ASSET, "timestamp_us", names.SCORE, "shares")
            .repartition(partitions, names.ASSET).mapInArrow(each_partition, INTERVAL_STRUCT))


INTERVAL_STRUCT = T.StructType([
    T.StructField("interval_id", T.StringType()), T.StructField(names.ASSET, T.StringType()),
    T.StructField("start_us", T.LongType()), T.StructField("end_us", T.LongType()),
    T.StructField("duration_s", T.LongType()), T.StructField("n_points", T.LongType()),
    T.StructField("peak_score", T.DoubleType()), T.StructField("mean_score", T.DoubleType()),
    T.StructField("shares", T.ArrayType(T.DoubleType()))
])
