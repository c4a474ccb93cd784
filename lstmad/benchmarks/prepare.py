"""`lstmad bench prepare`: prepare throughput, memory and storage at archive scale, against a pandas baseline.

An archive of N rows is built by replicating la_haute_borne (or the synthetic farm) over more assets. Three
measurements run in fresh subprocesses, each with its peak resident memory sampled over the whole process
tree (the Spark JVM and its Python workers included):
  - lstmad prepare through Spark ``local[*]`` (cleaning, grid, gap fill, smoothing, normalisation, blocks);
  - the same steps as a straightforward single-process pandas program (the baseline a user would write),
    writing the normalised series (not windows: the baseline gets no W× blow-up charged to it);
  - the streaming window reader going once over every window of the written blocks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lstmad.benchmarks.common import measured_subprocess
from lstmad.config import data_dir

LHB_CHANNELS = [
    {"name": "Ba_avg", "unit": "deg", "minimum": -5.0, "maximum": 95.0},
    {"name": "P_avg", "unit": "kW", "minimum": -50.0, "maximum": 2300.0},
    {"name": "Ws_avg", "unit": "m/s", "minimum": 0.0, "maximum": 60.0},
    {"name": "Va_avg", "unit": "deg", "minimum": -180.0, "maximum": 180.0},
    {"name": "Ot_avg", "unit": "degC", "minimum": -40.0, "maximum": 50.0, "sentinels": [-273.2]},
    {"name": "Ya_avg", "unit": "deg", "minimum": 0.0, "maximum": 360.0},
    {"name": "Wa_avg", "unit": "deg", "minimum": 0.0, "maximum": 360.0},
]
ROWS_PER_FILE = 1_000_000


def build_archive(rows: int, folder: Path, source: str = "la_haute_borne") -> dict:
    """Write an unpartitioned Parquet archive of exactly ``rows`` rows (asset replicas of ``source``);
    returns the pipeline config dict that reads it and the date range it covers."""
    folder.mkdir(parents=True, exist_ok=True)
    if source == "la_haute_borne":
        base_file = data_dir() / "la_haute_borne" / "scada.parquet"
        if not base_file.exists():
            raise FileNotFoundError(f"{base_file}: la_haute_borne is not there (set LSTMAD_DATA_DIR, or "
                                    "use --source synthetic)")
        base = pq.read_table(base_file)
        ts_col, asset_col, channels, step_s, window, half = "Date_time", "Wind_turbine_name", LHB_CHANNELS, 600, 24, 1
    else:
        from lstmad.data.synthetic import FarmSpec, generate_farm

        frame = generate_farm(FarmSpec(turbines=4, days=30, step_s=60, seed=7))
        base = pa.Table.from_pandas(frame.drop(columns=["label"]), preserve_index=False)
        ts_col, asset_col, step_s, window, half = "timestamp", "turbine_id", 60, 26, 5
        channels = [c for c in base.column_names if c not in (ts_col, asset_col, "date")]
        base = base.select([ts_col, asset_col, *channels])
    replicas = math.ceil(rows / base.num_rows)
    written = 0
    part: list[pa.Table] = []
    part_rows = 0
    file_index = 0
    for replica in range(replicas):
        take = min(base.num_rows, rows - written)
        names = pa.compute.binary_join_element_wise(base.column(asset_col).cast(pa.string()),
                                                    pa.scalar(f"-{replica:03d}"), "")
        table = base.slice(0, take).set_column(base.schema.get_field_index(asset_col), asset_col, names.slice(0, take))
        if replica:
            table = _perturbed(table, channels, seed=replica)
        part.append(table)
        part_rows += take
        written += take
        if part_rows >= ROWS_PER_FILE or written == rows:
            pq.write_table(pa.concat_tables(part), folder / f"part-{file_index:04d}.parquet", compression="zstd")
            file_index += 1
            part, part_rows = [], 0
        if written == rows:
            break
    times = base.column(ts_col)
    first = pa.compute.min(times).as_py().date()
    last = pa.compute.max(times).as_py().date()
    channel_entries = channels if source == "la_haute_borne" else list(channels)
    config = {
        "pipeline": "bench_prepare",
        "source": {"path": str(folder), "format": "parquet", "timestamp_column": ts_col, "asset_column": asset_col,
                   "label_column": None, "partition_column": None, "channels": channel_entries},
        "prepare": {"step_s": step_s, "smoothing_half_width": half, "window": window, "block_rows": 4096,
                    "max_gap_steps": 6, "max_masked_share": 0.1},
        "spark": {"master": "local[*]", "shuffle_partitions": 8, "driver_memory": "6g",
                  "conf": {"spark.sql.execution.arrow.maxRecordsPerBatch": "100000"}},
    }
    return {"config": config, "start": first.isoformat(), "end": last.isoformat(), "rows": written,
            "files": file_index}


def _perturbed(table: pa.Table, channels: list, seed: int) -> pa.Table:
    """A replica with its own sensor noise (σ = 0.005 units where it keeps the value inside its physical range):
    identical replicas would let Parquet compression see through the replication and flatter the storage
    figures."""
    rng = np.random.default_rng(seed)
    for channel in channels:
        name = channel["name"] if isinstance(channel, dict) else channel
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        noisy = values + rng.normal(0.0, 0.005, size=values.shape)
        low = channel.get("minimum", -np.inf) if isinstance(channel, dict) else -np.inf
        high = channel.get("maximum", np.inf) if isinstance(channel, dict) else np.inf
        inside = (values >= low) & (values <= high) & (noisy >= low) & (noisy <= high)
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array(np.where(inside, noisy, values), mask=np.isnan(values)))
    return table


# ------------------------------------------------------------------------------------------------ workers
# Each worker runs in its own process (python -m lstmad.benchmarks.prepare WORKER ARGS...) and prints JSON.


def worker_spark(config_path: str, start: str, end: str) -> dict:
    import datetime as dt

    from lstmad import stages
    from lstmad.config import load_config
    from lstmad.spark.session import get_session

    config = load_config(config_path)
    began = time.perf_counter()
    spark = get_session(config.spark)
    spark.range(1).count()
    startup = time.perf_counter() - began
    began = time.perf_counter()
    summary = stages.prepare(config, dt.date.fromisoformat(start), dt.date.fromisoformat(end), fit_stats=True,
                               spark=spark)
    elapsed = time.perf_counter() - began
    spark.stop()
    return {"seconds": elapsed, "spark_startup_s": startup, "summary": summary}


def worker_pandas(config_path: str, start: str, end: str, out: str) -> dict:
    """The same steps, the way a pandas user writes them: whole table in memory, groupby per asset."""
    from lstmad.config import load_config

    config = load_config(config_path)
    src, prep = config.source, config.prepare
    channels = list(src.channel_names)
    began = time.perf_counter()
    frame = pd.read_parquet(config.resolve(src.path))
    frame["ts"] = pd.to_datetime(frame[src.timestamp_column], utc=True, errors="coerce")
    frame = frame[(frame.ts >= pd.Timestamp(start, tz="UTC")) & (frame.ts < pd.Timestamp(end, tz="UTC")
                                                                  + pd.Timedelta(days=1))]
    rows_read = len(frame)
    bad_row = frame.ts.isna() | frame[src.asset_column].isna()
    for channel in src.channels:  # value faults → NaN (masked)
        values = pd.to_numeric(frame[channel.name], errors="coerce")
        fault = ~np.isfinite(values)
        for sentinel in channel.sentinels:
            fault |= (values - sentinel).abs() <= src.sentinel_tolerance * max(1.0, abs(sentinel))
        if channel.minimum is not None:
            fault |= values < channel.minimum
        if channel.maximum is not None:
            fault |= values > channel.maximum
        frame[channel.name] = values.where(~fault)
    bad_row |= frame[channels].isna().all(axis=1)
    quarantined = int(bad_row.sum())
    frame = frame[~bad_row]
    exact = frame.duplicated(subset=[src.asset_column, "ts", *channels])
    frame = frame[~exact]
    conflicting = frame.duplicated(subset=[src.asset_column, "ts"], keep=False)
    quarantined += int(conflicting.sum())
    frame = frame[~conflicting]
    step = f"{prep.step_s}s"
    out_parts = []
    for asset, group in frame.groupby(src.asset_column):
        grid = group.set_index("ts")[channels].resample(step).mean()
        observed = grid.notna()
        present = observed.any(axis=1)
        # a gap longer than max_gap_steps starts a new segment
        run_id = (present != present.shift()).cumsum()
        run_length = present.groupby(run_id).transform("size")
        long_gap = ~present & (run_length > prep.max_gap_steps)
        segment = (long_gap & ~long_gap.shift(fill_value=False)).cumsum()
        grid, observed, segment = grid[~long_gap], observed[~long_gap], segment[~long_gap]
        filled = grid.groupby(segment).transform(lambda s: s.interpolate(limit_direction="both"))
        smoothed = filled.groupby(segment).transform(
            lambda s: s.rolling(2 * prep.smoothing_half_width + 1, center=True, min_periods=1).mean())
        smoothed["asset"] = asset
        smoothed["segment"] = segment
        out_parts.append(pd.concat([smoothed, observed.add_suffix("_observed")], axis=1))
    result = pd.concat(out_parts)
    mean, std = result[channels].mean(), result[channels].std(ddof=0).replace(0, 1)
    result[channels] = ((result[channels] - mean) / std).astype(np.float32)
    result.reset_index().to_parquet(out, compression="zstd")
    elapsed = time.perf_counter() - began
    return {"seconds": elapsed, "rows_read": rows_read, "rows_quarantined": quarantined,
            "exact_duplicates_dropped": int(exact.sum()), "grid_rows": len(result)}


def worker_reader(tensors: str, window: int, start: str, end: str) -> dict:
    import datetime as dt

    from lstmad.dates import iso_dates
    from lstmad.io.tensor_store import stream_window_batches

    dates = iso_dates(dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    began = time.perf_counter()
    windows = 0
    checksum = 0.0
    for batch, _, _ in stream_window_batches(tensors, dates, int(window), batch_size=4096, max_masked_share=0.1):
        windows += batch.shape[0]
        checksum += float(batch[:, -1, 0].sum())
    return {"seconds": time.perf_counter() - began, "windows": windows, "checksum": checksum}


def worker_smoothing(config_path: str) -> dict:
    """Centered ±k smoothing alone, two ways on the same rows: one Spark row window per channel
    (``avg over (partition by asset order by time rows between k preceding and k following)``) and the
    per-asset Arrow batch with NumPy that lstmad uses. Both end in Spark's no-op sink."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lstmad.config import load_config
    from lstmad.spark.session import get_session
    from lstmad.transforms.series import centered_moving_average

    config = load_config(config_path)
    src, k = config.source, config.prepare.smoothing_half_width
    channels = list(src.channel_names)
    spark = get_session(config.spark)
    rows = (spark.read.parquet(str(config.resolve(src.path)))
            .select(F.col(src.asset_column).alias("asset"), F.unix_micros(F.col(src.timestamp_column)).alias("t"),
                    *channels).cache())
    rows.count()
    window = Window.partitionBy("asset").orderBy("t").rowsBetween(-k, k)
    began = time.perf_counter()
    rows.select("asset", "t", *[F.avg(c).over(window).alias(c) for c in channels]) \
        .write.format("noop").mode("overwrite").save()
    spark_window_s = time.perf_counter() - began

    def smooth(table: pa.Table) -> pa.Table:
        order = np.argsort(table.column("t").to_numpy(), kind="stable")
        values = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in channels])[order]
        smoothed = centered_moving_average(values, k)
        return pa.table({"asset": table.column("asset").take(order), "t": table.column("t").take(order),
                         **{c: smoothed[:, i] for i, c in enumerate(channels)}})

    schema = T.StructType([T.StructField("asset", T.StringType()), T.StructField("t", T.LongType()),
                           *[T.StructField(c, T.DoubleType()) for c in channels]])
    began = time.perf_counter()
    rows.groupBy("asset").applyInArrow(smooth, schema).write.format("noop").mode("overwrite").save()
    arrow_s = time.perf_counter() - began
    return {"smoothing_spark_row_window_s": spark_window_s, "smoothing_arrow_numpy_s": arrow_s,
            "rows": rows.count()}


