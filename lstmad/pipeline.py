"""The pipeline stages as functions of a PipelineConfig: what jobs, DAG tasks and the CLI call.

Each stage reads its inputs from the pipeline home, writes its outputs there and returns a summary dict;
tracking happens here, at the entry points, never inside the library's transforms or training loop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmad import lakehouse, names
from lstmad.config import PipelineConfig
from lstmad.intervals import utc_date

log = logging.getLogger("lstmad")

MICROS = 1_000_000


class PrepareError(ValueError):
    """The raw table cannot be prepared; the message names the file and the column."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a pipeline keeps its data: raw landing table, tensor blocks, Delta lake, model cache."""

    home: Path
    raw: Path
    tensors: Path
    lake: Path
    models: Path

    @classmethod
    def of(cls, config: PipelineConfig) -> "Paths":
        home = config.pipeline_home
        return cls(home, config.resolve(config.source.path), home / names.TENSOR_BLOCKS, home / "lake",
                   home / "models")


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"date range ends ({end}) before it starts ({start})")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _micros(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp()) * MICROS


# ---------------------------------------------------------------------------------------------- generate


def generate(config: PipelineConfig) -> dict:
    """Write the synthetic wind farm of ``config.synthetic`` as the raw landing table."""
    from lstmad.data.synthetic import FarmSpec, generate_farm, write_landing_table

    spec = FarmSpec(**dataclasses.asdict(config.synthetic))
    farm = generate_farm(spec)
    files = write_landing_table(farm, Paths.of(config).raw, config.source.partition_column)
    return {"rows": len(farm), "files": len(files), "anomalous_share": float(farm["label"].mean()),
            "path": str(Paths.of(config).raw)}


# ---------------------------------------------------------------------------------------------- prepare


def _stats_dir(paths: Paths) -> Path:
    return paths.tensors / names.STATS_DIR


def load_stats(paths: Paths, stats_id: str = "current"):
    from lstmad.series import NormalisationStats

    file = _stats_dir(paths) / f"{stats_id}.json"
    if not file.exists():
        raise PrepareError(f"{file}: no normalisation statistics yet; prepare the training range first "
                           f"(lstmad prepare --fit-stats, or lstmad train)")
    return NormalisationStats.from_dict(json.loads(file.read_text()))


def _save_stats(paths: Paths, stats, make_current: bool) -> None:
    """Keep every statistics version by id (blocks and models refer to it); ``current`` is the reference."""
    folder = _stats_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stats.to_dict(), indent=2)
    if not (folder / f"{stats.stats_id}.json").exists():  # content-addressed: never rewritten
        (folder / f"{stats.stats_id}.json").write_text(text)
    if make_current:
        tmp = folder / ".current.json.tmp"
        tmp.write_text(text)
        tmp.replace(folder / "current.json")


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

    from lstmad import source_schema
    from lstmad.cleaning import merge_counts, quarantine_records
    from lstmad.series import combine_moments, fit_normalisation
    from lstmad.spark import prepare as transforms
    from lstmad.spark.ingest import read_source
    from lstmad.spark.session import get_session, require_utc

    src, prep = config.source, config.prepare
    paths = Paths.of(config)
    channels = src.channel_names
    dates = [d.isoformat() for d in date_range(start, end)]
    start_us, end_us = _micros(start), _micros(end + dt.timedelta(days=1))
    history_from_us = start_us - (prep.window - 1 + prep.smoothing_half_width + prep.max_gap_steps) * prep.step_s * MICROS
    history_first_day = dt.datetime.fromtimestamp(history_from_us / MICROS, dt.timezone.utc).date()
    history_dates = [d.isoformat() for d in date_range(history_first_day, start - dt.timedelta(days=1))] \
        if history_first_day < start else []
    location = paths.raw
    try:
        files = [] if src.format == "delta" else source_files_or_fail(src, location, history_dates, dates)
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

    spark = spark or get_session(config.spark, delta_spark=config.delta.engine == "delta-spark")
    require_utc(spark)
    nanos = source_schema.naive_nanosecond_timestamps(src, files)
    run_id = uuid.uuid4().hex[:12]
    utc = dt.timezone.utc
    raw = read_source(spark, src, location, files, history_dates + dates,
                      dt.datetime.fromtimestamp(history_from_us / MICROS, utc),
                      dt.datetime.fromtimestamp(end_us / MICROS, utc), config.delta.engine)
    own_dates = dates if src.partition_column else [*dates, transforms.UNDATED]
    ts = F.col(transforms.TS_US)
    rows = (transforms.canonical_rows(raw, src, own_dates, keep_source=True, nanos_are_naive=nanos)
            .where(F.col(transforms.OWN) | ((ts >= history_from_us) & (ts < start_us))))
    stats = None
    if not fit_stats:
        stats = load_stats(paths)
        if stats.channels != tuple(channels):
            raise PrepareError(f"{_stats_dir(paths)}: reference statistics are for channels {list(stats.channels)}, "
                               f"the configuration lists {list(channels)}; re-run prepare --fit-stats")
    per_asset = transforms.per_asset(rows, channels, stats, prep.window, prep.block_rows, prep.step_s,
                                     prep.max_gap_steps, prep.smoothing_half_width, start_us, end_us,
                                     has_labels=src.label_column is not None,
                                     max_masked_share=prep.max_masked_share,
                                     partitions=max(spark.sparkContext.defaultParallelism,
                                                    config.spark.shuffle_partitions)).persist()
    phases: dict[str, float] = {}
    began = time.perf_counter()
    try:
        side = transforms.side_records(per_asset)
        phases["clean_grid_smooth_s"] = time.perf_counter() - began
        counts = merge_counts([json.loads(r[transforms.INFO]) for r in side if r[transforms.KIND] == "counts"])
        counts = {"rows_read": 0, "rows_kept": 0, "rows_quarantined": 0, "exact_duplicates_dropped": 0,
                  "quarantined_by_reason": {}, "values_masked_by_reason": {}, "values_masked_by_channel": {},
                  "blocks": 0, "grid_rows": 0, "grid_rows_filled": 0, "values_filled": 0, "windows": 0,
                  "windows_skipped_masked": 0, **counts}
        if counts["rows_read"] == 0:
            raise PrepareError(f"{location}: no rows for {dates[0]} .. {dates[-1]}")
        blocks = transforms.block_rows(per_asset)
        if fit_stats:
            per_asset_moments = {r[names.ASSET]: {k: np.array(v, dtype=np.float64) for k, v in
                                                  json.loads(r[transforms.INFO]).items()}
                                 for r in side if r[transforms.KIND] == "moments"}
            usable = {a: m for a, m in per_asset_moments.items() if m["count"].sum() > 0}
            if not usable:
                raise PrepareError(f"{location}: no usable rows in {dates[0]} .. {dates[-1]} to fit normalisation on")
            stats = fit_normalisation(prep.normalisation, channels, fitted_on=f"{dates[0]}..{dates[-1]}",
                                      per_asset=usable if prep.normalisation_scope == "per_asset" else None,
                                      **combine_moments(list(usable.values())))
            blocks = transforms.normalise_blocks(blocks, stats)
        conflicts = [(r[names.ASSET], r[names.BLOCK_START]) for r in side if r[transforms.KIND] == "conflict"]
        began = time.perf_counter()
        candidates = transforms.quarantine_candidates(side, channels)
        if conflicts:
            copies = transforms.conflicting_rows(raw, src, own_dates, conflicts, nanos).toArrow()
            candidates = pa.concat_tables([candidates, copies.select(candidates.column_names).cast(candidates.schema)])
        quarantine = quarantine_records(candidates, list(channels), run_id, config.pipeline)
        phases["quarantine_s"] = time.perf_counter() - began
        began = time.perf_counter()
        # One file per date: each date's blocks of every asset go to one task (small files cost a footer each).
        staging = paths.tensors / "_staging" / run_id
        written = transforms.write_blocks(blocks.repartition(names.DATE), str(staging), run_id)
        phases["write_blocks_s"] = time.perf_counter() - began
    finally:
        per_asset.unpersist()
    _save_stats(paths, stats, make_current=fit_stats)
    _replace_block_files(paths, dates, staging, written)
    lakehouse.replace_partitions(paths.lake, names.QUARANTINE, quarantine, own_dates, config.delta.engine, spark)
    source_schema.record(paths.home, schema)
    summary = {"dates": [dates[0], dates[-1]], **counts, "dates_without_data": missing,
               "stats_id": stats.stats_id, "run_id": run_id, "phase_seconds": phases}
    if summary["rows_read"] != summary["rows_kept"] + summary["rows_quarantined"] + summary["exact_duplicates_dropped"]:
        raise AssertionError(f"prepare accounting does not add up: {summary}")  # pragma: no cover
    log.info("prepare %s..%s: read %d rows = kept %d + quarantined %d %s + exact duplicates %d; masked values %s; "
             "%d blocks, %d windows (%d skipped as mostly filled in)", dates[0], dates[-1], summary["rows_read"],
             summary["rows_kept"], summary["rows_quarantined"], summary["quarantined_by_reason"] or "",
             summary["exact_duplicates_dropped"], summary["values_masked_by_reason"] or "none", summary["blocks"],
             summary["windows"], summary["windows_skipped_masked"])
    return summary


