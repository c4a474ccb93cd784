"""Stage train: fit the pipeline's detector on its training range, set its threshold, evaluate it on the
labelled evaluation range, log the run to MLflow, register the model and (optionally) run the promotion gate.

The MLflow run is opened first and checkpoints go to its artifact location every epoch; a training that was
killed (its run never finished) resumes from its last checkpoint when run again with the same settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import time
import uuid
from typing import Callable, Optional

import numpy as np
import pyarrow.compute as pc

from lstmad import names, progress
from lstmad.config import PipelineConfig
from lstmad.dates import iso_dates
from lstmad.io import model_store, tracking
from lstmad.io.evaluations import record_evaluation
from lstmad.io.locks import TrainingLock
from lstmad.io.provenance import git_commit, lstmad_version
from lstmad.layout import Paths
from lstmad.serving.intervals import SourceVersions
from lstmad.stages.promote import promote_model
from lstmad.training.fitting import (
    calibration_range_scores,
    calibration_range_windows,
    fit_in_memory,
    fit_sharded,
    training_notes,
    training_stats,
    windows_of,
)
from lstmad.transforms import circular
from lstmad.training.resume import training_key
from lstmad.transforms.intervals import AlarmRules

log = logging.getLogger("lstmad")


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


def train(config: PipelineConfig, on_epoch: Optional[Callable[[dict], None]] = None, promote: bool = True,
          spark=None) -> dict:
    """Train the detector on the prepared training range, evaluate it on the labelled evaluation range, log
    it to MLflow and register it; with ``promote``, also run the promotion gate (stages.promote)."""
    import torch

    from lstmad.detectors import build_detector
    from lstmad.evaluation.calibration import score_scales
    from lstmad.evaluation.care import care_score
    from lstmad.evaluation.drift import reference_quantiles
    from lstmad.evaluation.metrics import alarm_event_metrics, score_metrics
    from lstmad.evaluation.vus import vus_metrics
    from lstmad.evaluation.plots import evaluation_figures
    from lstmad.evaluation.reference import drift_reference as training_reference
    from lstmad.serving.bundle import ModelBundle
    from lstmad.serving.scoring import score_blocks

    t, m = config.train, config.model
    paths = Paths.of(config)
    if m.threads:
        torch.set_num_threads(m.threads)
    stats = training_stats(config)
    if config.threshold.calibration_start is not None:
        # an unusable calibration range fails here, before a run is opened or anything fitted
        calibration_range_windows(config, stats.stats_id)
    started = time.time()
    candidate_metrics: dict[str, float] = {}
    choice: dict = {}
    if m.candidates or m.driver_sets:
        # chosen before the training key: a rerun of a killed run resumes only a checkpoint of the same winner;
        # locked on the settings as given, so a second training with them waits for no study of its own
        choosing = TrainingLock(paths.locks, "choice-" + training_key(config))
        try:
            sets = f" with each of model.driver_sets {[list(s) for s in m.driver_sets]}" if m.driver_sets else ""
            progress.step("train: fitting each of %s%s to choose one", ", ".join(m.candidates) or m.detector, sets)
            config, candidate_metrics, choice = chosen_candidate(config)
        finally:
            choosing.release()
        m = config.model
    tags = {"pipeline": config.pipeline, "detector": config.model.detector}
    if m.driver_sets:
        tags["drivers"] = (",".join(config.source.driver_names) if m.detector == "lstm_forecaster" else "") or "none"
    key = training_key(config)
    # locked before the run is looked up: two trainings with the same settings must not both find (or both
    # create) the unfinished run
    lock = TrainingLock(paths.locks, key)
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
        detector = build_detector(config.model, str(checkpoints), config.source.driver_indices)
        if t.distributed.processes:
            detector, counts, calibration_scores = fit_sharded(config, detector, spark)
            for record in detector.history_ if on_epoch else ():
                on_epoch(record)  # the ranks ran elsewhere: report their epochs now
        else:
            detector, counts, calibration_scores = fit_in_memory(config, detector, on_epoch)
        if config.threshold.calibration_start is not None:
            # read again after the fit (not held through it), with the chosen candidate's judged rows
            range_windows, range_counts = calibration_range_windows(config, stats.stats_id, quiet=True)
            calibration_scores = calibration_range_scores(config, detector, range_windows)
            counts = {**counts, **range_counts}
        train_seconds = time.time() - started
        notes = training_notes(detector, config, counts)
        progress.step("train: calibrating the alarm threshold (%s)", config.threshold.rule)
        calibration, asset_scales = calibrated_threshold(config, detector, calibration_scores)
        threshold = calibration.threshold
        train_dates = iso_dates(t.start, t.end)
        drift_reference = training_reference(paths.tensors, train_dates, config.drift.psi_bins)
        # the deployed model's scores of windows it never trained on: out-of-fold scores come from other models
        if calibration_scores is not None and calibration_scores.by_deployed_model:
            reference_scores = calibration_scores.scores * score_scales(asset_scales, calibration_scores.assets)
        else:
            reference_scores = np.asarray(detector.validation_scores_)
            assets = getattr(detector, "validation_assets_", None)
            if assets is not None and len(assets) == reference_scores.size:  # on the scale scoring stores
                reference_scores = reference_scores * score_scales(asset_scales, assets)
        drift_reference["score_quantiles"] = reference_quantiles(reference_scores[:, None])[0]
        drift_reference["trained_until"] = config.train.end.isoformat()
        bundle = ModelBundle(detector.to("cpu"), tuple(config.source.tensor_channels), config.prepare.window,
                             config.prepare.step_s, stats, threshold, calibration.description,
                             calibration.expected_row_rate, drift_reference, asset_scales)
        metrics: dict[str, float] = {**counts, **calibration.metrics(), **candidate_metrics,
                                     "calibration_assets_own_threshold": float(len(asset_scales)),
                                     "train_seconds": train_seconds,
                                     "resumed": float(resumed), "still_improving": float("still_improving" in notes)}
        model_dir = paths.models / "staging" / uuid.uuid4().hex[:8]
        figures = model_dir.with_name(model_dir.name + "-plots")
        if t.eval_start and t.eval_end:
            progress.step("train: evaluating on %s..%s", t.eval_start, t.eval_end)
            eval_blocks, _ = windows_of(config, t.eval_start, t.eval_end)
            scored = score_blocks(bundle, eval_blocks, {stats.stats_id: stats},
                                  max_masked_share=config.prepare.max_masked_share)
            # judged in normal operation only: elsewhere nothing is ever alarmed
            normal = pc.equal(scored.column(names.STATE), 0)
            metrics["eval_operating_state_rows"] = scored.num_rows - int(pc.sum(normal).as_py() or 0)
            scored = scored.filter(normal)
            labels, scores = scored.column(names.LABEL).to_numpy(), scored.column(names.SCORE).to_numpy()
            metrics.update({f"eval_{k}": v for k, v in score_metrics(labels, scores, threshold).items()})
            finite = np.isfinite(scores)
            metrics.update({f"eval_{k}": v for k, v in vus_metrics(labels[finite], scores[finite]).items()})
            # what operators would have received: intervals, against the labelled events
            times, assets = scored.column("timestamp_us").to_numpy(), np.asarray(scored.column(names.ASSET).to_pylist())
            metrics.update({f"eval_{k}": v for k, v in alarm_event_metrics(
                times, assets, labels, scores, threshold, AlarmRules.of(config.score, config.prepare.step_s)).items()})
            metrics.update({f"eval_{k}": v for k, v in care_score(
                times, assets, labels, scores > threshold, criticality_steps(config)).items()})
            try:
                evaluation_figures(scored, threshold, figures)
            except Exception as error:  # a figure is never worth a training run
                log.warning("train: evaluation figures not drawn: %s", error)
        bundle.save(model_dir)
        params = {**dataclasses.asdict(m), "window": config.prepare.window, "step_s": config.prepare.step_s,
                  "smoothing_half_width": config.prepare.smoothing_half_width,
                  "channels": ",".join(config.source.tensor_channels), "threshold_rule": config.threshold.rule,
                  "threshold_percentile": config.threshold.percentile, "threshold_budget": config.threshold.budget,
                  "threshold_per_asset": config.threshold.per_asset,
                  "threshold_shift_correction": config.threshold.shift_correction,
                  "calibration_range": (f"{config.threshold.calibration_start}..{config.threshold.calibration_end}"
                                        if config.threshold.calibration_start is not None else "none"),
                  "calibration": calibration.description, "normalisation": stats.method,
                  "stats_id": stats.stats_id, "train_range": f"{t.start}..{t.end}",
                  "eval_range": f"{t.eval_start}..{t.eval_end}",
                  "distributed": json.dumps(dataclasses.asdict(t.distributed)),
                  "tensor_table": str(paths.tensors),
                  "training_data_version": SourceVersions(paths, {}).of_dates(train_dates),
                  "eval_data_version": SourceVersions(paths, {}).of_dates(iso_dates(t.eval_start, t.eval_end))
                  if t.eval_start and t.eval_end else "none",
                  "calibration_data_version": SourceVersions(paths, {}).of_dates(
                      iso_dates(config.threshold.calibration_start, config.threshold.calibration_end))
                  if config.threshold.calibration_start is not None else "none"}
        lineage_tags = {**tags, "git_commit": git_commit(), "lstmad_version": lstmad_version()}
        # the folder becomes an MLflow model with its input signature (mlflow.pyfunc.load_model scores windows)
        tracking.write_mlflow_model(model_dir, config.prepare.window, list(config.source.tensor_channels),
                                    {"step_s": config.prepare.step_s, "normalisation": stats.stats_id,
                                     "normalisation_scope": stats.scope,
                                     "input_units": "source units; a circular channel (period) as the sine and "
                                                    "cosine of its phase",
                                     "threshold": threshold, "threshold_rule": config.threshold.rule,
                                     "per_asset_thresholds": "scores on the named asset's scale (params asset)"
                                     if asset_scales else "none",
                                     "detector": m.detector, "score": "anomaly score of each window's last "
                                     "timestamp; flagged when above threshold"})
        # sealed before it is logged: the content digest goes to the run and the registered version, and every
        # copy served later (cached or downloaded) must verify against it
        digest = model_store.seal(model_dir)
        lineage_tags[tracking.CONTENT_DIGEST_TAG] = digest
        progress.step("train: logging the run to MLflow and registering it")
        tracking.log_training_run(config.tracking_uri, run_id, params, detector.history_, metrics, model_dir,
                                  lineage_tags,
                                  documents={"normalisation.json": stats.to_dict(),
                                             "threshold.json": {"rule": config.threshold.rule,
                                                                "percentile": config.threshold.percentile,
                                                                "value": threshold,
                                                                **dataclasses.asdict(calibration),
                                                                "per_asset": {a: threshold / v for a, v
                                                                              in asset_scales.items()}}},
                                  checkpoints=None if artifacts is not None else checkpoints, figures=figures)
        shutil.rmtree(figures, ignore_errors=True)
        name = config.registered_model_name
        # the run's version if it has one
        version = tracking.register_model(config.tracking_uri, name, run_id, digest)
        model_store.cache(config, version, model_dir, digest)
        if t.eval_start and t.eval_end:
            record_evaluation(paths.lake, name, version, run_id, "training", t.eval_start, t.eval_end,
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
              "calibration": calibration.description,
              "history": detector.history_, "resumed": resumed, "notes": notes}
    if choice:  # what model.candidates / model.driver_sets compared, by label, and the winner
        result["candidates"] = choice
    if promote:
        result.update(promote_model(config, run_id, version))
    return result




def calibrated_threshold(config: PipelineConfig, detector, calibration_scores):
    """(the threshold.rule's Calibration, {asset: score scale}) on the calibration slice's scores, the
    out-of-fold scores of the training range (threshold.cross_fit_folds) or the scores of the calibration range
    (threshold.calibration_start..calibration_end), else (calibration_share 0, or too few
    windows for a slice) on the validation scores: windows the model never trained on, scored out of fold where
    an error model was fitted on them. The description says which. The scales are empty unless
    threshold.per_asset (lstmad.evaluation.calibration.per_asset)."""
    from lstmad.dates import MICROS
    from lstmad.evaluation.calibration import calibrate, per_asset

    th, step_s = config.threshold, config.prepare.step_s
    if calibration_scores is None:
        scores = np.asarray(detector.validation_scores_, dtype=np.float64)
        end_us, assets = getattr(detector, "validation_end_us_", None), getattr(detector, "validation_assets_", None)
        named = end_us is not None and len(end_us) == scores.size
        if not named:  # a detector that keeps no times: one evenly spaced series
            end_us, assets = np.arange(scores.size, dtype=np.int64) * step_s * MICROS, np.zeros(scores.size, object)
            if th.per_asset:
                log.warning("train: %s keeps no assets of its validation windows: one threshold for the fleet",
                            config.model.detector)
        if th.calibration_share > 0:
            log.warning("train: too few windows for a calibration slice of %s; calibrating on the validation "
                        "scores", th.calibration_share)
        source = "validation"
    else:
        scores, end_us, assets = calibration_scores.scores, calibration_scores.end_us, calibration_scores.assets
        source, named = calibration_scores.source, True
    rules = AlarmRules.of(config.score, step_s)
    calibration = calibrate(th.rule, scores, end_us, assets, percentile=th.percentile, budget=th.budget,
                            rules=rules, source=source, shift_correction=th.shift_correction and named)
    if not (th.per_asset and named):
        return calibration, {}
    return per_asset(calibration, scores, end_us, assets, min_windows=th.min_asset_windows,
                     percentile=th.percentile, rules=rules, shift_correction=th.shift_correction)


def chosen_candidate(config: PipelineConfig) -> tuple[PipelineConfig, dict[str, float], dict]:
    """The configuration with the winner of model.candidates (each forecaster once per model.driver_sets, when
    set) as its detector and the winner's driver set as the source's roles (lstmad.training.selection), and
    the study's figures as MLflow metrics: candidate_<label>_auroc (mean over fault classes, or on the labelled
    evaluation range), candidate_<label>_<fault>_auroc, candidate_<label>_clean_alarm_rate (Candidate.label),
    and the choice: {"compared": {label: that AUROC}, "chosen": the winner's label, "by": how it was chosen}."""
    from lstmad.detectors import build_detector
    from lstmad.training.selection import CANDIDATES, Candidate, choose_candidate, driver_candidates, named_candidate

    t, src = config.train, config.source

    def configured(candidate: Candidate) -> PipelineConfig:
        model = dataclasses.replace(config.model, **CANDIDATES[candidate.name])
        # the spread of the residuals belongs to a Mahalanobis forecaster only (config_checks)
        spread = model.residual_spread and model.error_model == "mahalanobis" and model.residual_steps >= 2
        model = dataclasses.replace(model, residual_spread=spread)
        return dataclasses.replace(config, model=model, source=src if candidate.drivers is None
                                   else src.with_drivers(candidate.drivers))

    def make(candidate: Candidate):
        chosen = configured(candidate)
        drivers = chosen.source.driver_indices if chosen.model.detector == "lstm_forecaster" else ()
        return build_detector(chosen.model, "", drivers)

    # an unknown name (not a forecaster) stays one Candidate: choose_candidate refuses it
    candidates = driver_candidates(config.model.candidates or (named_candidate(config.model),), src.driver_names,
                                   config.model.driver_sets)
    # every candidate is compared on the same windows: those in normal operation for the one judging most rows
    state_rows = max((make(c).judged_rows(config.prepare.window) for c in candidates if c.name in CANDIDATES),
                     default=None)
    _, windows = windows_of(config, t.start, t.end, state_rows)
    windows = windows.subset(np.flatnonzero((windows.state_last == 0) & (windows.label_any != 1)))
    evaluation = None
    if t.eval_start and t.eval_end:
        _, evaluation = windows_of(config, t.eval_start, t.eval_end, state_rows)
        evaluation = evaluation.subset(np.flatnonzero(evaluation.state_last == 0))

    # the study's faults go into channels as the source has them, not into an angle's sine or cosine alone
    linear = [j for j, i in enumerate(circular.source_index(src.periods)) if not src.periods[i]]
    if config.model.max_train_windows and len(windows) > config.model.max_train_windows:
        progress.step("train: each candidate fitted on at most %d windows, evenly spaced (model.max_train_windows; "
                      "%d in the training range)", config.model.max_train_windows, len(windows))
    label, how, results = choose_candidate(candidates, make, windows, evaluation, config.model.seed,
                                           injectable=linear or None, max_fit_windows=config.model.max_train_windows)
    winner = next(c for c in candidates if c.label == label)
    progress.step("train: model.candidates: %s wins (%s)", label, how)
    if config.model.driver_sets and how != "labelled evaluation range":
        # faults go into drivers too, which a normal-behaviour model does not score: no fair judge of roles
        log.warning("train: model.driver_sets chosen by the fault-injection study, which judges roles poorly "
                    "(docs/training.md); a labelled evaluation range (train.eval_start/eval_end) chooses them")
    metrics = {}
    for name, result in results.items():
        metrics[f"candidate_{name}_auroc"] = result.mean_auroc
        metrics[f"candidate_{name}_clean_alarm_rate"] = result.clean_alarm_rate
        metrics.update({f"candidate_{name}_{fault}_auroc": v for fault, v in result.auroc_by_fault.items()
                        if fault != "labelled"})
    metrics["candidates_by_labels"] = float(how == "labelled evaluation range")
    return configured(winner), metrics, {"compared": {name: r.mean_auroc for name, r in results.items()},
                                         "chosen": label, "by": how}


def criticality_steps(config: PipelineConfig) -> int:
    """CARE's detection criterion in steps: as long as the shortest interval scoring reports."""
    return max(1, config.score.min_interval_s // config.prepare.step_s)
