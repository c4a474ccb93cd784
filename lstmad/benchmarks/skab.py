"""SKAB outlier-detection benchmark on its official protocol (../shared/datasets/skab/PROVENANCE.txt).

Each of the 34 anomalous files separately: the first 400 rows train (scaler, model and threshold from those
rows only), the rest test; one confusion matrix pooled over all test parts. A timestamp's score is the
score of the window ending there (windows may reach back into the file's training rows, never forward).

Beside SKAB's threshold rule, lstmad's row budget: each model is calibrated on *later* normal rows than it
trained on, from SKAB's anomaly-free run (a separate recording of the same rig, no test row): the run is cut
into parts as long as a SKAB file, each part is treated as a file (fit on its first 400 rows, score the rest),
and the budget's conformal quantile of those later rows' score ÷ threshold ratios scales every test file's
threshold. Within a file the normal rows drift away from its first 400, so a quantile of scores from those 400
rows (the model's validation windows, also reported) is exceeded by far more than the budget on later rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from lstmad.benchmarks.common import (
    MEAN_STEPS,
    DataMissingError,
    calibrated_on,
    classical_detectors,
    deep_detectors,
    fmt,
    operator_metrics,
    write_report,
)
from lstmad.config import data_dir
from lstmad.dates import MICROS
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.evaluation.calibration import conformal_threshold, shift_corrected_level
from lstmad.evaluation.metrics import confusion_metrics
from lstmad.evaluation.thresholds import skab_threshold
from lstmad.training.cross_fit import fold_plan, out_of_fold_scores
from lstmad.transforms.blocks import Windows
from lstmad.transforms.intervals import AlarmRules

TRAIN_ROWS = 400
ANOMALY_FREE_PARTS = 8  # 9,405 rows of the anomaly-free run → 8 parts of 1,175 rows, about a SKAB file's length
BUDGET = 0.05  # the row budget of lstmad's own calibration, reported beside SKAB's rule
SENSORS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
           "Voltage", "Volume Flow RateRMS"]

# The published leaderboard (F1, FAR %, MAR %) beside which ours are printed.
LEADERBOARD = {
    "Conv-AE": (0.78, 13.55, 28.02), "MSET": (0.78, 39.73, 14.13), "T²+Q (PCA)": (0.76, 26.62, 24.92),
    "LSTM-AE": (0.74, 29.96, 25.92), "Vanilla LSTM": (0.54, 12.54, 59.53), "Isolation Forest": (0.29, 2.56, 82.89),
}

DEFAULT_MODELS = ["iae_lstm_kl_soft", "iae_lstm_kl_hard", "iaead_soft", "deep_svdd_soft", "cae", "lstm_forecaster",
                  "lstm_forecaster_mahalanobis", "lstm_ae", "pca_t2q", "isolation_forest"]


# The rig's two temperature channels as the drivers of a normal-behaviour model: slow thermal state, like a wind
# farm's ambient temperature, from which the other six channels are predicted and which is never scored itself.
# Chosen after the test rows' false alarms had been seen to follow the thermocouple's drift (docs/benchmarks.md,
# SKAB), so its figures are a lead, not a result; not among DEFAULT_MODELS. The label-free counterpart takes as
# drivers the channels that drift on the anomaly-free run alone (drifting_channels).
TEMPERATURE_DRIVERS = ("Temperature", "Thermocouple")
DRIFT_LIMIT = 2.0  # standard deviations of the training rows: a channel's median distance that makes it a driver


def drift_distances(parts: list[np.ndarray]) -> np.ndarray:
    """(C,) how far each channel's later rows (after the first TRAIN_ROWS) sit from the training rows, in
    training-row standard deviations: the median over rows of |value − training mean| / training std, then the
    median over the (n_k, C) normal ``parts``. No label is read."""
    short = [len(values) for values in parts if len(values) <= TRAIN_ROWS]
    if not parts or short:
        raise ValueError(f"drift distances need parts longer than {TRAIN_ROWS} rows, got {len(parts)} parts "
                         f"({len(short)} too short)")
    distances = []
    for values in parts:
        train = values[:TRAIN_ROWS]
        scale = np.where(train.std(axis=0) > 1e-12, train.std(axis=0), 1.0)
        distances.append(np.median(np.abs(values[TRAIN_ROWS:] - train.mean(axis=0)) / scale, axis=0))
    return np.median(distances, axis=0)


def drifting_channels(parts: list[np.ndarray], limit: float = DRIFT_LIMIT) -> tuple[int, ...]:
    """Channel indices whose drift_distances exceed ``limit``: on SKAB's anomaly-free run the thermocouple
    alone. A rule written after SKAB's test rows had been analysed, though it reads no label."""
    return tuple(np.flatnonzero(drift_distances(parts) > limit).tolist())