def _replace_block_files(paths: Paths, dates: list[str], staging: Path, written: list[tuple[str, str]]) -> None:
    """Move the files this run wrote from ``staging`` into the folders of ``dates``, which then hold only
    them: earlier runs' files go, and a date left without usable rows loses its old blocks. Other dates are
    untouched. The tasks wrote to staging, so a run that fails never leaves its files beside the old ones."""
    from lstmad.tensors import content_version

    keep: dict[str, set[str]] = {}
    for day, name in written:
        keep.setdefault(day, set()).add(name)
    for day in dates:
        folder = paths.tensors / f"{names.DATE}={day}"
        if keep.get(day):
            folder.mkdir(parents=True, exist_ok=True)
            for name in keep[day]:
                (staging / f"{names.DATE}={day}" / name).replace(folder / name)
        if folder.is_dir():
            for file in folder.iterdir():
                if file.name not in keep.get(day, set()):
                    file.unlink()
            if not keep.get(day):
                folder.rmdir()
            else:
                content_version(paths.tensors, day)  # hash now, while the files are fresh in the page cache
    shutil.rmtree(staging, ignore_errors=True)
    # staging folders of runs that failed a day or more ago (a younger one may belong to a run in progress)
    for leftover in (paths.tensors / "_staging").glob("*"):
        if time.time() - leftover.stat().st_mtime > 86_400:
            shutil.rmtree(leftover, ignore_errors=True)


def source_files_or_fail(src, location: Path, history_dates: list[str], dates: list[str]) -> list[Path]:
    """The files to read (history partitions included), or one error saying where nothing was found."""
    from lstmad import source_schema

    files = source_schema.source_files(src, location, dates)
    if not files:
        what = (f"raw partitions for {dates[0]} .. {dates[-1]}" if src.partition_column
                else f"*.{src.format} files")
        raise source_schema.SourceSchemaError(f"{location}: no {what}")
    if src.partition_column and history_dates:
        files = source_schema.source_files(src, location, history_dates) + files
    return files


def training_window(config: PipelineConfig, end: dt.date) -> PipelineConfig:
    """The config with its training and evaluation ranges slid to end at ``end``: the last
    ``train.eval_days`` evaluate, the ``train.window_days`` before them train (retraining on recent data)."""
    t = config.train
    if t.window_days <= 0:
        raise ValueError("train.window_days must be set (> 0) to train on a window of recent dates")
    train_end = end - dt.timedelta(days=t.eval_days)
    window = dict(start=train_end - dt.timedelta(days=t.window_days - 1), end=train_end,
                  eval_start=end - dt.timedelta(days=t.eval_days - 1) if t.eval_days else None,
                  eval_end=end if t.eval_days else None)
    return dataclasses.replace(config, train=dataclasses.replace(t, **window))


def prepare_training_data(config: PipelineConfig, spark=None) -> list[dict]:
    """Prepare the training range (fitting the normalisation) and the evaluation range."""
    t = config.train
    if t.start is None or t.end is None:
        raise PrepareError("train.start and train.end must be set to prepare training data")
    summaries = [prepare(config, t.start, t.end, fit_stats=True, spark=spark)]
    if t.eval_start and t.eval_end:
        summaries.append(prepare(config, t.eval_start, t.eval_end, spark=spark))
    return summaries


# ---------------------------------------------------------------------------------------------- train


def _windows_of(config: PipelineConfig, start: dt.date, end: dt.date):
    from lstmad.tensors import read_blocks, windows_from_blocks

    blocks = read_blocks(Paths.of(config).tensors, [d.isoformat() for d in date_range(start, end)])
    return blocks, windows_from_blocks(blocks, config.prepare.window, max_masked_share=config.prepare.max_masked_share)


