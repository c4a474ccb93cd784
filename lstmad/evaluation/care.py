"""The CARE score of Gück et al. 2024 ("CARE to Compare", Data 9(12):138): Coverage, Accuracy, Reliability and
Earliness of early fault detection, adapted to lstmad's evaluation ranges.

Events, per asset: every labelled run of anomalous rows is an anomaly event; every UTC day of the asset with
no anomalous row is a normal event. For each:
- Coverage (anomaly events): pointwise F-beta (β 0.5) over the event and as many rows before it (not reaching
  into the previous event; the rows before are normal: flags there are false positives);
- Earliness (anomaly events): the weighted share of the event's rows flagged, weights 1 over the first
  quarter of the event, then falling linearly to 0 at its end (the paper's weighted score);
- Accuracy (normal events): the share of rows not flagged;
- detected: the criticality counter (+1 per flagged row, −1 per unflagged row, never below 0; the paper's
  Algorithm 1) reaches ``criticality_steps`` within the event (for an anomaly event, by its end);
- Reliability: event-wise F-beta (β 0.5) of detected against anomaly events.
CARE = (Coverage + Earliness + 2·Accuracy + Reliability) / 5, averaged over events; 0 when no anomaly event is
detected, and the mean Accuracy when that is at most 0.5 (worse than guessing).
"""

from __future__ import annotations

import math

import numpy as np

from lstmad.dates import DAY_US
from lstmad.evaluation.metrics import runs_of_true

BETA = 0.5
WEIGHTS = {"coverage": 1.0, "earliness": 1.0, "accuracy": 2.0, "reliability": 1.0}


def criticality(flags: np.ndarray) -> np.ndarray:
    """(n,) the criticality counter over boolean flags (n,): +1 per flag, −1 per unflagged row, floor 0."""
    out = np.zeros(len(flags), dtype=np.int64)
    level = 0
    for i, flagged in enumerate(np.asarray(flags, bool)):
        level = level + 1 if flagged else max(0, level - 1)
        out[i] = level
    return out


def earliness_weights(n: int) -> np.ndarray:
    """(n,) weights of an event's rows: 1 over the first quarter, then linear down to 0 at the end."""
    position = np.arange(n) / max(n, 1)
    return np.where(position < 0.25, 1.0, np.clip((1.0 - position) / 0.75, 0.0, 1.0))


def f_beta(tp: int, fp: int, fn: int, beta: float = BETA) -> float:
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    return (1 + b2) * tp / denominator if denominator else 0.0


def care_score(timestamps_us: np.ndarray, assets: np.ndarray, labels: np.ndarray, flags: np.ndarray,
               criticality_steps: int) -> dict[str, float]:
    """{"care", "coverage", "earliness", "accuracy", "reliability", "anomaly_events", "normal_events"} of
    per-row flags (n,) against labels (n,) in {0, 1} (−1 unknown: left out) on ``assets`` at ``timestamps_us``."""
    timestamps_us, assets = np.asarray(timestamps_us, np.int64), np.asarray(assets, dtype=object)
    labels, flags = np.asarray(labels), np.asarray(flags, bool)
    coverage, earliness, accuracy, truth, detected = [], [], [], [], []
    for asset in np.unique(assets):
        mine = np.flatnonzero((assets == asset) & (labels >= 0))
        mine = mine[np.argsort(timestamps_us[mine], kind="stable")]
        times, anomalous, flagged = timestamps_us[mine], labels[mine] == 1, flags[mine]
        counter = criticality(flagged)
        previous_end = 0
        for start, end in runs_of_true(anomalous):
            before = max(previous_end, start - (end - start))  # normal rows only: never the event before
            previous_end = end
            frame_truth, frame_flags = anomalous[before:end], flagged[before:end]
            tp = int(np.sum(frame_truth & frame_flags))
            coverage.append(f_beta(tp, int(np.sum(~frame_truth & frame_flags)), int(np.sum(frame_truth & ~frame_flags))))
            weights = earliness_weights(end - start)
            earliness.append(float(np.sum(weights * flagged[start:end]) / np.sum(weights)))
            truth.append(True)
            detected.append(bool(counter[start:end].max() >= criticality_steps))
        days = times // DAY_US
        for day in np.unique(days):
            rows = np.flatnonzero(days == day)
            if anomalous[rows].any():
                continue
            accuracy.append(float(1.0 - flagged[rows].mean()))
            # the counter restarts with each normal event, as each is its own data set in the paper
            truth.append(False)
            detected.append(bool(criticality(flagged[rows]).max() >= criticality_steps))
    truth_arr, detected_arr = np.asarray(truth, bool), np.asarray(detected, bool)
    reliability = f_beta(int(np.sum(truth_arr & detected_arr)), int(np.sum(~truth_arr & detected_arr)),
                         int(np.sum(truth_arr & ~detected_arr)))
    parts = {"coverage": float(np.mean(coverage)) if coverage else math.nan,
             "earliness": float(np.mean(earliness)) if earliness else math.nan,
             "accuracy": float(np.mean(accuracy)) if accuracy else math.nan,
             "reliability": reliability if truth else math.nan}
    if not coverage or not accuracy:
        care = math.nan  # CARE needs at least one anomaly event and one normal event
    elif not np.any(truth_arr & detected_arr):
        care = 0.0
    elif parts["accuracy"] <= 0.5:
        care = parts["accuracy"]
    else:
        care = sum(WEIGHTS[k] * parts[k] for k in WEIGHTS) / sum(WEIGHTS.values())
    return {"care": care, **parts, "anomaly_events": len(coverage), "normal_events": len(accuracy)}