def skab_detectors(profile: str, epochs: int, seed: int, device: str,
                   drifting: Optional[tuple[int, ...]] = None) -> dict:
    """The benchmarks' deep and classical detectors plus normal-behaviour models (scored by the mean residual of
    their windows' last MEAN_STEPS rows; squared error or Mahalanobis) driven by TEMPERATURE_DRIVERS and, when
    given, by the ``drifting`` channels (drifting_channels of the anomaly-free run)."""
    factories = {**deep_detectors(profile, epochs, seed, device), **classical_detectors(seed)}
    roles = {"temperatures": tuple(SENSORS.index(channel) for channel in TEMPERATURE_DRIVERS)}
    if drifting:
        if len(drifting) >= len(SENSORS):
            raise ValueError(f"every channel drifts ({drifting}): a normal-behaviour model needs a channel to score")
        roles["drifting"] = drifting
    for role, drivers in roles.items():
        factories[f"normal_behaviour_mean_{role}"] = lambda d=drivers: LSTMForecasterDetector(
            epochs=epochs, seed=seed, device=device, drivers=d, residual_steps=MEAN_STEPS)
        factories[f"normal_behaviour_mean_{role}_mahalanobis"] = lambda d=drivers: LSTMForecasterDetector(
            epochs=epochs, seed=seed, device=device, drivers=d, residual_steps=MEAN_STEPS, error_model="mahalanobis")
    return factories


def skab_files(root: Optional[Path] = None) -> list[Path]:
    """The 34 anomalous SKAB files, in a stable order; raises DataMissingError when absent."""
    root = Path(root or data_dir()) / "skab"
    files = sorted(p for folder in ("valve1", "valve2", "other") for p in (root / folder).glob("*.csv"))
    if len(files) != 34:
        raise DataMissingError(f"{root}: expected the 34 anomalous SKAB files, found {len(files)} "
                               "(set LSTMAD_DATA_DIR to the folder holding skab/)")
    return files


def anomaly_free_parts(root: Optional[Path] = None, parts: int = ANOMALY_FREE_PARTS) -> list[np.ndarray]:
    """SKAB's anomaly-free run cut into ``parts`` consecutive equal parts, each (n, 8) float64 in SENSORS order
    (the run's last len % parts rows are left out); raises DataMissingError when absent."""
    path = Path(root or data_dir()) / "skab" / "anomaly-free" / "anomaly-free.csv"
    if not path.is_file():
        raise DataMissingError(f"{path}: SKAB's anomaly-free run is missing (it calibrates the row budget)")
    values = pd.read_csv(path, sep=";", index_col="datetime")[SENSORS].to_numpy(np.float64)
    size = len(values) // parts
    return [values[k * size:(k + 1) * size] for k in range(parts)]


def budget_threshold(ratios_per_part: list[np.ndarray], budget: float, shift_correction: bool = False) -> float:
    """The budget's conformal threshold of the parts' pooled (n_k,) ratios; with ``shift_correction`` at the
    level that holds the budget on a left-out part on average (lstmad.evaluation.calibration.shift_corrected_level,
    each part a period), as the pipeline's threshold.shift_correction does with asset-days."""
    pooled = np.concatenate(ratios_per_part)
    if not shift_correction:
        return conformal_threshold(pooled, budget)
    parts = np.repeat(np.arange(len(ratios_per_part)), [len(r) for r in ratios_per_part])
    return conformal_threshold(pooled, shift_corrected_level(pooled, parts, budget))