def build_detector(config: PipelineConfig, checkpoint_dir: str = ""):
    """A fresh detector of the kind and settings in ``config.model``; trained kinds checkpoint every epoch to
    ``checkpoint_dir`` when it is set."""
    from lstmad.detectors import (IAELSTMKLDetector, IsolationForestDetector, LSTMAutoencoderDetector,
                                  LSTMForecasterDetector, PCAT2QDetector)

    m = config.model
    training = dict(epochs=m.epochs, batch_size=m.batch_size, learning_rate=m.learning_rate, patience=m.patience,
                    validation_share=m.validation_share, seed=m.seed, device=m.device, lr_schedule=m.lr_schedule,
                    precision=m.precision, compile=m.compile, pin_memory=m.pin_memory, checkpoint_dir=checkpoint_dir)
    if m.detector == "lstm_forecaster":
        return LSTMForecasterDetector(hidden_sizes=tuple(m.hidden_sizes), dropout=m.dropout,
                                      error_model=m.error_model, **training)
    if m.detector == "lstm_autoencoder":
        return LSTMAutoencoderDetector(hidden=m.hidden_sizes[0], **training)
    if m.detector == "iae_lstm_kl":
        return IAELSTMKLDetector.variant(m.variant, m.profile, pretrain_epochs=max(2, m.epochs // 2), **training)
    if m.detector == "pca_t2q":
        return PCAT2QDetector()
    return IsolationForestDetector(seed=m.seed)


def training_key(config: PipelineConfig) -> str:
    """Digest of everything that shapes a trained model (settings, and the training dates' block files by name
    and size): a rerun with the same key resumes an unfinished run's checkpoints; any change starts afresh."""
    import hashlib

    from lstmad.tensors import block_files

    # where and how fast it runs does not shape the model; what it is trained on does
    model = {k: v for k, v in dataclasses.asdict(config.model).items() if k not in ("threads", "compile", "pin_memory")}
    train = dataclasses.asdict(config.train)
    train["distributed"] = {k: v for k, v in train["distributed"].items()
                            if k in ("processes", "shuffle_files", "use_gpu")}
    data = [(Path(f).parent.name, Path(f).name, Path(f).stat().st_size)
            for f in block_files(Paths.of(config).tensors, _train_dates(config))]
    shaping = {"pipeline": config.pipeline, "model": model, "train": train,
               "prepare": dataclasses.asdict(config.prepare), "channels": config.source.channel_names,
               "registered_model": config.registered_model_name, "blocks": data}
    return hashlib.sha1(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _train_dates(config: PipelineConfig) -> list[str]:
    return [d.isoformat() for d in date_range(config.train.start, config.train.end)]


def _fit_in_memory(config: PipelineConfig, detector, on_epoch) -> tuple[object, dict]:
    """Fit on all training windows held in this process (after the labelled-anomaly exclusion and the
    max_train_windows thinning)."""
    t, m = config.train, config.model
    _, windows = _windows_of(config, t.start, t.end)
    n_total, skipped_masked, excluded = len(windows), windows.skipped_masked, 0
    if t.exclude_labelled_anomalies:
        keep = np.flatnonzero(windows.label_any != 1)
        excluded = n_total - keep.size
        windows = windows.subset(keep)
    severe = 0
    if t.exclude_severity > 0:
        inside = _inside_severe_intervals(config, windows)
        if inside.mean() > MAX_SEVERE_SHARE:
            # a drifted champion flags most of the new regime: that is the data to learn, not to leave out
            log.warning("train: %.0f%% of the windows lie inside severe intervals (more than %.0f%%): keeping "
                        "them all", 100 * inside.mean(), 100 * MAX_SEVERE_SHARE)
        else:
            severe = int(inside.sum())
            windows = windows.subset(np.flatnonzero(~inside))
    if m.max_train_windows and len(windows) > m.max_train_windows:
        windows = windows.subset(np.linspace(0, len(windows) - 1, m.max_train_windows).astype(np.int64))
    log.info("train: %d windows (%d excluded as labelled anomalous, %d inside intervals of severity >= %s) "
             "from %s..%s", len(windows), excluded, severe, t.exclude_severity, t.start, t.end)
    detector.fit(windows, on_epoch=on_epoch)
    return detector, {"train_windows": len(windows), "excluded_windows": excluded,
                      "excluded_severe_windows": severe, "skipped_masked_windows": skipped_masked, "processes": 0}


MAX_SEVERE_SHARE = 0.5


def _inside_severe_intervals(config: PipelineConfig, windows) -> np.ndarray:
    """(N,) whether each window's last timestamp lies inside an anomaly interval (any model) of at least
    train.exclude_severity on its asset: [start, end + step)."""
    from lstmad.distributed import inside_spans

    return inside_spans(windows, _severe_spans(config))


def _severe_spans(config: PipelineConfig) -> tuple[tuple[str, int, int], ...]:
    """(asset, from_us, to_us) of every anomaly interval (any model) of at least train.exclude_severity that
    overlaps the training range: [start, end + step)."""
    import pyarrow.dataset as ds

    t = config.train
    severe = lakehouse.scan(Paths.of(config).lake, names.ANOMALY_INTERVALS, [names.ASSET, "start", "end"],
                            (ds.field("severity") >= t.exclude_severity)
                            & (ds.field("end") >= pa.scalar(_micros(t.start), lakehouse.UTC_US))
                            & (ds.field("start") < pa.scalar(_micros(t.end + dt.timedelta(days=1)), lakehouse.UTC_US)))
    step_us = config.prepare.step_s * MICROS
    return tuple((asset, start, end + step_us) for asset, start, end in zip(
        severe.column(names.ASSET).to_pylist(), severe.column("start").cast(pa.int64()).to_pylist(),
        severe.column("end").cast(pa.int64()).to_pylist()))


def _fit_sharded(config: PipelineConfig, detector, spark=None) -> tuple[object, dict]:
    """Fit with train.distributed.processes ranks, each streaming its shard of the training dates' block
    files; the latest dates validate."""
    from lstmad.distributed import ShardedData, count_windows_inside, fit_distributed, split_by_date
    from lstmad.tensors import block_files

    t, d = config.train, config.train.distributed
    train_files, validation_files = split_by_date(block_files(Paths.of(config).tensors, _train_dates(config)),
                                                  config.model.validation_share)
    data = ShardedData(train_files, validation_files, config.prepare.window, config.prepare.max_masked_share,
                       t.exclude_labelled_anomalies, d.shuffle_files)
    severe = 0
    spans = _severe_spans(config) if t.exclude_severity > 0 else ()
    if spans:
        # one counting pass over the files, as the in-memory path decides on all windows at once
        every, inside = count_windows_inside(train_files + validation_files, data, spans)
        if inside > MAX_SEVERE_SHARE * every:
            log.warning("train: %.0f%% of the windows lie inside severe intervals (more than %.0f%%): keeping "
                        "them all", 100 * inside / max(every, 1), 100 * MAX_SEVERE_SHARE)
        else:
            severe, data = inside, dataclasses.replace(data, excluded_spans=spans)
    if (d.processes > 1 or not d.local_mode) and spark is None:
        from lstmad.spark.session import get_session

        get_session(config.spark, delta_spark=config.delta.engine == "delta-spark")  # TorchDistributor's session
    detector, summary = fit_distributed(detector, data, d.processes, d.local_mode, d.use_gpu,
                                        d.threads_per_process, config.model.max_train_windows)
    return detector, {"train_windows": summary["windows_per_epoch"], "shard_windows": summary["shard_windows"],
                      "validation_windows": summary["validation_windows"], "excluded_severe_windows": severe,
                      "steps_per_epoch": summary["steps_per_epoch"], "processes": summary["world_size"]}


def train(config: PipelineConfig, on_epoch: Optional[Callable[[dict], None]] = None, promote: bool = True,
          spark=None) -> dict:
    """Train the detector on the prepared training range, evaluate it on the labelled evaluation range, log
    it to MLflow and register it; with ``promote``, also run the promotion gate (promote_model).

    The MLflow run is opened first and checkpoints go to its artifact location every epoch; a training that
    was killed (its run never finished) resumes from its last checkpoint when run again with the same
    settings (training_key).
    """
    import torch

    from lstmad import tracking
    from lstmad.bundle import ModelBundle
    from lstmad.metrics import score_metrics
    from lstmad.scoring import score_blocks
    from lstmad.drift import reference_quantiles
    from lstmad.thresholds import describe_rule, threshold_from_rule

    t, m = config.train, config.model
    paths = Paths.of(config)
    if m.threads:
        torch.set_num_threads(m.threads)
    stats = _training_stats(config)
    tags = {"pipeline": config.pipeline, "detector": config.model.detector}
    key = training_key(config)
    # locked before the run is looked up: two trainings with the same settings must not both find (or both
    # create) the unfinished run
    lock = _TrainingLock(paths.home / "locks" / f"train-{key}.lock", key)
    try:
        run_id, resumed = tracking.open_training_run(config.tracking_uri, config.experiment_name, key, tags,
                                                     config.artifact_location)
    except BaseException:
        lock.release()
        raise
    artifacts = tracking.local_artifact_dir(config.tracking_uri, run_id)
    checkpoints = (artifacts / tracking.CHECKPOINT_ARTIFACT if artifacts is not None
                   else paths.home / "checkpoints" / run_id)
    if resumed:
        log.info("train: resuming unfinished MLflow run %s from %s", run_id, checkpoints)
    try:
        started = time.time()
        detector = build_detector(config, str(checkpoints))
        if t.distributed.processes:
            detector, counts = _fit_sharded(config, detector, spark)
            for record in detector.history_ if on_epoch else ():
                on_epoch(record)  # the ranks ran elsewhere: report their epochs now
        else:
            detector, counts = _fit_in_memory(config, detector, on_epoch)
        train_seconds = time.time() - started
        threshold = threshold_from_rule(config.threshold.rule, detector.validation_scores_,
                                        config.threshold.percentile)
        drift_reference = _drift_reference(paths, _train_dates(config), config.drift.psi_bins)
        drift_reference["score_quantiles"] = reference_quantiles(np.asarray(detector.validation_scores_)[:, None])[0]
        drift_reference["trained_until"] = config.train.end.isoformat()
        bundle = ModelBundle(detector.to("cpu"), tuple(config.source.channel_names), config.prepare.window,
                             config.prepare.step_s, stats, threshold,
                             describe_rule(config.threshold.rule, config.threshold.percentile),
                             float(np.mean(detector.validation_scores_ > threshold)), drift_reference)
        metrics: dict[str, float] = {**counts, "threshold": threshold, "train_seconds": train_seconds,
                                     "resumed": float(resumed)}
        model_dir = paths.models / "staging" / uuid.uuid4().hex[:8]
        figures = model_dir.with_name(model_dir.name + "-plots")
        if t.eval_start and t.eval_end:
            eval_blocks, _ = _windows_of(config, t.eval_start, t.eval_end)
            scored = score_blocks(bundle, eval_blocks, {stats.stats_id: stats},
                                  max_masked_share=config.prepare.max_masked_share)
            metrics.update({f"eval_{k}": v for k, v in score_metrics(
                scored.column(names.LABEL).to_numpy(), scored.column(names.SCORE).to_numpy(), threshold).items()})
            try:
                _evaluation_figures(scored, threshold, figures)
            except Exception as error:  # a figure is never worth a training run
                log.warning("train: evaluation figures not drawn: %s", error)
        bundle.save(model_dir)
        params = {**dataclasses.asdict(m), "window": config.prepare.window, "step_s": config.prepare.step_s,
                  "smoothing_half_width": config.prepare.smoothing_half_width,
                  "channels": ",".join(config.source.channel_names), "threshold_rule": config.threshold.rule,
                  "threshold_percentile": config.threshold.percentile, "normalisation": stats.method,
                  "stats_id": stats.stats_id, "train_range": f"{t.start}..{t.end}",
                  "eval_range": f"{t.eval_start}..{t.eval_end}",
                  "distributed": json.dumps(dataclasses.asdict(t.distributed)),
                  "tensor_table": str(paths.tensors),
                  "training_data_version": _SourceVersions(paths, {}).of_dates(_train_dates(config)),
                  "eval_data_version": _SourceVersions(paths, {}).of_dates(
                      [d.isoformat() for d in date_range(t.eval_start, t.eval_end)])
                  if t.eval_start and t.eval_end else "none"}
        lineage_tags = {**tags, "git_commit": _git_commit(), "lstmad_version": _lstmad_version()}
        # the folder becomes an MLflow model with its input signature (mlflow.pyfunc.load_model scores windows)
        tracking.write_mlflow_model(model_dir, config.prepare.window, list(config.source.channel_names),
                                    {"step_s": config.prepare.step_s, "normalisation": stats.stats_id,
                                     "normalisation_scope": stats.scope, "input_units": "source units",
                                     "threshold": threshold, "threshold_rule": config.threshold.rule,
                                     "detector": m.detector, "score": "anomaly score of each window's last "
                                     "timestamp; flagged when above threshold"})
        tracking.log_training_run(config.tracking_uri, run_id, params, detector.history_, metrics, model_dir,
                                  lineage_tags,
                                  documents={"normalisation.json": stats.to_dict(),
                                             "threshold.json": {"rule": config.threshold.rule,
                                                                "percentile": config.threshold.percentile,
                                                                "value": threshold}},
                                  checkpoints=None if artifacts is not None else checkpoints, figures=figures)
        shutil.rmtree(figures, ignore_errors=True)
        name = config.registered_model_name
        version = tracking.register_model(config.tracking_uri, name, run_id)  # the run's version if it has one
        if (paths.models / f"v{version}").exists():
            shutil.rmtree(model_dir)  # registered and cached by an attempt that crashed after it
        else:
            shutil.move(str(model_dir), str(paths.models / f"v{version}"))
        if t.eval_start and t.eval_end:
            record_evaluation(config, version, run_id, "training", t.eval_start, t.eval_end,
                              {k[len("eval_"):]: v for k, v in metrics.items() if k.startswith("eval_")}, threshold)
        # finished only now: a crash before this point leaves the run resumable, and its completed
        # checkpoint makes the rerun go straight to logging and registering
        tracking.finish_run(config.tracking_uri, run_id)
    except BaseException:
        tracking.fail_run(config.tracking_uri, run_id)
        raise
    finally:
        lock.release()
    result = {"run_id": run_id, "model_name": name, "model_version": version, "metrics": metrics,
              "history": detector.history_, "resumed": resumed}
    if promote:
        result.update(promote_model(config, run_id, version))
    return result


def _evaluation_figures(scored: pa.Table, threshold: float, folder: Path) -> None:
    """roc.png and score_timeline.png of the evaluation range's per-timestamp scores into ``folder``."""
    from lstmad.plots import roc_curve_png, score_timeline_png

    folder.mkdir(parents=True, exist_ok=True)
    labels = scored.column(names.LABEL).to_numpy(zero_copy_only=False)
    scores = scored.column(names.SCORE).to_numpy()
    roc_curve_png(labels, scores, folder / "roc.png")
    score_timeline_png(scored.column("timestamp_us").to_numpy(), np.asarray(scored.column(names.ASSET).to_pylist()),
                       scores, labels, threshold, folder / "score_timeline.png")


def _git_commit() -> str:
    """The commit of the code that trained (with "+dirty" for uncommitted changes), or "unknown" outside a
    git checkout (an installed package, a cluster's zip)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        if Path(top).resolve() != here.parent:  # installed inside some other repository: not our commit
            return "unknown"
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _lstmad_version() -> str:
    from lstmad import __version__

    return __version__


class _TrainingLock:
    """An exclusive lock per training key (a file under the pipeline home): a second training with the same
    settings while the first is still alive would otherwise adopt its unfinished run and write the same
    checkpoint. The OS releases it when the process dies, so a killed run's successor gets it. It guards one
    machine; trainings on several machines need the orchestrator to serialise them."""

    def __init__(self, path: Path, key: str):
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RuntimeError(f"a training with the same settings (key {key}) is running in another process "
                               f"(lock {path}); wait for it or change the settings") from None

    def release(self) -> None:
        import fcntl

        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class _ScoringLocks:
    """Exclusive locks on the dates a scoring job writes (files under the pipeline home), taken in date order
    so two jobs never deadlock: a second job for a date waits for the first and then replaces its rows.
    Without them two jobs that both find a date unscored would both add its rows (a commit that adds files
    to a partition another commit also filled does not conflict in Delta). They guard one machine, or
    hosts sharing the pipeline home on a file system with POSIX locks."""

    def __init__(self, paths: Paths, dates: list[str]):
        import fcntl

        folder = paths.home / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        self._files = []
        for date in sorted(dates):
            handle = open(folder / f"score-{date}.lock", "w")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._files.append(handle)

    def release(self) -> None:
        import fcntl

        for handle in reversed(self._files):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def record_evaluation(config: PipelineConfig, version: str, run_id: str, purpose: str, start: dt.date,
                      end: dt.date, metrics: dict, threshold: float) -> str:
    """One model_evaluations row (upserted: the same evaluation recorded again replaces itself); returns its
    evaluation_id, a digest of model, version, purpose and data range."""
    import hashlib

    name = config.registered_model_name
    evaluation_id = hashlib.sha1(f"{name}|{version}|{purpose}|{start}|{end}".encode()).hexdigest()[:16]
    finite = {k: (float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None) for k, v in metrics.items()}
    row = {"evaluation_id": evaluation_id, "model_name": name, names.MODEL_VERSION: str(version),
           "mlflow_run_id": run_id, "purpose": purpose, "data_start": start.isoformat(), "data_end": end.isoformat(),
           "evaluated_at": dt.datetime.now(dt.timezone.utc), "n_points": int(metrics.get("n_points", 0)),
           "n_anomalous": int(metrics.get("n_anomalous", 0)), names.THRESHOLD: float(threshold),
           "metrics": json.dumps(finite, sort_keys=True),
           **{k: finite.get(k) for k in ("auroc", "pr_auc", "f1", "precision", "recall")}}
    lakehouse.upsert(Paths.of(config).lake, names.MODEL_EVALUATIONS,
                     pa.Table.from_pylist([row], schema=lakehouse.SCHEMAS[names.MODEL_EVALUATIONS]), "evaluation_id")
    return evaluation_id


def _training_stats(config: PipelineConfig):
    """The normalisation statistics of the training range's blocks (there must be exactly one)."""
    from lstmad.tensors import read_blocks

    paths = Paths.of(config)
    stats_ids = set(read_blocks(paths.tensors, _train_dates(config), [names.STATS_ID])
                    .column(names.STATS_ID).to_pylist())
    if len(stats_ids) != 1:
        raise PrepareError(f"{paths.tensors}: training range mixes normalisations {sorted(stats_ids)}; "
                           "re-run prepare --fit-stats over the whole training range")
    return load_stats(paths, stats_ids.pop())


def _drift_reference(paths: Paths, dates: list[str], bins: int) -> dict:
    """Histogram of the training rows per channel, plus each channel's largest PSI of a single training day
    against it: how far one ordinary day already strays (weather channels stray far). Reads one date at a
    time (twice): the reference from every k-th row, at most 200,000 rows."""
    from lstmad.drift import population_stability_index, reference_histogram, reference_quantiles
    from lstmad.tensors import block_rows_of, read_blocks

    counts = read_blocks(paths.tensors, dates, [names.N_ROWS, names.N_HISTORY])
    total = int(pc.sum(pc.subtract(counts.column(names.N_ROWS), counts.column(names.N_HISTORY))).as_py() or 0)
    stride, seen, sample = max(1, total // 200_000), 0, []
    present = sorted(set(counts.column(names.DATE).to_pylist()))
    for day in present:
        rows = block_rows_of(read_blocks(paths.tensors, [day]))
        sample.append(rows[(-seen) % stride::stride])
        seen += rows.shape[0]
    rows = np.concatenate(sample)
    reference = reference_histogram(rows, bins)
    reference["quantiles"] = reference_quantiles(rows)
    daily = [population_stability_index(reference, block_rows_of(read_blocks(paths.tensors, [day])))
             for day in present]
    reference["daily_psi_max"] = np.max(daily, axis=0).tolist()
    return reference


def promote_model(config: PipelineConfig, run_id: str, version: str) -> dict:
    """Give a registered version the champion alias when it is at least as good as the current champion on
    the same evaluation range (else the challenger alias); the decision is logged on its MLflow run."""
    from lstmad import tracking

    t = config.train
    eval_blocks = None
    if t.eval_start and t.eval_end:
        eval_blocks, _ = _windows_of(config, t.eval_start, t.eval_end)
    new_auroc = tracking.run_metrics(config.tracking_uri, run_id).get("eval_auroc", float("nan"))
    challenger = {"bundle": lambda: version_bundle(config, version)[1]}  # loaded only without labels
    decision = _promotion_decision(config, new_auroc, eval_blocks, Paths.of(config), challenger)
    alias = tracking.CHAMPION if decision["decision"] == "promoted" else tracking.CHALLENGER
    name = config.registered_model_name
    tracking.set_alias(config.tracking_uri, name, alias, version, decision["reason"])
    tracking.log_promotion(config.tracking_uri, run_id, decision)
    log.info("promote %s v%s: %s (%s)", name, version, decision["decision"], decision["reason"])
    return decision


def _promotion_decision(config: PipelineConfig, new_auroc: float, eval_blocks: Optional[pa.Table],
                        paths: Paths, challenger: Optional[dict] = None) -> dict:
    """Champion when there is none, or when not worse than the champion on the same evaluation windows:
    AUROC at most train.promotion_tolerance below the champion's where the range has both classes; else its
    alarm rate over its expected rate at most that much above the champion's ratio (the champion of a drifted
    fleet alarms far more than it expected), and its scores stable: their KS against its own validation
    scores at most train.promotion_max_score_ks."""
    from lstmad import tracking
    from lstmad.drift import score_ks
    from lstmad.metrics import score_metrics
    from lstmad.scoring import score_blocks

    current = tracking.champion(config.tracking_uri, config.registered_model_name)
    if current is None:
        return {"decision": "promoted", "reason": "no champion yet", "champion_auroc": None}
    if eval_blocks is None or eval_blocks.num_rows == 0:
        return {"decision": "challenger", "reason": "no evaluation data to compare with the champion",
                "champion_auroc": None}
    tolerance = config.train.promotion_tolerance
    bundle = load_bundle(config, current)
    stats = {sid: load_stats(paths, sid) for sid in set(eval_blocks.column(names.STATS_ID).to_pylist())}
    scored = score_blocks(bundle, eval_blocks, stats, max_masked_share=config.prepare.max_masked_share)
    labels, scores = scored.column(names.LABEL).to_numpy(), scored.column(names.SCORE).to_numpy()
    champion_auroc = score_metrics(labels, scores, bundle.threshold)["auroc"]
    if np.isfinite(new_auroc) and np.isfinite(champion_auroc):
        verdict = "promoted" if new_auroc >= champion_auroc - tolerance else "challenger"
        sign = ">=" if verdict == "promoted" else "<"
        return {"decision": verdict, "criterion": "auroc", "champion_auroc": champion_auroc,
                "reason": f"eval AUROC {new_auroc:.4f} {sign} champion v{current['version']} {champion_auroc:.4f} "
                          f"- tolerance {tolerance}"}
    if challenger is None:
        return {"decision": "challenger", "reason": "no labelled evaluation data and no challenger to compare",
                "champion_auroc": None}
    new_bundle = challenger["bundle"]() if callable(challenger["bundle"]) else challenger["bundle"]
    new_scores = score_blocks(new_bundle, eval_blocks, stats,
                              max_masked_share=config.prepare.max_masked_share).column(names.SCORE).to_numpy()
    ratio = float(np.mean(new_scores > new_bundle.threshold)) / max(new_bundle.expected_alarm_rate, 1e-9)
    champion_ratio = float(np.mean(scores > bundle.threshold)) / max(bundle.expected_alarm_rate, 1e-9)
    # relative: the tolerance is a share of the champion's ratio, as it is a difference of AUROC above
    calmer = ratio <= champion_ratio * (1 + tolerance)
    new_ks = score_ks(new_bundle.drift_reference, new_scores)
    champion_ks = score_ks(bundle.drift_reference, scores)
    limit = config.train.promotion_max_score_ks
    no_scores = not np.isfinite(new_scores).any()
    stable = limit <= 0 or (not no_scores and (not np.isfinite(new_ks) or new_ks <= limit))
    verdict = "promoted" if calmer and stable else "challenger"
    if limit <= 0:
        stability = ""
    elif no_scores:
        stability = "; no finite scores on the evaluation range: not stable"
    elif not np.isfinite(new_ks):
        stability = "; score stability not checked (the model has no validation score quantiles)"
    else:
        stability = (f"; score KS against its validation scores {new_ks:.2f} {'<=' if stable else '>'} {limit} "
                     f"(champion's {champion_ks:.2f})")
    return {"decision": verdict, "criterion": "alarm_rate", "champion_auroc": None,
            "challenger_alarm_ratio": ratio, "champion_alarm_ratio": champion_ratio,
            "challenger_score_ks": new_ks, "champion_score_ks": champion_ks,
            "reason": f"no labels of both classes: alarm rate / expected {ratio:.2f} "
                      f"{'<=' if calmer else '>'} champion v{current['version']} {champion_ratio:.2f} "
                      f"x (1 + tolerance {tolerance}){stability}"}


def load_bundle(config: PipelineConfig, registered: dict):
    """The registered model version as a ModelBundle, from the local cache or downloaded once."""
    from lstmad import tracking
    from lstmad.bundle import ModelBundle

    folder = Paths.of(config).models / f"v{registered['version']}"
    if not (folder / "bundle.json").exists():
        tmp = folder.with_name(folder.name + ".download")
        shutil.rmtree(tmp, ignore_errors=True)
        downloaded = tracking.download_model(config.tracking_uri, registered["source"], tmp)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(str(downloaded), str(folder))
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelBundle.load(folder)


def retrain_needed(config: PipelineConfig, day: dt.date) -> bool:
    """The retraining signal drift() stored for ``day`` (False when drift has not run for it)."""
    import pyarrow.dataset as ds

    rows = lakehouse.read_table(Paths.of(config).lake, names.DRIFT_METRICS)
    rows = rows.filter(ds.field(names.SCORED_DATE) == day.isoformat()).column("retrain").to_pylist()
    return bool(rows and rows[-1])


def version_bundle(config: PipelineConfig, version: str):
    """(registered, bundle) of one registered version, as champion_bundle gives the champion's: to re-score
    with a chosen model (a comparison before a promotion, or a roll-back)."""
    from lstmad import tracking

    registered = tracking.registered_version(config.tracking_uri, config.registered_model_name, version)
    return registered, load_bundle(config, registered)


def champion_bundle(config: PipelineConfig):
    from lstmad import tracking

    current = tracking.champion(config.tracking_uri, config.registered_model_name)
    if current is None:
        raise tracking.NoChampionError(f"model registry {config.tracking_uri} has no '{tracking.CHAMPION}' for "
                                       f"{config.registered_model_name}: run lstmad train first")
    return current, load_bundle(config, current)


# ---------------------------------------------------------------------------------------------- score


def score(config: PipelineConfig, day: dt.date, spark=None, champion: Optional[tuple] = None) -> dict:
    """Score one date's tensor blocks with the champion (or ``champion``: (registered, bundle) from
    champion_bundle) through Spark; that date's partitions of anomaly_scores and anomaly_intervals are
    replaced (an interval still open from the night before continues as the same interval)."""
    summary = score_range(config, day, day, spark, champion)
    return {**summary["dates"][0], "elapsed_s": summary["seconds"]}


def score_range(config: PipelineConfig, start: dt.date, end: dt.date, spark=None,
                champion: Optional[tuple] = None) -> dict:
    """Score the dates start..end in one Spark pass with one model (the champion when the job starts).

    The tasks write anomaly_scores data files themselves; the driver commits them in one transaction per
    table (scores, then intervals), so a job that dies leaves every table at its previous version. The
    result equals scoring each date on its own night by night: intervals are formed over the whole range,
    carrying in the flagged tail of the night before ``start``, and each lands in the partition of the
    date it ends on. Every date's tensor blocks are checked before anything is scored.
    """
    from lstmad.spark.session import get_session
    from lstmad.tensors import block_files, content_version, read_blocks

    started = time.time()
    paths = Paths.of(config)
    days = date_range(start, end)
    dates = [d.isoformat() for d in days]
    registered, bundle = champion or champion_bundle(config)
    missing = [d for d in dates if not block_files(paths.tensors, [d])]
    if missing:
        span = f"--date {start}" if start == end else f"--start {start} --end {end}"
        raise PrepareError(f"{paths.tensors}: no tensor blocks for {', '.join(missing)}; run lstmad prepare "
                           f"{span} first")
    bundle.check_compatible(tuple(config.source.channel_names), config.prepare.window, config.prepare.step_s)
    spark = spark or get_session(config.spark, delta_spark=config.delta.engine == "delta-spark")
    lineage = {"model_name": config.registered_model_name, names.MODEL_VERSION: registered["version"],
               "mlflow_run_id": registered["run_id"]}
    versions = {d: content_version(paths.tensors, d) for d in dates}
    files = block_files(paths.tensors, dates)
    stats_ids = set(read_blocks(paths.tensors, dates, [names.STATS_ID]).column(names.STATS_ID).to_pylist())
    block_stats = {sid: load_stats(paths, sid) for sid in stats_ids}
    bundle.check_normalisation(block_stats, str(paths.tensors))  # before any Spark task: one clear message
    stats = {sid: s.to_dict() for sid, s in block_stats.items()}
    locks = _ScoringLocks(paths, dates)
    scoring = _scoring_pass(config, spark, files, registered, bundle, stats, lineage, versions)
    try:
        per_date = scoring.commit_scores(paths, dates)
        intervals, sources = _interval_rows(config, paths, scoring, bundle, lineage, dates)
        _fault_point("before-intervals-commit")
        n_intervals = _commit_intervals(config, paths, intervals, sources, dates, spark)
    finally:
        scoring.release()
        locks.release()
    summaries = []
    for date in dates:
        got = per_date.get(date, {"n_scores": 0, "n_flags": 0, "auroc": math.nan, "anomalous_share": 0.0})
        summaries.append({"date": date, "model_version": registered["version"], **got,
                          "n_intervals": n_intervals.get(date, 0), names.SOURCE_VERSION: versions[date]})
        log.info("score %s: %d timestamps, %d flagged, %d intervals (model v%s)", date, got["n_scores"],
                 got["n_flags"], n_intervals.get(date, 0), registered["version"])
    return {"start": start.isoformat(), "end": end.isoformat(), "model_version": registered["version"],
            "dates": summaries, "n_scores": sum(s["n_scores"] for s in summaries),
            "n_flags": sum(s["n_flags"] for s in summaries), "n_intervals": sum(n_intervals.values()),
            "seconds": round(time.time() - started, 3)}


def _fault_point(name: str) -> None:
    """Crash-test hook: LSTMAD_KILL_AT=<name> kills this process (SIGKILL, no cleanup) at that point, as a
    lost executor host or an OOM kill would; tests use it to prove that no partial result is visible."""
    import os
    import signal

    if os.environ.get("LSTMAD_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class _ScoringPass:
    """A cached Spark scoring pass: the anomaly_scores data files its tasks wrote (delta-rs) or its score
    rows (delta-spark), and its flagged timestamps for the interval stage."""

    def __init__(self, config: PipelineConfig, spark, frame, payload, lineage: dict, versions: dict[str, str],
                 threshold: float):
        from pyspark.sql import functions as F

        self.config, self.spark, self.payload = config, spark, payload
        self.lineage, self.versions, self.threshold = lineage, versions, threshold
        self.frame = frame.cache()
        kind = F.col("kind")
        self.flagged = self.frame.filter((kind == "flag") | ((kind == "score") & F.col(names.FLAG)))

    def commit_scores(self, paths: Paths, dates: list[str]) -> dict[str, dict]:
        """Make the dates' anomaly_scores partitions hold this pass's rows (one commit); per date n_scores,
        n_flags, auroc (labelled timestamps only) and anomalous_share, read back from what was committed."""
        from pyspark.sql import functions as F

        if self.config.delta.engine == "delta-spark":
            lakehouse.write_scores_with_spark(self.spark, paths.lake, self.frame.filter(F.col("kind") == "score"),
                                              dates, {**self.lineage, names.THRESHOLD: self.threshold}, self.versions)
        else:
            actions = [json.loads(r.file) for r in self.frame.filter(F.col("kind") == "file").select("file").collect()]
            _fault_point("before-scores-commit")  # every data file written, none committed
            lakehouse.commit_files(paths.lake, names.ANOMALY_SCORES, actions, dates)
        return _score_summaries(paths, dates, self.lineage[names.MODEL_VERSION])

    def release(self) -> None:
        self.frame.unpersist()
        self.payload.unpersist()


def _scoring_pass(config: PipelineConfig, spark, files: list[str], registered: dict, bundle, stats: dict,
                  lineage: dict, versions: dict[str, str]) -> _ScoringPass:
    from lstmad.spark import score as transforms

    paths = Paths.of(config)
    files_of_model = transforms.model_payload(paths.models / f"v{registered['version']}")
    payload = spark.sparkContext.broadcast(files_of_model)
    # Python workers outlive jobs and keep loaded models by this key: the weights' digest, not just name and
    # version, so that another pipeline (or a re-created registry) reusing a name never gets a stale model
    model_key = f"{config.registered_model_name}/{registered['version']}/{transforms.payload_digest(files_of_model)}"
    to_lake = None if config.delta.engine == "delta-spark" else str(paths.lake)
    frame = transforms.scored_pieces(spark, files, model_key, payload, stats, bundle.threshold,
                                     config.score.batch_size, config.prepare.max_masked_share, config.score.device,
                                     lake=to_lake, lineage=lineage, source_versions=versions)
    return _ScoringPass(config, spark, frame, payload, lineage, versions, bundle.threshold)


def _score_summaries(paths: Paths, dates: list[str], version: str) -> dict[str, dict]:
    import pyarrow.dataset as ds
    from sklearn.metrics import roc_auc_score

    rows = lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.SCORED_DATE, names.LABEL, names.SCORE, names.FLAG],
                          ds.field(names.SCORED_DATE).isin(dates) & (ds.field(names.MODEL_VERSION) == version))
    out = {}
    for date in dates:
        day = rows.filter(pc.equal(rows.column(names.SCORED_DATE), date))
        if day.num_rows == 0:
            continue
        labels = day.column(names.LABEL).to_numpy(zero_copy_only=False)
        known = labels >= 0
        anomalous = int(np.sum(labels[known] == 1))
        both = 0 < anomalous < int(known.sum())
        out[date] = {"n_scores": day.num_rows, "n_flags": int(pc.sum(day.column(names.FLAG)).as_py() or 0),
                     "auroc": float(roc_auc_score(labels[known], day.column(names.SCORE).to_numpy()[known]))
                     if both else math.nan,
                     "anomalous_share": anomalous / max(int(known.sum()), 1)}
    return out


def _carried_tails(config: PipelineConfig, paths: Paths, lineage: dict, channels: tuple[str, ...],
                   new_from_us: int) -> dict[str, dict]:
    """Per asset, the flagged timestamps before ``new_from_us`` (same model) that an interval of this pass may
    continue: all those of an interval that ends close enough to the pass's start to merge with it, else the
    last min_interval + merge_gap + step seconds (a run too short to be an interval yet)."""
    import pyarrow.dataset as ds

    step, gap = config.prepare.step_s, config.score.merge_gap_s
    same_model = (ds.field("model_name") == lineage["model_name"]) & \
        (ds.field(names.MODEL_VERSION) == lineage[names.MODEL_VERSION])
    new_from = pa.scalar(new_from_us, lakehouse.UTC_US)
    reach = pa.scalar(new_from_us - (step + gap) * MICROS, lakehouse.UTC_US)
    still_open = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, [names.ASSET, "start"],
                                same_model & (ds.field("end") >= reach) & (ds.field("start") < new_from))
    carry_from = {}
    for asset, begun in zip(still_open.column(names.ASSET).to_pylist(),
                            still_open.column("start").cast(pa.int64()).to_pylist()):
        carry_from[asset] = min(begun, carry_from.get(asset, begun))
    default_from = new_from_us - (config.score.min_interval_s + gap + step) * MICROS
    earliest = min([default_from, *carry_from.values()])
    tail = lakehouse.scan(paths.lake, names.ANOMALY_SCORES,
                          [names.ASSET, names.TIMESTAMP, names.SCORE, names.CHANNEL_SHARES],
                          same_model & (ds.field(names.FLAG) == True) & (ds.field(names.TIMESTAMP) >= pa.scalar(earliest, lakehouse.UTC_US))
                          & (ds.field(names.TIMESTAMP) < new_from)
                          & (ds.field(names.SCORED_DATE) >= utc_date(earliest)))
    from lstmad.scoring import shares_row

    out: dict[str, dict] = {}
    for asset, moment, value, shares in zip(tail.column(names.ASSET).to_pylist(),
                                            tail.column(names.TIMESTAMP).cast(pa.int64()).to_pylist(),
                                            tail.column(names.SCORE).to_pylist(),
                                            tail.column(names.CHANNEL_SHARES).to_pylist()):
        if moment < carry_from.get(asset, default_from):
            continue
        entry = out.setdefault(asset, {"timestamp_us": [], "score": [], "shares": []})
        entry["timestamp_us"].append(moment)
        entry["score"].append(value)
        if shares is None or entry["shares"] is None:
            entry["shares"] = None
        else:
            entry["shares"].append(shares_row(shares, channels))
    return out


class _SourceVersions:
    """source_version of a span of nights: one night's content_version, or the SHA-256 of the lines
    DATE=<version> of every night the span touches (computed once per night)."""

    def __init__(self, paths: Paths, known: dict[str, str]):
        self.paths, self.known = paths, dict(known)

    def night(self, day: str) -> str:
        from lstmad.tensors import content_version

        if day not in self.known:  # an earlier night an interval began on
            try:
                self.known[day] = content_version(self.paths.tensors, day)
            except FileNotFoundError:
                self.known[day] = "unknown"
        return self.known[day]

    def of_dates(self, dates: list[str]) -> str:
        """One version for several nights: SHA-256 of the lines DATE=<version>."""
        import hashlib

        return "sha256:" + hashlib.sha256("\n".join(f"{d}={self.night(d)}" for d in dates).encode()).hexdigest()

    def span(self, first_us: int, last_us: int) -> str:
        covered = [d.isoformat() for d in date_range(dt.date.fromisoformat(utc_date(first_us)),
                                                     dt.date.fromisoformat(utc_date(last_us)))]
        return self.night(covered[0]) if len(covered) == 1 else self.of_dates(covered)


def _interval_table(found: pa.Table, model: dict, channels: tuple[str, ...], sources: _SourceVersions) -> pa.Table:
    """anomaly_intervals rows from found intervals (spark.score.INTERVAL_STRUCT columns; shares in
    ``channels`` order or null) of one model: {model_name, model_version, mlflow_run_id, threshold,
    threshold_rule, attribution}."""
    from lstmad.scoring import shares_array

    n = found.num_rows
    starts, ends = found.column("start_us").to_pylist(), found.column("end_us").to_pylist()
    share_rows = found.column("shares").to_pylist()
    attributed = np.array([row is not None for row in share_rows], dtype=bool)
    channel_shares = (shares_array(np.asarray([r for r in share_rows if r is not None], dtype=np.float64)
                                   .reshape(int(attributed.sum()), len(channels)), np.flatnonzero(attributed), n,
                                   channels)
                      if attributed.any() else pa.nulls(n, lakehouse.CHANNEL_SHARES_TYPE))
    top = [row[0]["channel"] if row else None for row in channel_shares.to_pylist()]
    return pa.table({
        "interval_id": found.column("interval_id"), names.ASSET: found.column(names.ASSET),
        "start": _utc(found.column("start_us")), "end": _utc(found.column("end_us")),
        "duration_s": found.column("duration_s"), "n_points": found.column("n_points"),
        "peak_score": found.column("peak_score"), "mean_score": found.column("mean_score"),
        "severity": pc.divide(found.column("peak_score"), model[names.THRESHOLD]),
        "top_channel": pa.array(top, pa.string()), names.CHANNEL_SHARES: channel_shares,
        "attribution": pa.array([model["attribution"]] * n, pa.string()),
        names.THRESHOLD: pa.array([model[names.THRESHOLD]] * n, pa.float64()),
        "threshold_rule": pa.array([model["threshold_rule"]] * n, pa.string()),
        **{k: pa.array([model[k]] * n, pa.string()) for k in ("model_name", names.MODEL_VERSION, "mlflow_run_id")},
        names.SOURCE_VERSION: pa.array([sources.span(a, b) for a, b in zip(starts, ends)], pa.string()),
        names.SCORED_DATE: pa.array([utc_date(e) for e in ends], pa.string()),
    })


def _interval_rows(config: PipelineConfig, paths: Paths, scoring: _ScoringPass, bundle, lineage: dict,
                   dates: list[str]) -> tuple[pa.Table, _SourceVersions]:
    """anomaly_intervals rows of the pass (Spark: grouped by asset, continuing the night before's open
    intervals), with every lineage column."""
    from lstmad.spark import score as transforms

    new_from_us = _micros(dt.date.fromisoformat(dates[0]))
    carried = _carried_tails(config, paths, lineage, bundle.channels, new_from_us)
    found = transforms.anomaly_intervals(scoring.flagged, config.prepare.step_s, config.score.min_interval_s,
                                         config.score.merge_gap_s, lineage["model_name"],
                                         lineage[names.MODEL_VERSION], new_from_us, carried).toArrow()
    found = found.sort_by([(names.ASSET, "ascending"), ("start_us", "ascending")])
    model = {**lineage, names.THRESHOLD: bundle.threshold, "threshold_rule": bundle.threshold_rule,
             "attribution": getattr(bundle.detector, "attribution_method", "none")}
    sources = _SourceVersions(paths, scoring.versions)
    return _interval_table(found, model, bundle.channels, sources), sources


def _handed_back(config: PipelineConfig, paths: Paths, dates: list[str], rederived: set[str],
                 sources: _SourceVersions) -> pa.Table:
    """Intervals stored with these dates that began on an earlier night and that this run does not derive
    again (these nights no longer continue them, or another model version scores them now): each goes back
    to the night it ends on, as the flagged timestamps of its own model before these dates make it (or goes,
    when those no longer make an interval)."""
    import pyarrow.dataset as ds

    from lstmad.intervals import FOUND_SCHEMA, merge_flags
    from lstmad.scoring import shares_row

    first_us = _micros(dt.date.fromisoformat(dates[0]))
    stored = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, lakehouse.SCHEMAS[names.ANOMALY_INTERVALS].names,
                            ds.field(names.SCORED_DATE).isin(dates)
                            & (ds.field("start") < pa.scalar(first_us, lakehouse.UTC_US)))
    tables = []
    for row in stored.to_pylist():
        if row["interval_id"] in rederived:
            continue
        start_us = int(pa.scalar(row["start"], lakehouse.UTC_US).cast(pa.int64()).as_py())
        points = lakehouse.scan(
            paths.lake, names.ANOMALY_SCORES, [names.TIMESTAMP, names.SCORE, names.CHANNEL_SHARES],
            (ds.field(names.ASSET) == row[names.ASSET]) & (ds.field("model_name") == row["model_name"])
            & (ds.field(names.MODEL_VERSION) == row[names.MODEL_VERSION]) & (ds.field(names.FLAG) == True)  # noqa: E712
            & (ds.field(names.TIMESTAMP) >= row["start"]) & (ds.field(names.TIMESTAMP) < pa.scalar(first_us, lakehouse.UTC_US))
            & (ds.field(names.SCORED_DATE) >= utc_date(start_us))).sort_by(names.TIMESTAMP)
        channels = tuple(pair["channel"] for pair in row[names.CHANNEL_SHARES] or ())
        listed = points.column(names.CHANNEL_SHARES).to_pylist()
        shares = None
        if channels and all(p is not None for p in listed):
            shares = np.array([shares_row(p, channels) for p in listed]).reshape(len(listed), len(channels))
        times = points.column(names.TIMESTAMP).cast(pa.int64()).to_numpy()
        again = [f for f in merge_flags(times, np.ones(times.size, dtype=bool), points.column(names.SCORE).to_numpy(),
                                        config.prepare.step_s, config.score.min_interval_s, config.score.merge_gap_s,
                                        shares) if f["start_us"] == start_us]
        if not again:
            continue
        found = {**again[0], "interval_id": row["interval_id"], names.ASSET: row[names.ASSET]}
        found["shares"] = found["shares"].tolist() if "shares" in found else None
        model = {k: row[k] for k in ("model_name", names.MODEL_VERSION, "mlflow_run_id", names.THRESHOLD,
                                     "threshold_rule", "attribution")}
        tables.append(_interval_table(pa.Table.from_pylist([found], schema=FOUND_SCHEMA), model, channels,
                                      sources))
    return pa.concat_tables(tables) if tables else None


def _commit_intervals(config: PipelineConfig, paths: Paths, intervals: pa.Table, sources: _SourceVersions,
                      dates: list[str], spark) -> dict[str, int]:
    """Replace the dates' anomaly_intervals rows with ``intervals`` (from _interval_rows) in one commit.

    An interval continued from an earlier night moves out of that night's rows; one already continued by a
    later night than these (a re-run of an earlier date) stays with that night; one these dates held that
    began earlier and is not derived again goes back to its own night (_handed_back). Returns intervals per
    date of these dates.
    """
    import pyarrow.dataset as ds

    ids = intervals.column("interval_id").to_pylist()
    stored = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, ["interval_id", names.SCORED_DATE],
                            ds.field("interval_id").isin(ids or [""]))
    stored_on = dict(zip(stored.column("interval_id").to_pylist(), stored.column(names.SCORED_DATE).to_pylist()))
    keep = [not (stored_on.get(i, "") > dates[-1]) for i in ids]
    if not all(keep):
        log.info("%d interval(s) continue into nights after %s and stay there", keep.count(False), dates[-1])
    intervals = intervals.filter(pa.array(keep, pa.bool_()))
    handed = _handed_back(config, paths, dates, set(ids), sources)
    if handed is not None:
        log.info("%d interval(s) these nights no longer continue go back to the night they end on", handed.num_rows)
        intervals = pa.concat_tables([intervals, handed.cast(intervals.schema)])
    first_us = _micros(dt.date.fromisoformat(dates[0]))
    moved = [i for i, s in zip(intervals.column("interval_id").to_pylist(),
                               intervals.column("start").cast(pa.int64()).to_pylist()) if s < first_us]
    lakehouse.replace_rows(paths.lake, names.ANOMALY_INTERVALS, intervals, dates, "interval_id", moved,
                           config.delta.engine, spark)
    counts: dict[str, int] = {}
    for day in intervals.column(names.SCORED_DATE).to_pylist():
        if day in dates:
            counts[day] = counts.get(day, 0) + 1
    return counts


