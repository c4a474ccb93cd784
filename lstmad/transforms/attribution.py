"""Channel attribution: how much each channel contributes to a window's anomaly score, as shares that sum
to 1 per window. Pure NumPy; the detectors pick the decomposition that matches their score."""

from __future__ import annotations

import numpy as np


def shares(contributions: np.ndarray) -> np.ndarray:
    """(N, C) non-negative contributions → (N, C) shares summing to 1 per row; a row of zeros (a perfect
    fit) gets equal shares, so every flagged window still names its channels."""
    contributions = np.abs(np.asarray(contributions, dtype=np.float64))
    total = contributions.sum(axis=1, keepdims=True)
    equal = np.full_like(contributions, 1.0 / max(contributions.shape[1], 1))
    return np.where(total > 0, contributions / np.where(total > 0, total, 1.0), equal)


def mahalanobis_terms(centred: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Per-channel terms of (e − μ)ᵀ Σ⁻¹ (e − μ): term_c = |(e − μ)_c · (Σ⁻¹ (e − μ))_c|, (..., C).

    The signed terms sum to the distance; cross terms can make one negative, so the magnitude is what is
    shared out (a channel that moves against its usual correlation still counts as contributing).
    """
    return np.abs(centred * (centred @ precision.T))


def top_channels(share_rows: np.ndarray, channels: tuple[str, ...], k: int) -> list[list[tuple[str, float]]]:
    """For each row of (N, C) shares, the ``k`` largest as (channel, share), largest first."""
    order = np.argsort(-share_rows, axis=1, kind="stable")[:, :k]
    return [[(channels[j], float(row[j])) for j in idx] for row, idx in zip(share_rows, order)]
