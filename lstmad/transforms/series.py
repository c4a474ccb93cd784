"""Pure NumPy transforms of one asset's series: regular grid with gap filling and masks, segmentation, centered
smoothing, normalisation."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np


def segment_ids(timestamps_us: np.ndarray, step_s: int) -> np.ndarray:
    """Segment number per row (0, 1, ...) of a sorted timestamp array (n,) in microseconds.

    A new segment starts wherever the distance to the previous row is not exactly one step, so every
    segment is a gap-free run on the regular grid.
    """
    if timestamps_us.size == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = np.diff(timestamps_us) != step_s * 1_000_000
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


@dataclasses.dataclass
class GridSeries:
    """One asset's series on the regular grid.

    timestamps_us (n,) grid times; values (n, C) float64 with every masked value filled (interpolated within
    its segment); observed (n, C) bool, False where the value is filled rather than measured; labels (n,) int8
    (−1 unknown); segments (n,) segment number, a new one after every gap longer than the fill limit;
    states (n,) int8 operating state (0 normal; the largest code of the bucket; an inserted step that of the
    measured step before it).
    """

    timestamps_us: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    labels: np.ndarray
    segments: np.ndarray
    states: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.timestamps_us.size)


def regular_grid(timestamps_us: np.ndarray, values: np.ndarray, labels: np.ndarray | None, step_s: int,
                 max_gap_steps: int, states: np.ndarray | None = None) -> GridSeries:
    """Put one asset's rows on the ``step_s`` grid, fill short gaps and masked values, and segment.

    timestamps_us (n,) any order, values (n, C) with NaN for masked values, labels (n,) or None.
    Rows are averaged into the step that contains them (bucket = floor(t / step)), ignoring NaN per channel;
    a label is the maximum of its bucket. Up to ``max_gap_steps`` missing steps between two rows are inserted
    and, like every NaN, linearly interpolated per channel inside the segment (ends: nearest value); longer
    gaps start a new segment. A channel with no measured value in a segment stays NaN.
    """
    step_us = step_s * 1_000_000
    values = np.asarray(values, dtype=np.float64)
    n_channels = values.shape[1]
    if timestamps_us.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return GridSeries(empty, np.zeros((0, n_channels)), np.zeros((0, n_channels), dtype=bool),
                          np.zeros(0, dtype=np.int8), empty, np.zeros(0, dtype=np.int8))
    bucket = np.floor_divide(np.asarray(timestamps_us, dtype=np.int64), step_us)
    order = np.argsort(bucket, kind="stable")
    bucket, values = bucket[order], values[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(bucket)) + 1])
    unique = bucket[starts]
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=0)
    counts = np.add.reduceat(finite.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    if labels is None:
        bucket_labels = np.full(unique.size, -1, dtype=np.int8)
    else:
        bucket_labels = np.maximum.reduceat(np.asarray(labels, dtype=np.int8)[order], starts).astype(np.int8)

    gaps = np.diff(unique) - 1  # missing steps between consecutive rows
    filled_gap = (gaps > 0) & (gaps <= max_gap_steps)
    inserted = np.where(filled_gap, gaps, 0)
    position = np.concatenate([[0], np.cumsum(1 + inserted)])  # row index of each unique bucket on the grid
    n = int(position[-1]) + 1
    # Grid times: each measured bucket followed by its inserted steps, each one step after the previous.
    run_lengths = 1 + np.append(inserted, 0)
    grid_bucket = np.repeat(unique, run_lengths) + (np.arange(n) - np.repeat(position, run_lengths))
    grid_values = np.full((n, n_channels), np.nan)
    grid_values[position] = means
    grid_labels = np.full(n, -1, dtype=np.int8)
    grid_labels[position] = bucket_labels
    breaks = np.zeros(n, dtype=bool)
    breaks[position[1:][gaps > max_gap_steps]] = True
    segments = np.cumsum(breaks).astype(np.int64)
    observed = np.isfinite(grid_values)
    filled = _interpolate_within_segments(grid_values, observed, segments)
    grid_states = np.zeros(n, dtype=np.int8)
    if states is not None:
        # an inserted step takes the state of the measured step before it: a short gap inside a curtailment
        # stays curtailment, never normal operation that could alarm
        bucket_states = np.maximum.reduceat(np.asarray(states, dtype=np.int8)[order], starts)
        grid_states = bucket_states[np.searchsorted(position, np.arange(n), side="right") - 1].astype(np.int8)
    return GridSeries(grid_bucket * step_us, filled, observed, grid_labels, segments, grid_states)


def _interpolate_within_segments(values: np.ndarray, observed: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Linear interpolation of the unobserved values of each channel inside each segment; (n, C) → (n, C)."""
    out = values.copy()
    if observed.all():
        return out
    bounds = np.flatnonzero(np.diff(segments)) + 1
    x = np.arange(values.shape[0])
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [values.shape[0]]])):
        block_observed = observed[lo:hi]
        if block_observed.all():
            continue
        for c in np.flatnonzero(~block_observed.all(axis=0)):
            known = np.flatnonzero(block_observed[:, c])
            if known.size:
                out[lo:hi, c] = np.interp(x[lo:hi], x[lo:hi][known], values[lo:hi, c][known])
    return out


