"""Alarm thresholds derived from scores of normal (validation) windows."""

from __future__ import annotations

import numpy as np


def percentile_threshold(scores: np.ndarray, percentile: float = 95.0) -> float:
    """The ``percentile``-th percentile of the scores (linear interpolation, as numpy.percentile)."""
    scores = _finite(scores)
    return float(np.percentile(scores, percentile))


def mean_std_threshold(scores: np.ndarray, k: float = 3.0) -> float:
    """mean + k·σ of the scores (population standard deviation)."""
    scores = _finite(scores)
    return float(scores.mean() + k * scores.std())


def threshold_from_rule(rule: str, scores: np.ndarray, percentile: float = 95.0, k: float = 3.0) -> float:
    if rule == "percentile":
        return percentile_threshold(scores, percentile)
    if rule == "mean_std":
        return mean_std_threshold(scores, k)
    raise ValueError(f"unknown threshold rule {rule!r}")


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite scores to derive a threshold from")
    return scores
