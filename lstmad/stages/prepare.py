"""Stage prepare: raw rows of a date range → quarantine (Delta) + cleaned, gridded, smoothed, normalised tensor
blocks (Parquet, one folder per date). Also the synthetic farm's landing table, for the demo and tests."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
import uuid

import numpy as np
import pyarrow as pa

from lstmad import names, progress
from lstmad.config import PipelineConfig
from lstmad.dates import MICROS, day_start_us, iso_dates
from lstmad.io import lakehouse
from lstmad.io.tensor_store import load_stats, replace_block_files, save_stats, stats_dir
from lstmad.layout import Paths, PrepareError
from lstmad.transforms import circular
from lstmad.transforms.diagnosis import explain_channel, explain_unusable, input_warnings

log = logging.getLogger("lstmad")


def generate(config: PipelineConfig) -> dict:
    """Write the synthetic wind farm of ``config.synthetic`` as the raw landing table."""
    from lstmad.data.synthetic import generate_farm, write_landing_table

    farm = generate_farm(config.synthetic)
    files = write_landing_table(farm, Paths.of(config).raw, config.source.partition_column)
    return {"rows": len(farm), "files": len(files), "anomalous_share": float(farm["label"].mean()),
            "path": str(Paths.of(config).raw)}


def prepare(config: PipelineConfig, start: dt.date, end: dt.date, fit_stats: bool = False, spark=None,
            accept_schema: bool = False) -> dict:
    """Raw rows of [start, end] → quarantine (Delta) + normalised tensor blocks (Parquet, per date).

    Reads the W−1+k+max_gap rows before ``start`` as history so that ``start``'s first windows exist. With
    ``fit_stats`` the normalisation is fitted on these dates and becomes the pipeline's reference; otherwise
    the reference is used. The source schema is checked against the configuration and against the schema
    recorded by earlier runs (``accept_schema`` records a changed one instead) before anything is written.
    Only the partitions of [start, end] are replaced. Returns the row accounting (rows read = kept +
    quarantined + exact duplicates dropped, asserted) and block counts.
    """
    from pyspark.sql import functions as F

    from lstmad.io import source_schema
    from lstmad.io.sources import read_source
    from lstmad.spark import block_files
    from lstmad.spark import prepare as transforms
    from lstmad.spark.session import get_session, require_utc
    from lstmad.transforms.cleaning import merge_counts, quarantine_records
    from lstmad.transforms.series import combine_moments, fit_normalisation

    src, prep = config.source, config.prepare
    paths = Paths.of(config)
    channels = src.channel_names  # as the source has them: checks, quarantine and row accounting
    tensor_channels = src.tensor_channels  # circular ones as sine and cosine: grid, statistics, blocks
    dates = iso_dates(start, end)
    start_us, end_us = day_start_us(start), day_start_us(end + dt.timedelta(days=1))
    history_from_us = start_us - (prep.window - 1 + prep.smoothing_half_width + prep.max_gap_steps) * prep.step_s * MICROS
    history_first_day = dt.datetime.fromtimestamp(history_from_us / MICROS, dt.timezone.utc).date()
    history_dates = iso_dates(history_first_day, start - dt.timedelta(days=1)) if history_first_day < start else []
    location = paths.raw
    try:
        files = [] if src.format == "delta" else source_schema.source_files_or_fail(src, location, history_dates, dates)
        files, empty_files = source_schema.split_empty_files(src, files)
        schema = source_schema.observed_schema(src, location, files)
        where = str(files[0].parent if src.partition_column and files else location)
        source_schema.check_configured(src, schema, where)
        if not accept_schema:
            source_schema.check_recorded(paths.home, schema, where)
    except source_schema.SourceSchemaError as error:
        raise PrepareError(str(error)) from None
    if src.partition_column and src.format != "delta":
        present = {f.parent.name.split("=", 1)[1] for f in files}
        missing = [d for d in dates if d not in present]
    else:
        missing = []

    progress.step("prepare %s..%s: reading %s", dates[0], dates[-1],
                  f"{len(files)} {src.format} files ({sum(f.stat().st_size for f in files) / 1e6:.1f} MB) of {location}"
                  if files else f"the Delta table {location}")
    spark = spark or get_session(config.spark, delta_spark=config.delta.engine == "delta-spark",
                                 warm_python_workers=True)
    require_utc(spark)
    nanos = source_schema.naive_nanosecond_timestamps(src, files)
    run_id = uuid.uuid4().hex[:12]
    utc = dt.timezone.utc
    raw = read_source(spark, src, location, files, history_dates + dates,
                      dt.datetime.fromtimestamp(history_from_us / MICROS, utc),
                      dt.datetime.fromtimestamp(end_us / MICROS, utc), config.delta.engine)
    own_dates = dates if src.partition_column else [*dates, transforms.UNDATED]
    ts = F.col(transforms.TS_US)
    check_operating_states(raw, config.operating_states, location)
    stats = None if fit_stats else load_stats(paths.tensors)
    if stats is not None and stats.channels != tuple(tensor_channels):
        raise PrepareError(f"{stats_dir(paths.tensors)}: reference statistics are for channels {list(stats.channels)}, "
                           f"the configuration lists {list(tensor_channels)}; re-run prepare --fit-stats")
    bounds = None if stats is None else circular.source_bounds(stats.overflow_bounds(), src.periods)
    rows = (transforms.canonical_rows(raw, src, own_dates, keep_source=True, nanos_are_naive=nanos,
                                      states=config.operating_states, overflow_bounds=bounds)
            .where(F.col(transforms.OWN) | ((ts >= history_from_us) & (ts < start_us))))
    staging = paths.tensors / "_staging" / run_id
    # A night with the reference statistics known: the tasks write their blocks themselves in the one pass
    # (a file per task). Fitting the statistics needs every asset's moments first, so those blocks wait in
    # Spark's cache to be normalised; a range of dates keeps one file per date (not one per task and date).
    one_pass = stats is not None and len(dates) == 1
    per_asset = transforms.per_asset(rows, channels, stats, prep.window, prep.block_rows, prep.step_s,
                                     prep.max_gap_steps, prep.smoothing_half_width, start_us, end_us,
                                     has_labels=src.label_column is not None,
                                     has_states=bool(config.operating_states),
                                     max_masked_share=prep.max_masked_share,
                                     partitions=prepare_partitions(spark.sparkContext.defaultParallelism,
                                                                   config.spark.shuffle_partitions,
                                                                   sum(f.stat().st_size for f in files)),
                                     write_to=str(staging) if one_pass else None, run_id=run_id,
                                     periods=src.periods)
    if not one_pass:
        per_asset = per_asset.persist()
    phases: dict[str, float] = {}
    began = time.perf_counter()
    try:
        side = transforms.side_records(per_asset)
        phases["clean_grid_smooth_s"] = time.perf_counter() - began
        counts = merge_counts([json.loads(r[transforms.INFO]) for r in side if r[transforms.KIND] == "counts"])
        counts = {"rows_read": 0, "rows_kept": 0, "rows_quarantined": 0, "exact_duplicates_dropped": 0,
                  "quarantined_by_reason": {}, "values_masked_by_reason": {}, "values_masked_by_channel": {},
                  "blocks": 0, "grid_rows": 0, "grid_rows_filled": 0, "values_filled": 0, "windows": 0,
                  "windows_skipped_masked": 0, "labels_not_in_domain": 0, **counts}
        # rows outside normal operation, by the configured state's name (blocks count them by code)
        state_names = {str(k): s.name for k, s in enumerate(config.operating_states, start=1)}
        counts["rows_by_operating_state"] = {state_names.get(code, code): n for code, n in
                                             counts.get("rows_by_operating_state", {}).items()}
        if counts["rows_read"] == 0:
            raise PrepareError(f"{location}: no rows for {dates[0]} .. {dates[-1]}")
        blocks = transforms.block_rows(per_asset)
        candidates = transforms.quarantine_candidates(side, channels)
        # a night that keeps no row is prepared (its stale blocks go, its rows are quarantined) and says why
        unusable = explain_unusable(counts, candidates, src) if counts["rows_kept"] == 0 else ""
        if fit_stats:
            per_asset_moments = {r[names.ASSET]: {k: np.array(v, dtype=np.float64) for k, v in
                                                  json.loads(r[transforms.INFO]).items()}
                                 for r in side if r[transforms.KIND] == "moments"}
            usable = {a: m for a, m in per_asset_moments.items() if m["count"].sum() > 0}
            if not usable:
                raise PrepareError(f"{location}: no usable rows in {dates[0]} .. {dates[-1]} to fit normalisation "
                                   f"on: {explain_unusable(counts, candidates, src)}")
            observed = sum(m["count"] for m in usable.values())
            if (observed == 0).any():
                empty = int(circular.source_index(src.periods)[np.flatnonzero(observed == 0)[0]])
                raise PrepareError(f"{location}: column '{channels[empty]}' has no usable value in "
                                   f"{dates[0]} .. {dates[-1]} "
                                   f"({explain_channel(counts, candidates, src, empty)}): its "
                                   "normalisation cannot be fitted; fix the source or remove it from source.channels")
            stats = fit_normalisation(prep.normalisation, tensor_channels, fitted_on=f"{dates[0]}..{dates[-1]}",
                                      per_asset=usable if prep.normalisation_scope == "per_asset" else None,
                                      **combine_moments(list(usable.values())))
            blocks = block_files.normalise_blocks(blocks, stats)
        conflicts = [(r[names.ASSET], r[names.BLOCK_START]) for r in side if r[transforms.KIND] == "conflict"]
        began = time.perf_counter()
        if conflicts:
            copies = transforms.conflicting_rows(raw, src, own_dates, conflicts, nanos).toArrow()
            candidates = pa.concat_tables([candidates, copies.select(candidates.column_names).cast(candidates.schema)])
        quarantine = quarantine_records(candidates, list(channels), run_id, config.pipeline)
        phases["quarantine_s"] = time.perf_counter() - began
        began = time.perf_counter()
        if one_pass:  # written by the tasks of the pass above
            written = [(r[names.DATE], r[transforms.INFO]) for r in side if r[transforms.KIND] == "file"]
        else:
            # One file per date: each date's blocks of every asset go to one task (small files cost a footer each).
            written = block_files.write_blocks(blocks.repartition(names.DATE), str(staging), run_id)
        phases["write_blocks_s"] = time.perf_counter() - began
    except BaseException:
        # nothing half-way: blocks staged by this run go (the caller sees the error)
        shutil.rmtree(paths.tensors / "_staging" / run_id, ignore_errors=True)
        raise
    finally:
        if not one_pass:
            per_asset.unpersist()
    summary = {"dates": [dates[0], dates[-1]], **counts, "dates_without_data": missing,
               "files_skipped_empty": [str(f) for f in empty_files],
               "stats_id": stats.stats_id, "run_id": run_id, "phase_seconds": phases}
    summary["warnings"] = ([f"no usable rows: {unusable}"] if unusable else []) + input_warnings(summary, src)
    if summary["rows_read"] != summary["rows_kept"] + summary["rows_quarantined"] + summary["exact_duplicates_dropped"]:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssertionError(f"prepare accounting does not add up: {summary}")  # pragma: no cover
    # the quarantine first: blocks and statistics, what scoring reads, are published last
    try:
        lakehouse.replace_partitions(paths.lake, names.QUARANTINE, quarantine, own_dates, config.delta.engine, spark)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    save_stats(paths.tensors, stats, make_current=fit_stats)
    replace_block_files(paths.tensors, dates, staging, written)
    source_schema.record(paths.home, schema)
    for warning in summary["warnings"]:
        log.warning("prepare %s..%s: %s", dates[0], dates[-1], warning)
    progress.step("prepare %s..%s: read %d rows = kept %d + quarantined %d %s + exact duplicates %d; masked values %s; "
             "%d blocks, %d windows (%d skipped as mostly filled in)", dates[0], dates[-1], summary["rows_read"],
             summary["rows_kept"], summary["rows_quarantined"], summary["quarantined_by_reason"] or "",
             summary["exact_duplicates_dropped"], summary["values_masked_by_reason"] or "none", summary["blocks"],
             summary["windows"], summary["windows_skipped_masked"])
    return summary


# Source bytes per prepare task: more tasks for a larger night keep each task's rows (and its Python
# worker's memory) about the same whatever the fleet's size.
SOURCE_BYTES_PER_TASK = 32 * 2**20


def prepare_partitions(parallelism: int, shuffle_partitions: int, source_bytes: int) -> int:
    """Tasks of prepare's per-asset step: every core busy, at least spark.shuffle_partitions, and one per
    SOURCE_BYTES_PER_TASK of source files read (history included; a Delta source, listed as no files, keeps
    the first two)."""
    return max(parallelism, shuffle_partitions, -(-source_bytes // SOURCE_BYTES_PER_TASK))


def check_operating_states(raw, states, location) -> None:
    """Each operating state's condition must be a valid expression over the source's columns: one line naming
    the key otherwise, before any work is done."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    for i, state in enumerate(states):
        try:
            raw.select(F.expr(state.when).cast("boolean")).schema
        except PySparkException as error:
            first = str(error).strip().splitlines()[0][:300]
            raise PrepareError(f"{location}: key 'operating_states[{i}].when' ({state.name}: {state.when!r}) cannot be "
                               f"evaluated on the source's columns: {first}") from None


def prepare_training_data(config: PipelineConfig, spark=None) -> list[dict]:
    """Prepare the training range (fitting the normalisation), the evaluation range and the calibration range
    (threshold.calibration_start..calibration_end), the last two with the training range's statistics."""
    t, th = config.train, config.threshold
    if t.start is None or t.end is None:
        raise PrepareError("train.start and train.end must be set to prepare training data")
    summaries = [prepare(config, t.start, t.end, fit_stats=True, spark=spark)]
    if t.eval_start and t.eval_end:
        summaries.append(prepare(config, t.eval_start, t.eval_end, spark=spark))
    if th.calibration_start and th.calibration_end:
        summaries.append(prepare(config, th.calibration_start, th.calibration_end, spark=spark))
    return summaries
