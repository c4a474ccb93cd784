"""Pure NumPy transforms of one asset's regular series: segmentation, centered smoothing, normalisation."""

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
    """Per-channel normalisation fitted on the training range: x' = (x − offset) / scale."""

    method: str
    channels: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    fitted_on: str = ""

    @property
    def stats_id(self) -> str:
        """Content hash: blocks and models that share it were normalised identically."""
        payload = json.dumps([self.method, self.channels, self.offset, self.scale]).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Normalise (n, C) values in this channel order; returns float64 (n, C)."""
        return (values - np.asarray(self.offset)) / np.asarray(self.scale)

    def invert(self, values: np.ndarray) -> np.ndarray:
        """Undo ``apply``: (n, C) normalised → (n, C) in source units."""
        return values * np.asarray(self.scale) + np.asarray(self.offset)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "stats_id": self.stats_id}

    @classmethod
    def from_dict(cls, data: dict) -> "NormalisationStats":
        return cls(method=data["method"], channels=tuple(data["channels"]), offset=tuple(data["offset"]),
                   scale=tuple(data["scale"]), fitted_on=data.get("fitted_on", ""))


def fit_normalisation(method: str, channels: tuple[str, ...], count: np.ndarray, total: np.ndarray,
                      total_sq: np.ndarray, minimum: np.ndarray, maximum: np.ndarray,
                      fitted_on: str = "") -> NormalisationStats:
    """Normalisation from per-channel sufficient statistics (each (C,)), so Spark can aggregate them.

    A constant channel (zero spread) gets scale 1 so it normalises to a constant instead of dividing by 0.
    """
    if method == "zscore":
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        offset, scale = mean, std
    elif method == "minmax":
        offset, scale = minimum, maximum - minimum
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    scale = np.where(scale > 1e-12, scale, 1.0)
    return NormalisationStats(method, tuple(channels), tuple(float(v) for v in offset),
                              tuple(float(v) for v in scale), fitted_on)
