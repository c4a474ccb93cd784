"""Input and score drift against the training reference: population stability index, two-sample KS,
alarm rate and model age."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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
    return drift_statistics(reference, values, with_ks=False)[0]


def _psi_of_sorted(x: np.ndarray, n: int, edges: list[float], proportions: list[float]) -> float:
    """PSI of one channel from its sorted non-NaN values ``x`` (n rows in all) against the reference bins
    [e_i, e_i+1) (the last closed, as numpy.histogram's)."""
    left, right = _edges_in(x.dtype, np.asarray(edges, dtype=np.float64))
    at = np.searchsorted(x, left, side="left")
    at[-1] = np.searchsorted(x, right[-1], side="right")
    q = np.maximum(np.diff(at) / max(n, 1), PSI_EPSILON)
    p = np.maximum(np.asarray(proportions, dtype=np.float64), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _edges_in(dtype: np.dtype, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``edges`` (k,) as two (k,) arrays of ``dtype`` that split a sorted array of that type where the
    float64 edges would: for side="left" (x < e) the least value ≥ e, for side="right" (x ≤ e) the greatest
    value ≤ e. NumPy's searchsorted would otherwise copy a float32 channel to float64 to compare it with
    float64 edges (8 bytes a row)."""
    if dtype == np.float64:
        return edges, edges
    with np.errstate(over="ignore"):  # an edge beyond the type's range rounds to ±inf, which splits as it
        rounded = edges.astype(dtype)
        up = np.where(rounded < edges, np.nextafter(rounded, dtype.type(np.inf)), rounded)
        down = np.where(rounded > edges, np.nextafter(rounded, dtype.type(-np.inf)), rounded)
    return up, down


# rows of a channel the KS takes at a time: its float64 temporaries stay a few MB whatever the night's length
KS_CHUNK_ROWS = 1 << 18


def _ks_of_sorted(x: np.ndarray, quantiles: list[float]) -> float:
    """Two-sample KS of one channel's sorted finite values ``x`` (n,) against the reference CDF interpolated
    between its stored ``quantiles``; 0 without values.

    At each x_i (i = 0 … n−1) the night's CDF jumps from i/n to (i+1)/n; the reference CDF is linear between
    its quantiles, so one interpolation (np.interp) gives it wherever x is not a quantile the reference holds
    several times. There (a clipped or idle channel) the reference CDF is itself a step, from the level of
    the first tied quantile to that of the last: those runs of x are taken exactly, from their ends. The
    rows are taken KS_CHUNK_ROWS at a time."""
    n = x.size
    if n == 0:
        return 0.0
    q = np.asarray(quantiles, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, q.size)
    tied, first = np.unique(q, return_index=True)
    last = q.size - 1 - np.unique(q[::-1], return_index=True)[1]
    steps = np.flatnonzero(last > first)
    exact, runs = [0.0], []
    if steps.size:
        left, right = _edges_in(x.dtype, tied[steps])
        starts, ends = np.searchsorted(x, left, side="left"), np.searchsorted(x, right, side="right")
        for j, a, b in zip(steps, starts, ends):
            if b > a:
                runs.append((a, b))
                # the run's last point is furthest above (F_night reaches b/n), its first furthest below
                exact += [b / n - levels[last[j]], levels[first[j]] - a / n]
    for start in range(0, n, KS_CHUNK_ROWS):
        stop = min(n, start + KS_CHUNK_ROWS)
        # d_i = F_ref(x_i) − i/n: above the reference by (i+1)/n − F_ref = 1/n − d_i, below it by d_i
        d = np.interp(x[start:stop], q, levels)
        d -= np.arange(start, stop, dtype=np.float64) / n
        if runs:
            keep = np.ones(stop - start, dtype=bool)
            for a, b in runs:
                keep[max(a, start) - start:max(min(b, stop) - start, 0)] = False
            d = d[keep]
        if d.size:
            exact += [1.0 / n - d.min(), d.max()]
    return float(max(exact))


def drift_statistics(reference: dict, values: np.ndarray, with_ks: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(PSI (C,), KS (C,)) of values (n, C) against a drift reference (``edges``/``proportions`` and, for KS,
    ``quantiles``; KS is 0 without them or with ``with_ks`` False): each channel sorted once, in its own
    precision (float32 night values sort in half the time of float64), channels in parallel threads (NumPy's
    sort and search release the GIL)."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    n, n_channels = values.shape
    quantiles = reference.get("quantiles") if with_ks else None

    def channel(c: int) -> tuple[float, float]:
        x = np.array(values[:, c])  # a contiguous copy of the channel, sorted in place
        if np.isnan(x).any():
            x = x[~np.isnan(x)]
        x.sort()
        psi = _psi_of_sorted(x, n, reference["edges"][c], reference["proportions"][c])
        if quantiles is None:
            return psi, 0.0
        finite = x[np.searchsorted(x, -np.inf, side="right"):np.searchsorted(x, np.inf, side="left")]
        return psi, _ks_of_sorted(finite, quantiles[c])

    # at most 4 threads: each holds a copy of its channel (and a second one while NaN are left out)
    with ThreadPoolExecutor(max_workers=max(1, min(n_channels, os.cpu_count() or 1, 4))) as pool:
        pairs = list(pool.map(channel, range(n_channels)))
    return (np.array([p for p, _ in pairs], dtype=np.float64).reshape(n_channels),
            np.array([k for _, k in pairs], dtype=np.float64).reshape(n_channels))


QUANTILES = 101


def reference_quantiles(values: np.ndarray, k: int = QUANTILES) -> list[list[float]]:
    """k evenly spaced quantiles (0 … 1) per channel of reference rows (n, C): the reference distribution
    for two-sample KS without keeping the rows."""
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, k), axis=0).T.tolist()


def score_ks(reference: dict, scores: np.ndarray) -> float:
    """Two-sample KS of (N,) scores against a model's calibration scores (``reference["score_quantiles"]`` of
    its drift reference); NaN for a model saved without them or for no scores."""
    quantiles = reference.get("score_quantiles")
    if quantiles is None or not len(scores):
        return float("nan")
    return float(ks_statistic([quantiles], np.asarray(scores)[:, None])[0])


def ks_statistic(quantiles: list[list[float]], values: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic per channel, sup |F_night − F_reference|, with the reference
    CDF interpolated between its stored quantiles; values (n, C) → (C,) in [0, 1]. Non-finite values are
    left out; a channel without finite values gets 0."""
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    out = np.zeros(values.shape[1])
    for c, q in enumerate(quantiles):
        column = values[:, c]
        finite = column[np.isfinite(column)]  # a copy, sorted in place
        finite.sort()
        out[c] = _ks_of_sorted(finite, q)
    return out


def retrain_signal(psi: np.ndarray, alarm_rate: float, expected_alarm_rate: float, psi_threshold: float | np.ndarray,
                   drifted_channel_share: float, alarm_rate_factor: float, channels: tuple[str, ...],
                   ks: np.ndarray | None = None, ks_threshold: float = 0.0, score_ks: float = 0.0,
                   score_ks_threshold: float = 0.0, age_days: float = 0.0,
                   max_age_days: int = 0) -> tuple[bool, list[str]]:
    """Whether drift calls for retraining, and why.

    ``psi_threshold`` is one value or one per channel (C,). Weather-driven channels wander from day to day,
    so one channel over its threshold is not a signal: the data have moved when at least
    ``drifted_channel_share`` of the channels are over their PSI threshold or (with ``ks_threshold``) their
    KS threshold, when the alarm rate exceeds ``alarm_rate_factor`` × the rate expected from validation,
    when (with ``score_ks_threshold``) the night's scores stray that far from the calibration scores, or when
    (with ``max_age_days``) the champion's training data end that many days before the night.
    """
    limits = np.broadcast_to(np.asarray(psi_threshold, dtype=np.float64), psi.shape)
    psi_over = psi > limits
    ks_over = (np.asarray(ks) > ks_threshold) if ks is not None and ks_threshold > 0 else np.zeros_like(psi_over)
    drifted = [" ".join([channels[i]] + ([f"PSI {psi[i]:.2f}>{limits[i]:.2f}"] if psi_over[i] else [])
                        + ([f"KS {ks[i]:.2f}>{ks_threshold}"] if ks_over[i] else []))
               for i in np.flatnonzero(psi_over | ks_over)]
    reasons = []
    if drifted and len(drifted) >= drifted_channel_share * len(channels):
        reasons.append(f"{len(drifted)}/{len(channels)} channels drifted: {', '.join(drifted)}")
    if alarm_rate > alarm_rate_factor * expected_alarm_rate:
        reasons.append(f"alarm_rate={alarm_rate:.4f}>{alarm_rate_factor}x{expected_alarm_rate:.4f}")
    if score_ks_threshold > 0 and score_ks > score_ks_threshold:
        reasons.append(f"score KS {score_ks:.2f}>{score_ks_threshold}")
    if max_age_days > 0 and age_days > max_age_days:
        reasons.append(f"champion trained on data ending {age_days:.0f} days before (> {max_age_days})")
    return bool(reasons), reasons
