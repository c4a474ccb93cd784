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
    both_classes = labels.size > 0 and 0 < labels.sum() < labels.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "auroc": float(roc_auc_score(labels, scores)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "alarm_rate": float(flags.mean()) if flags.size else math.nan,
        "n_points": int(labels.size),
        "n_anomalous": int(labels.sum()),
    }
