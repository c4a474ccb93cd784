"""Alarm thresholds derived from scores of normal windows (the rules lstmad.evaluation.calibration applies)."""

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


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite scores to derive a threshold from")
    return scores


def skab_threshold(train_scores: np.ndarray, quantile: float = 0.99, factor: float = 1.5) -> float:
    """The SKAB leaderboard rule: UCL = quantile(training scores, Q) × factor."""
    return float(np.quantile(_finite(train_scores), quantile) * factor)


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, initial_level: float = 0.98) -> float:
    """Peaks-over-threshold (Siffer et al. 2017, SPOT's initialisation): fit a generalised Pareto
    distribution to the excesses over the ``initial_level`` quantile and return the score exceeded with
    probability ``risk``: z = t + σ/γ·((risk·n/N_t)^(−γ) − 1), or t − σ·ln(risk·n/N_t) when γ = 0.
    """
    from scipy.stats import genpareto

    scores = _finite(scores)
    t = float(np.quantile(scores, initial_level))
    excesses = scores[scores > t] - t
    if excesses.size < 10:
        raise ValueError(f"peaks-over-threshold needs at least 10 excesses over the {initial_level} quantile, "
                         f"got {excesses.size}")
    gamma, _, sigma = genpareto.fit(excesses, floc=0.0)
    ratio = risk * scores.size / excesses.size
    if abs(gamma) < 1e-9:
        return float(t - sigma * np.log(ratio))
    return float(t + sigma / gamma * (ratio ** (-gamma) - 1.0))


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 on labelled data: an oracle for reports, never a default."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels)
    known = labels >= 0
    precision, recall, thresholds = precision_recall_curve(labels[known], np.asarray(scores)[known])
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    # precision_recall_curve flags score >= t; our flags are score > t, so step just below t
    return float(np.nextafter(thresholds[int(np.argmax(f1))], -np.inf))