WORKERS: dict[str, Callable[..., dict]] = {"spark": worker_spark, "pandas": worker_pandas, "reader": worker_reader,
                                           "smoothing": worker_smoothing}


def run_measured(worker: str, *args: str) -> dict:
    """Run a worker of this module in a fresh process; adds peak_rss_mb of its whole process tree."""
    return measured_subprocess("lstmad.benchmarks.prepare", worker, *args)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def run(rows: int, json_path: Optional[Path] = None, source: str = "la_haute_borne", workdir: Optional[Path] = None,
        baseline: bool = True, compare_smoothing: bool = False,
        progress: Callable[[str], None] = lambda line: None) -> dict:
    """Build the archive, measure Spark prepare, the pandas baseline and the streaming reader; returns JSON."""
    import yaml

    from lstmad.config import load_config
    from lstmad.layout import Paths

    work = Path(workdir or tempfile.mkdtemp(prefix="lstmad-bench-prepare-"))
    progress(f"building a {rows:,}-row archive from {source} in {work}")
    archive = build_archive(rows, work / "raw", source)
    config_dict = {**archive["config"], "home": str(work / "home")}
    config_path = work / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config_dict, sort_keys=False))
    config = load_config(config_path)
    progress("lstmad prepare (Spark local[*]) ...")
    spark = run_measured("spark", str(config_path), archive["start"], archive["end"])
    summary = spark["summary"]
    tensors = Paths.of(config).tensors
    n_channels = len(config.source.channels)
    block_bytes = _folder_bytes(tensors)
    series_bytes = summary["grid_rows"] * n_channels * 4
    progress("streaming window reader ...")
    reader = run_measured("reader", str(tensors), str(config.prepare.window), archive["start"], archive["end"])
    result = {
        "rows": archive["rows"], "source": source, "assets": None, "channels": n_channels,
        "rows_per_s": archive["rows"] / spark["seconds"], "prepare_s": spark["seconds"],
        "spark_startup_s": spark["spark_startup_s"], "peak_rss_mb": spark["peak_rss_mb"],
        "storage_amplification": block_bytes / series_bytes, "block_bytes": block_bytes,
        "series_float32_bytes": series_bytes,
        "materialised_window_bytes": summary["windows"] * config.prepare.window * n_channels * 4,
        "row_amplification": None, "reader_windows": reader["windows"],
        "reader_windows_per_s": reader["windows"] / reader["seconds"], "reader_peak_rss_mb": reader["peak_rss_mb"],
        "prepare_summary": {k: summary[k] for k in ("rows_read", "rows_kept", "rows_quarantined",
                                                    "exact_duplicates_dropped", "quarantined_by_reason",
                                                    "values_masked_by_reason", "grid_rows", "grid_rows_filled",
                                                    "blocks", "windows", "windows_skipped_masked",
                                                    "phase_seconds")},
        "spark_master": config.spark.master, "cpus": os.cpu_count(),
    }
    import pyarrow.dataset as ds

    stored = ds.dataset(tensors, format="parquet").to_table(columns=["n_rows", "asset_id"])
    result["row_amplification"] = pa.compute.sum(stored.column("n_rows")).as_py() / summary["grid_rows"]
    result["assets"] = len(pa.compute.unique(stored.column("asset_id")))
    if baseline:
        progress("pandas baseline ...")
        pandas = run_measured("pandas", str(config_path), archive["start"], archive["end"], str(work / "baseline.parquet"))
        result.update({"baseline_rows_per_s": archive["rows"] / pandas["seconds"], "baseline_s": pandas["seconds"],
                       "baseline_peak_rss_mb": pandas["peak_rss_mb"],
                       "baseline_counts": {k: pandas[k] for k in ("rows_read", "rows_quarantined",
                                                                  "exact_duplicates_dropped", "grid_rows")}})
        result["speedup_vs_baseline"] = result["rows_per_s"] / result["baseline_rows_per_s"]
    if compare_smoothing:
        progress("smoothing: Spark row window per channel vs per-asset Arrow + NumPy ...")
        smoothing = run_measured("smoothing", str(config_path))
        result.update({k: smoothing[k] for k in ("smoothing_spark_row_window_s", "smoothing_arrow_numpy_s")})
    from lstmad.benchmarks.common import finish_json

    return finish_json(result, json_path)


if __name__ == "__main__":
    name, *arguments = sys.argv[1:]
    print(json.dumps(WORKERS[name](*arguments), default=str))
