"""Evaluation metrics of per-timestamp scores against labels, returned as plain dicts."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def score_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, PR-AUC (average precision), precision, recall, F1 and alarm rate; labels (n,) in {0, 1}.

    Rows with unknown labels (< 0) are ignored. AUROC and PR-AUC are NaN when only one class is present.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    known = labels >= 0
    labels, scores = labels[known].astype(int), scores[known]
    flags = scores > threshold
    tp = int(np.sum(flags & (labels == 1)))
    fp = int(np.sum(flags & (labels == 0)))
    fn = int(np.sum(~flags & (labels == 1)))
    tn = int(labels.size - tp - fp - fn)
    both_classes = labels.size > 0 and 0 < labels.sum() < labels.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    events = event_metrics(labels, flags)
    return {
        "auroc": float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "far": fp / (fp + tn) if fp + tn else math.nan,
        "mar": fn / (fn + tp) if fn + tp else math.nan,
        "pa_f1": point_adjusted_f1(labels, flags),
        "event_precision": events["event_precision"],
        "event_recall": events["event_recall"],
        "alarm_rate": float(flags.mean()) if flags.size else math.nan,
        "n_points": int(labels.size),
        "n_anomalous": int(labels.sum()),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def confusion_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """SKAB's outlier metrics of a pooled confusion matrix: F1 = TP / (TP + (FN + FP)/2),
    FAR = FP / (FP + TN), MAR = FN / (FN + TP) (fractions, not percent)."""
    return {"f1": tp / (tp + (fn + fp) / 2) if tp + fn + fp else math.nan,
            "far": fp / (fp + tn) if fp + tn else math.nan,
            "mar": fn / (fn + tp) if fn + tp else math.nan}


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in a boolean array (n,)."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2]))


def point_adjusted_f1(labels: np.ndarray, flags: np.ndarray) -> float:
    """F1 after point adjustment: a true anomalous segment with any flagged point counts as fully detected."""
    labels = np.asarray(labels) == 1
    adjusted = np.asarray(flags, bool).copy()
    for start, end in _runs(labels):
        if adjusted[start:end].any():
            adjusted[start:end] = True
    tp = int(np.sum(adjusted & labels))
    fp = int(np.sum(adjusted & ~labels))
    fn = int(np.sum(~adjusted & labels))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


def event_metrics(labels: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    """Event-wise precision (share of flagged runs that overlap a true event) and recall (share of true
    events overlapped by a flagged run); NaN when there is nothing to count."""
    true_runs = _runs(np.asarray(labels) == 1)
    flag_runs = _runs(np.asarray(flags, bool))
    truth = np.asarray(labels) == 1
    flagged = np.asarray(flags, bool)
    hit_flags = sum(truth[s:e].any() for s, e in flag_runs)
    hit_events = sum(flagged[s:e].any() for s, e in true_runs)
    return {"event_precision": hit_flags / len(flag_runs) if flag_runs else math.nan,
            "event_recall": hit_events / len(true_runs) if true_runs else math.nan}
