"""Input and score drift against the training reference: population stability index and alarm rate."""

from __future__ import annotations

import numpy as np

PSI_EPSILON = 1e-4


def reference_histogram(values: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Quantile bin edges and proportions per channel of reference rows (n, C).

    Returns {"edges": C lists of bins+1 edges (outer edges ±inf), "proportions": C lists of bins shares}.
    """
    values = np.asarray(values, dtype=np.float64)
    edges, proportions = [], []
    for column in values.T:
        inner = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
        channel_edges = np.concatenate([[-np.inf], inner, [np.inf]])
        counts = np.histogram(column, channel_edges)[0]
        edges.append(channel_edges.tolist())
        proportions.append((counts / max(column.size, 1)).tolist())
    return {"edges": edges, "proportions": proportions}


def population_stability_index(reference: dict[str, list], values: np.ndarray) -> np.ndarray:
    """PSI per channel, Σ (q − p)·ln(q / p) over the reference bins; values (n, C) → (C,).

    Shares are floored at 1e-4 so an empty bin gives a large but finite index.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(values.shape[1])
    for c, (edges, p) in enumerate(zip(reference["edges"], reference["proportions"])):
        q = np.histogram(values[:, c], np.asarray(edges))[0] / max(values.shape[0], 1)
        p = np.maximum(np.asarray(p), PSI_EPSILON)
        q = np.maximum(q, PSI_EPSILON)
        out[c] = float(np.sum((q - p) * np.log(q / p)))
    return out


def retrain_signal(psi: np.ndarray, alarm_rate: float, expected_alarm_rate: float, psi_threshold: float | np.ndarray,
                   drifted_channel_share: float, alarm_rate_factor: float,
                   channels: tuple[str, ...]) -> tuple[bool, list[str]]:
    """Whether drift calls for retraining, and why.

    ``psi_threshold`` is one value or one per channel (C,). Weather-driven channels wander from day to day,
    so one channel over its threshold is not a signal: the data have moved when at least
    ``drifted_channel_share`` of the channels are over theirs, or when the alarm rate exceeds
    ``alarm_rate_factor`` × the rate expected from validation.
    """
    limits = np.broadcast_to(np.asarray(psi_threshold, dtype=np.float64), psi.shape)
    drifted = [f"{channels[i]} {psi[i]:.2f}>{limits[i]:.2f}" for i in np.flatnonzero(psi > limits)]
    reasons = []
    if drifted and len(drifted) >= drifted_channel_share * len(channels):
        reasons.append(f"{len(drifted)}/{len(channels)} channels over their PSI threshold: {', '.join(drifted)}")
    if alarm_rate > alarm_rate_factor * expected_alarm_rate:
        reasons.append(f"alarm_rate={alarm_rate:.4f}>{alarm_rate_factor}x{expected_alarm_rate:.4f}")
    return bool(reasons), reasons