def left_out_part_fars(ratios_per_part: list[np.ndarray], budget: float, shift_correction: bool = False
                       ) -> np.ndarray:
    """(parts,) the row false-alarm rate of each part's (n_k,) ratios at the budget's threshold of all the other
    parts' ratios (budget_threshold): how far the budget can be trusted on a new period, from normal rows alone."""
    return np.array([np.mean(ratios > budget_threshold(ratios_per_part[:k] + ratios_per_part[k + 1:], budget,
                                                       shift_correction))
                     for k, ratios in enumerate(ratios_per_part)])


def load_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SKAB file → (values (n, 8) float64 in SENSORS order, anomaly labels (n,) int)."""
    frame = pd.read_csv(path, sep=";", index_col="datetime", parse_dates=True)
    return frame[SENSORS].to_numpy(np.float64), frame["anomaly"].to_numpy().astype(int)


def file_windows(values: np.ndarray, labels: np.ndarray, window: int) -> tuple[Windows, Windows]:
    """Scale with the first 400 rows' statistics; (train windows ending in rows < 400, test windows ending
    in every later row). Both share one (n, 8) series."""
    mean, std = values[:TRAIN_ROWS].mean(axis=0), values[:TRAIN_ROWS].std(axis=0)
    scaled = torch.as_tensor((values - mean) / np.where(std > 1e-12, std, 1.0), dtype=torch.float32)
    ends = np.arange(window - 1, len(values))

    def windows(selected: np.ndarray) -> Windows:
        return Windows(scaled, selected - window + 1, window, selected.astype(np.int64),
                       np.zeros(selected.size, dtype=np.int64), ["file"], labels[selected].astype(np.int8),
                       labels[selected].astype(np.int8))

    return windows(ends[ends < TRAIN_ROWS]), windows(ends[ends >= TRAIN_ROWS])


# The leaderboard's Conv-AE (SKAB's notebooks-proper-eval/Conv_AE.ipynb, 60-row windows) flags test row i
# only if all windows starting in [i − 59, i − 1] alarm, for i in range(N_STEPS − 1, len(X) − N_STEPS + 1)
# where len(X) counts windows (rows − 59): its first 59 and last 118 test rows are never flagged, which
# exempts 5,548 of SKAB's 11,030 normal test rows from false alarms. Its 13.55 % FAR is over all normal rows.
CONV_AE_STEPS = 60


def conv_ae_flaggable(n_rows: int, n_steps: int = CONV_AE_STEPS) -> np.ndarray:
    """(n_rows,) bool: the test rows of a file that the leaderboard Conv-AE's labelling can flag at all
    (0-based rows n_steps − 1 to n_rows − 2·n_steps + 1, both included), to judge lstmad's flags as it counts."""
    rows = np.arange(n_rows)
    return (rows >= n_steps - 1) & (rows < n_rows - 2 * n_steps + 2)


def since_onset(truth: np.ndarray, anomalous_before: bool = False) -> np.ndarray:
    """(n,) bool: the test rows of one file at or after its first anomalous row (all of them when the file's
    anomaly began in its training rows, ``anomalous_before``)."""
    after = np.cumsum(truth) > 0
    return np.ones_like(after) if anomalous_before else after


def far_by_onset(flags: list[np.ndarray], truth: list[np.ndarray], anomalous_before: list[bool]) -> dict:
    """Pooled over files ((n_i,) bool flags and truth of each file's test rows; whether its anomaly began in its
    training rows): {"far_before_anomaly", "far_after_anomaly_onset"} the false-alarm rates of the normal rows
    before each file's anomaly and of those at or after its onset, and "false_alarms_after_anomaly_onset_share"
    (NaN without a false alarm). SKAB's anomalies sit in the middle of a file: the split shows whether false
    alarms gather after them."""
    before, after = np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64)  # false alarms, normal rows
    for flagged, anomalous, began in zip(flags, truth, anomalous_before):
        late = since_onset(anomalous, began)
        normal = ~np.asarray(anomalous, bool)
        before += [np.sum(flagged & normal & ~late), np.sum(normal & ~late)]
        after += [np.sum(flagged & normal & late), np.sum(normal & late)]
    rate = (lambda counts: float(counts[0] / counts[1]) if counts[1] else float("nan"))
    alarms = before[0] + after[0]
    return {"far_before_anomaly": rate(before), "far_after_anomaly_onset": rate(after),
            "false_alarms_after_anomaly_onset_share": float(after[0] / alarms) if alarms else float("nan")}


