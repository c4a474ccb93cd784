"""Fitting a pipeline's detector on its training range: windows from the tensor blocks, the labelled-anomaly
and severe-interval exclusions, then one process holding every window or ranks streaming shards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from lstmad import names
from lstmad import progress
from lstmad.config import PipelineConfig
from lstmad.dates import MICROS, day_start_us, iso_dates
from lstmad.layout import Paths, PrepareError

log = logging.getLogger("lstmad")

# Above this share of windows inside severe intervals the exclusion is dropped: a drifted champion flags most
# of a new regime, and that is the data to learn, not to leave out.
MAX_SEVERE_SHARE = 0.5
# threshold.cross_fit_folds unset: the folds a detector that fits in seconds is calibrated out of fold with
QUICK_FIT_FOLDS = 5


def windows_of(config: PipelineConfig, start: dt.date, end: dt.date, state_rows: Optional[int] = None):
    """(blocks, Windows) of the dates start..end of the pipeline's tensor blocks; a window is outside normal
    operation when one of its last ``state_rows`` rows is (default: the rows the detector's score judges)."""
    from lstmad.detectors import judged_rows
    from lstmad.io.tensor_store import read_blocks
    from lstmad.transforms.blocks import windows_from_blocks

    blocks = read_blocks(Paths.of(config).tensors, iso_dates(start, end))
    rows = judged_rows(config) if state_rows is None else state_rows
    return blocks, windows_from_blocks(blocks, config.prepare.window,
                                       max_masked_share=config.prepare.max_masked_share, state_rows=rows)


def training_stats(config: PipelineConfig):
    """The normalisation statistics of the training range's blocks (there must be exactly one)."""
    from lstmad.io.tensor_store import load_stats, read_blocks

    paths = Paths.of(config)
    stats_ids = set(read_blocks(paths.tensors, iso_dates(config.train.start, config.train.end), [names.STATS_ID])
                    .column(names.STATS_ID).to_pylist())
    if len(stats_ids) != 1:
        raise PrepareError(f"{paths.tensors}: training range mixes normalisations {sorted(stats_ids)}; "
                           "re-run prepare --fit-stats over the whole training range")
    return load_stats(paths.tensors, stats_ids.pop())


def severe_spans(config: PipelineConfig) -> tuple[tuple[str, int, int], ...]:
    """(asset, from_us, to_us) of every anomaly interval (any model) of at least train.exclude_severity that
    overlaps the training range: [start, end + step)."""
    import pyarrow.dataset as ds

    from lstmad.io import lakehouse

    t = config.train
    severe = lakehouse.scan(Paths.of(config).lake, names.ANOMALY_INTERVALS, [names.ASSET, "start", "end"],
                            (ds.field("severity") >= t.exclude_severity)
                            & (ds.field("end") >= pa.scalar(day_start_us(t.start), lakehouse.UTC_US))
                            & (ds.field("start") < pa.scalar(day_start_us(t.end + dt.timedelta(days=1)),
                                                             lakehouse.UTC_US)))
    step_us = config.prepare.step_s * MICROS
    return tuple((asset, start, end + step_us) for asset, start, end in zip(
        severe.column(names.ASSET).to_pylist(), severe.column("start").cast(pa.int64()).to_pylist(),
        severe.column("end").cast(pa.int64()).to_pylist()))


def inside_severe_intervals(config: PipelineConfig, windows) -> np.ndarray:
    """(N,) whether each window's last timestamp lies inside an anomaly interval (any model) of at least
    train.exclude_severity on its asset: [start, end + step)."""
    from lstmad.training.distributed import inside_spans

    return inside_spans(windows, severe_spans(config))


def _too_many_severe(inside: int, every: int) -> bool:
    if inside > MAX_SEVERE_SHARE * every:
        log.warning("train: %.0f%% of the windows lie inside severe intervals (more than %.0f%%): keeping them all",
                    100 * inside / max(every, 1), 100 * MAX_SEVERE_SHARE)
        return True
    return False


@dataclasses.dataclass(frozen=True)
class CalibrationScores:
    """The fitted model's scores (n,) of the calibration windows, with each window's end time and asset."""

    scores: np.ndarray
    end_us: np.ndarray
    assets: np.ndarray
    source: str = "calibration"  # what scored them, for the threshold's description
    by_deployed_model: bool = True  # False: out-of-fold scores, each from a model fitted without its fold

    @classmethod
    def of(cls, detector, windows) -> "CalibrationScores":
        return cls(np.asarray(detector.score(windows), dtype=np.float64), np.asarray(windows.end_us),
                   np.asarray(windows.assets, dtype=object)[windows.asset])


def training_notes(detector, config: PipelineConfig, counts: dict) -> dict:
    """What the user should know about how the fit went, logged and returned: the windows were thinned
    (model.max_train_windows), or the last epoch still improved the validation loss (more epochs would
    help: it stopped by the epoch limit, not by early stopping)."""
    notes = {}
    if counts.get("subsampled_from"):
        notes["subsampled"] = (f"trained on {counts['train_windows']} of {counts['subsampled_from']} windows "
                               f"(model.max_train_windows)")
    losses = [r["val_loss"] for r in getattr(detector, "history_", []) if r.get("val_loss") is not None]
    if len(losses) >= 2 and losses[-1] <= min(losses[:-1]) and len(losses) >= config.model.epochs:
        notes["still_improving"] = (f"validation loss still fell in the last epoch ({losses[-2]:.4g} → "
                                    f"{losses[-1]:.4g}): more epochs (model.epochs) would likely help")
    for note in notes.values():
        log.warning("train: %s", note)
    return notes


def fit_in_memory(config: PipelineConfig, detector, on_epoch) -> tuple[object, dict, Optional[CalibrationScores]]:
    """Fit on all training windows held in this process, after the labelled-anomaly and severe-interval
    exclusions, less the calibration slice (the latest threshold.calibration_share, kept apart), thinned to
    model.max_train_windows; returns (detector, counts, calibration scores or None)."""
    from lstmad.evaluation.calibration import split_calibration

    t, m = config.train, config.model
    progress.step("train: reading the training windows of %s..%s", t.start, t.end)
    _, windows = windows_of(config, t.start, t.end)
    n_total, skipped_masked, excluded = len(windows), windows.skipped_masked, 0
    # outside normal operation (curtailment, downtime, …): neither learnt nor calibrated on
    in_state = int(np.sum(windows.state_last != 0))
    windows = windows.subset(np.flatnonzero(windows.state_last == 0))
    n_total = len(windows)
    if t.exclude_labelled_anomalies:
        keep = np.flatnonzero(windows.label_any != 1)
        excluded = n_total - keep.size
        windows = windows.subset(keep)
    severe = 0
    if t.exclude_severity > 0:
        inside = inside_severe_intervals(config, windows)
        if not _too_many_severe(int(inside.sum()), len(inside)):
            severe = int(inside.sum())
            windows = windows.subset(np.flatnonzero(~inside))
    windows, calibration = split_calibration(windows, config.threshold.calibration_share)
    folds = calibration_folds(config, detector)
    # planned before the long fit: a fold that would leave too little to fit on fails now, not after it
    plan = folds_of(windows, folds, config) if folds else None
    every_window = windows  # cross-fitting scores them all: the alarm rules need the unthinned series
    subsampled_from = 0
    if m.max_train_windows and len(windows) > m.max_train_windows:
        subsampled_from = len(windows)
        windows = thinned(windows, m.max_train_windows)
    log.info("train: %d windows (%d outside normal operation, %d excluded as labelled anomalous, %d inside "
             "intervals of severity >= %s, %d kept apart to calibrate) from %s..%s", len(windows), in_state, excluded,
             severe, t.exclude_severity, 0 if calibration is None else len(calibration), t.start, t.end)
    progress.step("train: fitting %s on %d windows", type(detector).__name__, len(windows))
    detector.fit(windows, on_epoch=on_epoch)
    counts = {"train_windows": len(windows), "excluded_windows": excluded, "excluded_severe_windows": severe,
              "operating_state_windows": in_state,
              "skipped_masked_windows": skipped_masked, "processes": 0, "subsampled_from": subsampled_from,
              "calibration_folds": len(plan) if plan else 0}
    if plan is not None:
        return detector, counts, cross_fitted(config, every_window, plan)
    return detector, counts, None if calibration is None else CalibrationScores.of(detector, calibration)


def calibration_range_windows(config: PipelineConfig, stats_id: str, quiet: bool = False) -> tuple[object, dict]:
    """The windows of threshold.calibration_start..calibration_end in normal operation and not labelled
    anomalous, and their counts (metrics calibration_range_windows; calibration_range_left_out: outside normal
    operation, labelled, or with too many filled-in values; calibration_range_dates_missing: dates of the range
    without any tensor block, warned about unless ``quiet``). PrepareError (one line) when the range has no
    such window or its blocks were normalised with other statistics than the training range's (``stats_id``)."""
    th = config.threshold
    where = f"threshold.calibration_start..calibration_end ({th.calibration_start}..{th.calibration_end})"
    try:
        blocks, windows = windows_of(config, th.calibration_start, th.calibration_end)
    except FileNotFoundError as error:
        raise PrepareError(f"{where}: {error}") from None
    other = sorted(set(blocks.column(names.STATS_ID).to_pylist()) - {stats_id})
    if other:
        raise PrepareError(f"{where}: tensor blocks normalised with {other}, the training range with {stats_id!r}; "
                           "re-run prepare for these dates without --fit-stats")
    missing = sorted(set(iso_dates(th.calibration_start, th.calibration_end)) - set(blocks.column(names.DATE).to_pylist()))
    if missing and blocks.num_rows and not quiet:
        log.warning("train: %s: %d of its dates have no tensor blocks (%s): calibrating on the others; prepare them "
                    "to use them", where, len(missing), ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    every = len(windows) + windows.skipped_masked
    windows = windows.subset(np.flatnonzero((windows.state_last == 0) & (windows.label_any != 1)))
    if not len(windows):
        raise PrepareError(f"{where}: no window in normal operation and not labelled anomalous "
                           f"({every} windows in all); prepare these dates or choose a range of normal operation")
    if not quiet:
        log.info("train: calibrating on %d windows of %s..%s (%d outside normal operation, labelled anomalous or "
                 "with too many filled-in values left out)", len(windows), th.calibration_start, th.calibration_end,
                 every - len(windows))
    return windows, {"calibration_range_windows": len(windows), "calibration_range_left_out": every - len(windows),
                     "calibration_range_dates_missing": len(missing)}


def calibration_range_scores(config: PipelineConfig, detector, windows) -> CalibrationScores:
    """The fitted ``detector``'s scores of the calibration range's ``windows`` (calibration_range_windows)."""
    th = config.threshold
    progress.step("train: scoring the calibration range %s..%s", th.calibration_start, th.calibration_end)
    scores = CalibrationScores.of(detector, windows)
    return dataclasses.replace(scores, source=f"normal range {th.calibration_start}..{th.calibration_end}")


def thinned(windows, most: int):
    """``most`` windows evenly spaced through ``windows`` (model.max_train_windows); all of them when ``most``
    is 0 or no fewer than there are."""
    if not most or len(windows) <= most:
        return windows
    return windows.subset(np.linspace(0, len(windows) - 1, most).astype(np.int64))


def calibration_folds(config: PipelineConfig, detector) -> int:
    """The folds of out-of-fold calibration (0: none): threshold.cross_fit_folds when set; unset,
    QUICK_FIT_FOLDS for a ``detector`` that fits in seconds (PCA T²+Q, Isolation Forest: k more fits cost
    little) unless threshold.calibration_share or a calibration range chooses the calibration windows, else 0 (sharded training is
    refused for those detectors: config_checks).
    Why: the validation windows are the latest fifth of the range, one season; the fault-free nights of the
    synthetic farm then alarmed on 10.1 % for a 5 % budget (Isolation Forest) and 0.7 % (PCA), out of fold
    on 7.4 % and 7.3 % (docs/training.md, "Cross-fitted calibration")."""
    th = config.threshold
    if th.cross_fit_folds is not None:
        return th.cross_fit_folds
    quick = getattr(detector, "quick_to_fit", False)
    return QUICK_FIT_FOLDS if quick and th.calibration_share == 0 and th.calibration_start is None else 0


def folds_of(windows, folds: int, config: PipelineConfig) -> Optional[list]:
    """lstmad.training.cross_fit.fold_plan of the training ``windows``: purged of windows within a window's
    length of a held-out chunk. When a fold would be fitted on too few: PrepareError (one line, as other
    unusable training data) if threshold.cross_fit_folds asked for the folds, else (unset) None with a warning,
    and the validation windows calibrate."""
    from lstmad.training.cross_fit import fold_plan

    try:
        return fold_plan(windows.end_us, folds, config.prepare.window * config.prepare.step_s * MICROS)
    except ValueError as error:
        if config.threshold.cross_fit_folds is None:
            log.warning("train: no out-of-fold calibration (%s): the validation windows calibrate", error)
            return None
        raise PrepareError(f"threshold.cross_fit_folds: {error}") from None


def cross_fitted(config: PipelineConfig, windows, plan: list) -> CalibrationScores:
    """Out-of-fold scores of all the training ``windows`` following ``plan`` (folds_of), each fold by a fresh
    detector of the configured kind fitted, like the deployed one, on at most model.max_train_windows of the
    other folds' windows."""
    from lstmad.detectors import build_detector
    from lstmad.training.cross_fit import out_of_fold_scores

    most = config.model.max_train_windows

    def fit(fold_windows):
        return build_detector(config.model, "", config.source.driver_indices).fit(thinned(fold_windows, most))

    scores = out_of_fold_scores(fit, windows, plan)
    return CalibrationScores(scores, np.asarray(windows.end_us), np.asarray(windows.assets, dtype=object)[windows.asset],
                             f"out-of-fold ({len(plan)} folds)", by_deployed_model=False)


def fit_sharded(config: PipelineConfig, detector, spark=None) -> tuple[object, dict, Optional[CalibrationScores]]:
    """Fit with train.distributed.processes ranks, each streaming its shard of the training dates' block
    files: the latest threshold.calibration_share of the dates calibrate, the latest of the others validate.
    Returns (detector, counts, calibration scores or None)."""
    from lstmad.detectors import judged_rows
    from lstmad.io.tensor_store import block_files
    from lstmad.training.distributed import (
        ShardedData,
        count_windows_inside,
        file_windows,
        fit_distributed,
        split_by_date,
    )

    t, d = config.train, config.train.distributed
    files, calibration_files = block_files(Paths.of(config).tensors, iso_dates(t.start, t.end)), ()
    if config.threshold.calibration_share > 0 and len({Path(f).parent.name for f in files}) >= 3:
        # whole dates, as validation: the latest kept apart to calibrate the threshold
        files, calibration_files = split_by_date(files, config.threshold.calibration_share)
    train_files, validation_files = split_by_date(files, config.model.validation_share)
    data = ShardedData(train_files, validation_files, config.prepare.window, config.prepare.max_masked_share,
                       t.exclude_labelled_anomalies, d.shuffle_files, state_rows=judged_rows(config))
    severe = 0
    spans = severe_spans(config) if t.exclude_severity > 0 else ()
    if spans:
        # one counting pass over the files, as the in-memory path decides on all windows at once
        every, inside = count_windows_inside(train_files + validation_files, data, spans)
        if not _too_many_severe(inside, every):
            severe, data = inside, dataclasses.replace(data, excluded_spans=spans)
    if (d.processes > 1 or not d.local_mode) and spark is None:
        from lstmad.spark.session import get_session

        get_session(config.spark, delta_spark=config.delta.engine == "delta-spark")  # TorchDistributor's session
    detector, summary = fit_distributed(detector, data, d.processes, d.local_mode, d.use_gpu,
                                        d.threads_per_process, config.model.max_train_windows)
    calibration = (CalibrationScores.of(detector, file_windows(calibration_files, data))
                   if calibration_files else None)
    return detector, {"train_windows": summary["windows_per_epoch"], "shard_windows": summary["shard_windows"],
                      "validation_windows": summary["validation_windows"], "excluded_severe_windows": severe,
                      "steps_per_epoch": summary["steps_per_epoch"], "processes": summary["world_size"],
                      "calibration_folds": 0}, calibration