def centered_moving_average(values: np.ndarray, half_width: int, segments: np.ndarray | None = None) -> np.ndarray:
    """Mean over the rows t−k … t+k of each channel, within each segment; (n, C) → (n, C) float64.

    Near a segment's ends only the rows that exist are averaged (pandas ``rolling(2k+1, center=True,
    min_periods=1)``), so no value is ever averaged across a gap.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (rows, channels), got shape {values.shape}")
    n = values.shape[0]
    if half_width == 0 or n == 0:
        return values.copy()
    segments = np.zeros(n, dtype=np.int64) if segments is None else np.asarray(segments)
    out = np.empty_like(values)
    bounds = np.flatnonzero(np.diff(segments)) + 1
    for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [n]])):
        block = values[lo:hi]
        m = hi - lo
        cumulative = np.vstack([np.zeros((1, block.shape[1])), np.cumsum(block, axis=0)])
        idx = np.arange(m)
        upper = np.minimum(idx + half_width + 1, m)
        lower = np.maximum(idx - half_width, 0)
        out[lo:hi] = (cumulative[upper] - cumulative[lower]) / (upper - lower)[:, None]
    return out


@dataclasses.dataclass(frozen=True)
class NormalisationStats:
    """Per-channel normalisation fitted on the training range: x' = (x − offset) / scale.

    ``offset``/``scale`` (C,) are global; with ``per_asset`` each asset fitted has its own (asset → (offset,
    scale)), and an asset the statistics never saw falls back to the global ones.
    """

    method: str
    channels: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    fitted_on: str = ""
    per_asset: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...] = ()

    @property
    def stats_id(self) -> str:
        """Content hash: blocks and models that share it were normalised identically."""
        payload = json.dumps([self.method, self.channels, self.offset, self.scale, self.per_asset]
                             if self.per_asset else [self.method, self.channels, self.offset, self.scale]).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    @property
    def scope(self) -> str:
        return "per_asset" if self.per_asset else "global"

    def _of(self, asset: str | None) -> tuple[np.ndarray, np.ndarray]:
        for name, offset, scale in self.per_asset:
            if name == asset:
                return np.asarray(offset), np.asarray(scale)
        return np.asarray(self.offset), np.asarray(self.scale)

    def apply(self, values: np.ndarray, asset: str | None = None) -> np.ndarray:
        """Normalise (n, C) values of ``asset`` in this channel order; returns float64 (n, C)."""
        offset, scale = self._of(asset)
        return (values - offset) / scale

    def overflow_bounds(self) -> np.ndarray:
        """(C,) raw magnitudes below which no asset's normalised value can reach float32's largest value
        (a conservative bound: |x − offset| / scale < FLT_MAX whenever |x| < FLT_MAX · scale − |offset|)."""
        limit = float(np.finfo(np.float32).max)
        pairs = [(np.asarray(self.offset), np.asarray(self.scale))] + \
            [(np.asarray(o), np.asarray(s)) for _, o, s in self.per_asset]
        return np.min([np.maximum(0.0, limit * s - np.abs(o)) for o, s in pairs], axis=0)

    def invert(self, values: np.ndarray, asset: str | None = None) -> np.ndarray:
        """Undo ``apply``: (n, C) normalised → (n, C) in source units."""
        offset, scale = self._of(asset)
        return values * scale + offset

    def to_dict(self) -> dict:
        data = {**dataclasses.asdict(self), "stats_id": self.stats_id, "scope": self.scope}
        data["per_asset"] = {name: {"offset": list(o), "scale": list(sc)} for name, o, sc in self.per_asset}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "NormalisationStats":
        per_asset = tuple((name, tuple(v["offset"]), tuple(v["scale"]))
                          for name, v in sorted((data.get("per_asset") or {}).items()))
        return cls(method=data["method"], channels=tuple(data["channels"]), offset=tuple(data["offset"]),
                   scale=tuple(data["scale"]), fitted_on=data.get("fitted_on", ""), per_asset=per_asset)


def _offset_scale(method: str, count, total, total_sq, minimum, maximum) -> tuple[np.ndarray, np.ndarray]:
    if method == "zscore":
        with np.errstate(invalid="ignore", divide="ignore"):  # a channel never observed: 0/0, replaced below
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        offset, scale = mean, std
    elif method == "minmax":
        offset, scale = minimum, maximum - minimum
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    offset = np.where(np.isfinite(offset), offset, 0.0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    return offset, scale


def fit_normalisation(method: str, channels: tuple[str, ...], count: np.ndarray, total: np.ndarray,
                      total_sq: np.ndarray, minimum: np.ndarray, maximum: np.ndarray,
                      fitted_on: str = "", per_asset: dict[str, dict[str, np.ndarray]] | None = None
                      ) -> NormalisationStats:
    """Normalisation from per-channel sufficient statistics (each (C,)), so Spark can aggregate them.

    ``per_asset`` maps an asset to its own moments (same keys) for per-asset statistics. A constant channel
    (zero spread) gets scale 1 so it normalises to a constant instead of dividing by 0; a channel never
    observed gets offset 0, scale 1.
    """
    offset, scale = _offset_scale(method, count, total, total_sq, minimum, maximum)
    assets = []
    for name, moments in sorted((per_asset or {}).items()):
        own_offset, own_scale = _offset_scale(method, **moments)
        seen = np.asarray(moments["count"]) > 0  # a channel the asset never observed: the global statistics
        assets.append((name, tuple(float(v) for v in np.where(seen, own_offset, offset)),
                       tuple(float(v) for v in np.where(seen, own_scale, scale))))
    assets = tuple(assets)
    return NormalisationStats(method, tuple(channels), tuple(float(v) for v in offset),
                              tuple(float(v) for v in scale), fitted_on, assets)


def observed_moments(values: np.ndarray, observed: np.ndarray) -> dict[str, np.ndarray]:
    """Count, sum, sum of squares, min and max per channel (each (C,)) of the observed values of (n, C)."""
    any_observed = observed.any(axis=0)
    measured = np.where(observed, values, 0.0)
    return {"count": observed.sum(axis=0).astype(np.float64), "total": measured.sum(axis=0),
            "total_sq": (measured * measured).sum(axis=0),
            "minimum": np.where(any_observed, np.min(np.where(observed, values, np.inf), axis=0, initial=np.inf), np.nan),
            "maximum": np.where(any_observed, np.max(np.where(observed, values, -np.inf), axis=0, initial=-np.inf),
                                np.nan)}


def combine_moments(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Moments of the union of the parts (each from observed_moments)."""
    return {"count": sum(p["count"] for p in parts), "total": sum(p["total"] for p in parts),
            "total_sq": sum(p["total_sq"] for p in parts),
            "minimum": np.fmin.reduce([p["minimum"] for p in parts]),
            "maximum": np.fmax.reduce([p["maximum"] for p in parts])}