def maintain(config: PipelineConfig, retention_hours: Optional[int] = None) -> dict:
    """Weekly upkeep of the Delta tables: compaction, then vacuum beyond ``retention_hours`` (default
    delta.retention_hours)."""
    hours = config.delta.retention_hours if retention_hours is None else retention_hours
    if hours < 0:
        raise ValueError(f"retention hours must be 0 or more, got {hours}")
    tables = lakehouse.maintain(Paths.of(config).lake, hours)
    log.info("maintain: %s", ", ".join(f"{t['table']} {t['files_before']}→{t['files_after']} files" for t in tables))
    return {"retention_hours": hours, "tables": tables}


def _utc(micros: pa.ChunkedArray) -> pa.ChunkedArray:
    return micros.cast(pa.timestamp("us", tz="UTC"))


def _with_columns(table: pa.Table, constants: dict) -> pa.Table:
    for name, value in constants.items():
        table = table.append_column(name, pa.array([value] * table.num_rows))
    return table


# ---------------------------------------------------------------------------------------------- drift


def drift(config: PipelineConfig, day: dt.date) -> dict:
    """Input drift (PSI per channel against the champion's training reference) and the day's alarm rate
    against the expected one; one row in drift_metrics and a retraining signal."""
    import pyarrow.dataset as ds

    from lstmad.drift import ks_statistic, population_stability_index, retrain_signal, score_ks
    from lstmad.tensors import read_blocks

    paths = Paths.of(config)
    registered, bundle = champion_bundle(config)
    date = day.isoformat()
    blocks = read_blocks(paths.tensors, [date])
    if blocks.num_rows == 0:
        raise PrepareError(f"{paths.tensors}: no tensor blocks for {date}; run lstmad prepare --date {date} first")
    parts = []
    columns = blocks.select([names.N_ROWS, names.N_HISTORY, names.N_CHANNELS, names.VALUES, names.STATS_ID,
                             names.ASSET])
    for n_rows, n_hist, n_ch, raw, sid, asset in zip(*columns.to_pydict().values()):
        values = np.frombuffer(raw, dtype=np.float32).reshape(n_rows, n_ch)[n_hist:]
        parts.append(bundle.renormalise(values, load_stats(paths, sid), asset))
    values = np.concatenate(parts)
    reference = bundle.drift_reference
    psi = population_stability_index(reference, values)
    ks = ks_statistic(reference["quantiles"], values) if "quantiles" in reference else np.zeros_like(psi)
    scores_path = lakehouse.table_path(paths.lake, names.ANOMALY_SCORES)
    night = lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.FLAG, names.SCORE],
                           ds.field(names.SCORED_DATE) == date)
    flags = night.column(names.FLAG).to_numpy(zero_copy_only=False)
    if flags.size == 0:
        raise PrepareError(f"{scores_path}: no scores for {date}; run lstmad score --date {date} first")
    alarm_rate = float(flags.mean())
    night_ks = score_ks(reference, night.column(names.SCORE).to_numpy())
    night_ks = 0.0 if math.isnan(night_ks) else night_ks  # a model saved without validation score quantiles
    age_days = float((day - dt.date.fromisoformat(reference["trained_until"])).days) \
        if "trained_until" in reference else 0.0
    # A channel drifts when it strays further than the configured PSI and than any training day did.
    thresholds = np.maximum(config.drift.psi_threshold,
                            bundle.drift_reference.get("daily_psi_max", np.zeros_like(psi)))
    d = config.drift
    retrain, reasons = retrain_signal(psi, alarm_rate, bundle.expected_alarm_rate, thresholds,
                                      d.drifted_channel_share, d.alarm_rate_factor, bundle.channels, ks,
                                      d.ks_threshold, night_ks, d.score_ks_threshold, age_days, d.max_age_days)
    worst, worst_ks = int(np.argmax(psi)), int(np.argmax(ks))
    row = {names.SCORED_DATE: date, names.MODEL_VERSION: registered["version"], "n_rows": int(values.shape[0]),
           "max_psi": float(psi[worst]), "max_psi_channel": bundle.channels[worst],
           "psi_by_channel": json.dumps(dict(zip(bundle.channels, np.round(psi, 6).tolist()))),
           "max_ks": float(ks[worst_ks]), "max_ks_channel": bundle.channels[worst_ks], "score_ks": night_ks,
           "model_age_days": age_days,
           "alarm_rate": alarm_rate, "expected_alarm_rate": bundle.expected_alarm_rate, "retrain": retrain,
           "retrain_reasons": "; ".join(reasons)}
    spark = None
    if config.delta.engine == "delta-spark":
        from lstmad.spark.session import get_session

        spark = get_session(config.spark, delta_spark=True)
    lakehouse.replace_partitions(paths.lake, names.DRIFT_METRICS, pa.Table.from_pylist([row]), [date],
                                 config.delta.engine, spark)
    log.info("drift %s: max PSI %.3f (%s), alarm rate %.4f vs %.4f expected, retrain=%s", date, row["max_psi"],
             row["max_psi_channel"], alarm_rate, bundle.expected_alarm_rate, retrain)
    return {k: v for k, v in row.items() if k != "psi_by_channel"}