def typical_anomaly_span(data: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """(first, end): the medians over the files of (values (n, C), labels (n,)) that hold an anomaly of their
    first anomalous row and of the row after their last, rounded down to rows; files without one are skipped."""
    spans = [(np.flatnonzero(labels)[0], np.flatnonzero(labels)[-1] + 1) for _, labels in data if labels.any()]
    if not spans:
        raise ValueError("no file holds an anomaly: there is no anomaly span")
    return int(np.floor(np.median([a for a, _ in spans]))), int(np.floor(np.median([b for _, b in spans])))


def far_by_position(flags: list[np.ndarray], span: tuple[int, int]) -> dict:
    """The control for far_by_onset, on normal data alone: (n_k,) bool flags of each anomaly-free part's test
    rows (row TRAIN_ROWS + i) → {"before", "span", "after"}: the pooled false-alarm rates of the rows before
    ``span`` = (first, end), inside it, and from its end on. Normal operation drifts away from the training
    rows, so later rows can alarm more with no anomaly at all."""
    rows = [TRAIN_ROWS + np.arange(len(f)) for f in flags]
    pick = {"before": lambda r: r < span[0], "span": lambda r: (r >= span[0]) & (r < span[1]),
            "after": lambda r: r >= span[1]}
    rates = {}
    for name, selected in pick.items():
        chosen = [f[selected(r)] for f, r in zip(flags, rows)]
        n = sum(c.size for c in chosen)
        rates[name] = float(sum(c.sum() for c in chosen) / n) if n else float("nan")
    return rates


def channel_shift_by_segment(data: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """{segment: {channel: median over files of the median |z|}} for the segments "before" (test rows before
    the anomaly), "anomaly" and "after" (normal rows after it) of each (values (n, 8), labels (n,)) file, z in
    standard deviations of the file's training rows: how far each channel sits from what the models trained
    on, with no model involved (a file without an anomaly is all "before"). Files without a segment (an anomaly
    beginning in the training rows, or running to the file's end) add nothing to it."""
    shifts = {"before": [], "anomaly": [], "after": []}
    for values, labels in data:
        train = values[:TRAIN_ROWS]
        z = np.abs((values - train.mean(axis=0)) / np.where(train.std(axis=0) > 1e-12, train.std(axis=0), 1.0))
        rows = np.arange(len(labels))
        anomalous = labels == 1
        # a file without an anomaly: every test row is "before"
        first, last = (rows[anomalous].min(), rows[anomalous].max()) if anomalous.any() else (len(rows), len(rows))
        segments = {"before": (rows >= TRAIN_ROWS) & (rows < first), "anomaly": anomalous & (rows >= TRAIN_ROWS),
                    "after": (rows > last) & (rows >= TRAIN_ROWS)}
        for name, selected in segments.items():
            if selected.any():
                shifts[name].append(np.median(z[selected], axis=0))
    return {name: dict(zip(SENSORS, np.round(np.median(found, axis=0), 2).tolist())) for name, found in shifts.items()
            if found}


def threshold_for(name: str, train_scores: np.ndarray) -> float:
    """SKAB's rule, quantile(train scores, 0.99) × factor: × 1.5 (its LSTM-AE setting) for the deep models,
    × 1 for the Isolation Forest; T²+Q scores are already ratios to its 0.99 control limits (alarm above 1)."""
    if name == "pca_t2q":
        return 1.0
    # scores of the forest live in a narrow band near 0.5: a factor would leave nothing to flag
    return skab_threshold(train_scores, 0.99, 1.0 if name == "isolation_forest" else 1.5)


def run(json_path: Path, models: Optional[list[str]] = None, window: int = 26, epochs: int = 15,
        profile: str = "small", seed: int = 0, device: str = "auto", max_files: int = 0, cross_fit_folds: int = 0,
        progress=print) -> dict:
    """Run the protocol for each model; returns {"models": {name: {"f1", "far", "mar", "auroc", …}}}."""
    later_normal = anomaly_free_parts()
    drifting = drifting_channels(later_normal)
    factories = skab_detectors(profile, epochs, seed, device, drifting)
    models = models or DEFAULT_MODELS
    unknown = sorted(set(models) - set(factories))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {sorted(factories)}")
    files = skab_files()[: max_files or None]
    data = [load_file(f) for f in files]
    span = typical_anomaly_span(data)
    results = {}
    for name in models:
        started = time.time()
        # the budget's ratio: score ÷ threshold on the later rows of each anomaly-free part, a new period of
        # normal operation for a model fitted on the part's first 400 rows
        later_ratios = []
        for values in later_normal:
            detector, _, later, threshold = fitted(name, factories[name], values, np.zeros(len(values), dtype=int),
                                                   window, seed)
            later_ratios.append(ratio(detector.score(later), threshold))
        budget_ratio = budget_threshold(later_ratios, BUDGET)
        left_out = left_out_part_fars(later_ratios, BUDGET)
        # the same with the level corrected for the shifts between the parts (threshold.shift_correction)
        shifted_ratio = budget_threshold(later_ratios, BUDGET, shift_correction=True)
        left_out_shifted = left_out_part_fars(later_ratios, BUDGET, shift_correction=True)
        totals = np.zeros(4, dtype=np.int64)  # tp, fp, fn, tn
        as_conv_ae = np.zeros(4, dtype=np.int64)  # flags outside the rows Conv-AE can flag count as none
        flags_of_files, began_in_training = [], []  # for the false alarms before and after each anomaly
        # at the row budget, calibrated on later normal rows (plain / shift-corrected) or in the file
        budget_flags, shifted_flags, in_file_flags = [], [], []
        ratios, truth, seconds, files_of = [], [], [], []
        for number, (values, labels) in enumerate(data):
            detector, train, test, threshold = fitted(name, factories[name], values, labels, window, seed)
            scores = detector.score(test)
            flags = scores > threshold
            file_ratio = ratio(scores, threshold)
            budget_flags.append(file_ratio > budget_ratio)
            shifted_flags.append(file_ratio > shifted_ratio)
            # the in-file calibration, for contrast: the conformal quantile of the scores of the model's held-out
            # validation windows, or of out-of-fold scores of all 375 training windows (each fold one contiguous
            # chunk of them: the file's first 400 rows are too short for several chunks a fold once purged)
            held_out = getattr(detector, "validation_scores_", None)
            if cross_fit_folds:
                held_out = out_of_fold_scores(lambda w: factories[name]().fit(w), train,
                                              fold_plan(train.end_us, cross_fit_folds, window, chunks_per_fold=1))
            in_file_flags.append(scores > conformal_threshold(held_out, BUDGET) if held_out is not None and
                                 len(held_out) else np.zeros(len(scores), bool))
            y = test.label_last == 1
            totals += confusion(flags, y)
            # test windows end at the file's test rows, in order
            as_conv_ae += confusion(flags & conv_ae_flaggable(len(flags)), y)
            flags_of_files.append(flags)
            began_in_training.append(bool(labels[:TRAIN_ROWS].any()))
            ratios.append(file_ratio)
            truth.append(y)
            seconds.append(test.end_us)  # row numbers of a 1 Hz file
            files_of.append(np.full(len(test), number))
        metrics = confusion_metrics(*totals.tolist())
        y_all = np.concatenate(truth)
        at_budget, in_file = far_f1(np.concatenate(budget_flags), y_all), far_f1(np.concatenate(in_file_flags), y_all)
        shifted = far_f1(np.concatenate(shifted_flags), y_all)
        metrics.update(budget=BUDGET, budget_ratio=budget_ratio, budget_far=at_budget["far"],
                       budget_far_within_2x=bool(at_budget["far"] <= 2 * BUDGET), budget_f1=at_budget["f1"],
                       budget_far_in_file=in_file["far"], budget_f1_in_file=in_file["f1"],
                       budget_far_left_out_parts={"mean": float(left_out.mean()), "max": float(left_out.max())},
                       budget_ratio_shift_corrected=shifted_ratio, budget_far_shift_corrected=shifted["far"],
                       budget_f1_shift_corrected=shifted["f1"],
                       budget_far_shift_corrected_within_2x=bool(shifted["far"] <= 2 * BUDGET),
                       budget_far_left_out_parts_shift_corrected={"mean": float(left_out_shifted.mean()),
                                                                  "max": float(left_out_shifted.max())})
        # per-file scores on one scale (score ÷ that file's threshold) for a pooled AUROC
        metrics["auroc"] = float(roc_auc_score(y_all, np.concatenate(ratios)))
        # what an operator would receive: each run of flags an alarm, judged against the labelled anomalies
        # on one scale (score ÷ the file's threshold, alarm above 1): VUS, events, CARE (1-second rows)
        operator = operator_metrics(np.concatenate(seconds) * MICROS, np.concatenate(files_of),
                                    np.concatenate(truth).astype(int), np.concatenate(ratios), 1.0,
                                    AlarmRules(step_s=1, min_duration_s=1, merge_gap_s=0), criticality_steps=1)
        metrics.update({k: operator[k] for k in ("vus_roc", "vus_pr", "interval_recall", "interval_precision",
                                                 "detection_delay_min", "care")})
        counted_as_conv_ae = confusion_metrics(*as_conv_ae.tolist())
        metrics["counted_as_the_leaderboard_conv_ae"] = {k: counted_as_conv_ae[k] for k in ("f1", "far", "mar")}
        metrics.update(far_by_onset(flags_of_files, truth, began_in_training))
        # the control: SKAB's rule on the anomaly-free parts, at the rows where the files' anomalies typically are
        metrics["far_by_position_anomaly_free"] = far_by_position([r > 1 for r in later_ratios], span)
        metrics.update(tp=int(totals[0]), fp=int(totals[1]), fn=int(totals[2]), tn=int(totals[3]),
                       seconds=round(time.time() - started, 1))
        results[name] = metrics
        progress(f"skab {name}: F1 {metrics['f1']:.3f}, FAR {100 * metrics['far']:.2f} %, "
                 f"MAR {100 * metrics['mar']:.2f} %, AUROC {metrics['auroc']:.3f}; at a {BUDGET:.0%} budget "
                 f"FAR {100 * metrics['budget_far']:.2f} % ({metrics['seconds']} s)")
    result = {"models": results, "protocol": {"files": len(files), "train_rows": TRAIN_ROWS, "window": window,
                                              "epochs": epochs, "profile": profile, "seed": seed,
                                              "threshold": "quantile(train scores, 0.99) x 1.5; T2+Q: limits",
                                              "budget_calibration": f"later rows of the {len(later_normal)} parts "
                                                                    "of the anomaly-free run",
                                              "in_file_calibration": calibrated_on(cross_fit_folds,
                                                                                   "validation windows")},
              "typical_anomaly_span": list(span),
              "drivers": {"temperatures": list(TEMPERATURE_DRIVERS),
                          "drifting": [SENSORS[c] for c in drifting], "drift_limit": DRIFT_LIMIT,
                          "drift_distances": dict(zip(SENSORS, np.round(drift_distances(later_normal), 2).tolist()))},
              "channel_shift_by_segment": {
                  "anomalous_files": channel_shift_by_segment(data),
                  # the same rows of the anomaly-free parts, "anomaly" standing for the typical span
                  "anomaly_free_parts": channel_shift_by_segment(
                      [(values, ((np.arange(len(values)) >= span[0]) & (np.arange(len(values)) < span[1])).astype(int))
                       for values in later_normal])}}
    return write_report("skab", result, json_path, markdown(results, len(files)), {
        "f1_far": lambda ax: _plot(ax, results)})


def fitted(name: str, factory, values: np.ndarray, labels: np.ndarray, window: int, seed: int):
    """One file (or anomaly-free part) → (detector fitted on its first 400 rows, train windows, test windows,
    the detector's SKAB threshold)."""
    torch.manual_seed(seed)
    train, test = file_windows(values, labels, window)
    detector = factory().fit(train)
    return detector, train, test, threshold_for(name, detector.score(train))


def ratio(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) scores on one scale across files: ÷ the file's threshold. A threshold of 0 (every training score 0,
    a collapsed model) counts as 1e-12, so its ratios stay on the same scale as every other file's."""
    return scores / max(threshold, 1e-12)


def confusion(flags: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(4,) int64 tp, fp, fn, tn of (n,) bool flags against (n,) bool truth."""
    return np.array([np.sum(flags & truth), np.sum(flags & ~truth), np.sum(~flags & truth),
                     np.sum(~flags & ~truth)], dtype=np.int64)


def far_f1(flags: np.ndarray, truth: np.ndarray) -> dict:
    """{"far", "f1"} of (n,) bool flags against (n,) bool truth."""
    metrics = confusion_metrics(*confusion(flags, truth).tolist())
    return {"far": metrics["far"], "f1": metrics["f1"]}


def markdown(results: dict, n_files: int) -> str:
    lines = [f"SKAB outlier detection, {n_files} files, pooled confusion matrix (FAR, MAR in %)", "",
             "| model | F1 | FAR % | MAR % | FAR % before / after the anomaly's onset | the anomaly-free run at the "
             "same rows: before / during / after | AUROC | VUS-PR | events found "
             "| alarms on an event | delay (s) | CARE "
             f"| FAR % at a {BUDGET:.0%} budget (F1) | the same, shift-corrected | the same, calibrated in the file | "
             "F1, FAR % counted as the leaderboard Conv-AE | source |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in sorted(results.items(), key=lambda kv: -np.nan_to_num(kv[1]["f1"])):
        conv_ae = m.get("counted_as_the_leaderboard_conv_ae", {})
        control = m.get("far_by_position_anomaly_free", {})
        lines.append(f"| {name} | {fmt(m['f1'], 2)} | {fmt(m['far'], percent=True)} | {fmt(m['mar'], percent=True)} "
                     f"| {fmt(m.get('far_before_anomaly'), percent=True)} / "
                     f"{fmt(m.get('far_after_anomaly_onset'), percent=True)} "
                     f"| {' / '.join(fmt(control.get(k), percent=True) for k in ('before', 'span', 'after'))} "
                     f"| {fmt(m['auroc'])} | {fmt(m.get('vus_pr'))} | {fmt(m.get('interval_recall'), 2)} "
                     f"| {fmt(m.get('interval_precision'), 2)} "
                     f"| {fmt(60 * m['detection_delay_min'] if m.get('detection_delay_min') is not None else None, 0)} "
                     f"| {fmt(m.get('care'))} | {fmt(m.get('budget_far'), percent=True)} ({fmt(m.get('budget_f1'), 2)}) "
                     f"| {fmt(m.get('budget_far_shift_corrected'), percent=True)} "
                     f"({fmt(m.get('budget_f1_shift_corrected'), 2)}) "
                     f"| {fmt(m.get('budget_far_in_file'), percent=True)} ({fmt(m.get('budget_f1_in_file'), 2)}) "
                     f"| {fmt(conv_ae.get('f1'), 2)}, {fmt(conv_ae.get('far'), percent=True)} | lstmad |")
    for name, (f1, far, mar) in LEADERBOARD.items():
        lines.append(f"| {name} | {f1:.2f} | {far:.2f} | {mar:.2f} |" + " – |" * 12 + " SKAB leaderboard |")
    return "\n".join(lines) + "\n"


def _plot(ax, results: dict) -> None:
    for name, m in results.items():
        ax.scatter(100 * m["far"], m["f1"], label=f"{name} (lstmad)")
    for name, (f1, far, _) in LEADERBOARD.items():
        ax.scatter(far, f1, marker="x", color="grey")
        ax.annotate(name, (far, f1), fontsize=7, color="grey")
    ax.axhline(0.8, ls=":", color="k")
    ax.axvline(20, ls=":", color="k")
    ax.set_xlabel("FAR %")
    ax.set_ylabel("F1")
    ax.set_title("SKAB: F1 against false-alarm rate (grey: published leaderboard)")
    ax.legend(fontsize=7)
