"""Frozen channels: a sensor that stops changing (a stuck value, a frozen PLC register, a replayed reading).

A model of the channels' relations cannot see a stuck driver (it predicts from it and never scores it), nor a
channel stuck at a value it often takes. What it can see is how long each channel sat exactly still in the
training data: a temperature that never held still for a whole window in a year of training and now does is
as rare as the training data can say. That rarity becomes a p-value, and the p-value a score on the
detector's own scale (the score its validation windows reach that rarely), so the window's score is the
larger of the two and one threshold, calibrated as before, serves both. Channels that often sit still (a
pitch angle at fine pitch, a nacelle that does not yaw) keep large p-values and add nothing.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from lstmad.transforms.blocks import Windows, per_window

log = logging.getLogger("lstmad")

# |Δ| at or below this times max(1, |value|) counts as unchanged (an absolute 1e-6 below |value| = 1): float32
# rounding of a smoothed constant, not a real change, which normalised sensor readings make far larger (a
# 0.1 °C step is 0.01).
UNCHANGED_TOLERANCE = 1e-6
# Runs shorter than this share of the window (and than 3 rows) are no evidence whatever the training saw: a
# reading repeated once or twice is a historian's deadband or a forward-filled hiccup, not a stuck sensor.
# (So windows of 3 rows or fewer, whose runs reach 2 at most, never show stillness.)
MIN_RUN_SHARE, MIN_RUN = 0.25, 3
# Stillness with a p-value from here up is no evidence (the window keeps the detector's own score).
ACTIVE_BELOW = 0.05
# the score map: quantiles of the validation scores on this many log-spaced tail probabilities
_GRID = 64


def trailing_runs(windows: Windows) -> np.ndarray:
    """(N, C) int: per window and channel, how many of the window's last rows equal the row before them, up to
    W−1 (W−1: the channel did not change over the whole window)."""
    series = windows.series.numpy()
    n_rows, n_channels = series.shape
    out = np.zeros((len(windows), n_channels), dtype=np.int64)
    if len(windows) == 0:
        return out
    ends = windows.starts + windows.window - 1
    index = np.arange(n_rows, dtype=np.int32)
    # one channel at a time: a night's series is millions of rows, so (R,)-sized temporaries, never (R, C)
    for c in range(n_channels):
        values = series[:, c]
        changed = np.ones(n_rows, dtype=bool)
        # written as "not unchanged" so that NaN counts as a change
        changed[1:] = ~(np.abs(values[1:] - values[:-1]) <= UNCHANGED_TOLERANCE * np.maximum(1.0, np.abs(values[1:])))
        # the last row at or before each row that changed (or row 0): the run is the distance to it
        last_change = np.maximum.accumulate(np.where(changed, index, 0))
        out[:, c] = np.minimum(ends - last_change[ends], windows.window - 1)
    return out


class FrozenChannels:
    """fit(reference runs (n, C), window) → self; p_values(runs (N, C)) → (N,); then map_to(validation scores)
    → self; floor(runs) → (N,) the score a window's stillness alone is worth on the detector's scale.

    p-value of a window: the smallest over channels of (1 + training windows at least as still) / (1 + n),
    times C (Bonferroni: any one of C channels may freeze), at most 1; runs shorter than shortest_run() count
    as no stillness (p = 1).
    """

    def fit(self, runs: np.ndarray, window: int) -> "FrozenChannels":
        """Learn from the (n, C) trailing runs of the reference windows."""
        self.window_, self.n_ = int(window), 0
        self.at_least_ = np.zeros((np.asarray(runs).shape[1], self.window_), dtype=np.int64)
        return self.add(runs)

    def add(self, runs: np.ndarray) -> "FrozenChannels":
        """Add more reference windows' (n, C) trailing runs (a reference read file by file)."""
        runs = np.minimum(np.asarray(runs, dtype=np.int64), self.window_ - 1)
        # at_least_[c, r]: reference windows whose channel c was still for at least r rows
        counts = np.stack([np.bincount(runs[:, c], minlength=self.window_) for c in range(runs.shape[1])])
        self.at_least_ = self.at_least_ + np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
        self.n_ += int(runs.shape[0])
        return self

    def shortest_run(self) -> int:
        """Runs shorter than this are no evidence (p-value 1)."""
        return max(MIN_RUN, int(np.ceil(MIN_RUN_SHARE * self.window_)))

    def _as_still(self, runs: np.ndarray) -> np.ndarray:
        """(N, C) reference windows at least as still as each window's channel (runs shorter than
        shortest_run() count as 0 rows: every reference window)."""
        runs = np.minimum(np.asarray(runs, dtype=np.int64), self.window_ - 1)
        runs = np.where(runs >= self.shortest_run(), runs, 0)
        return np.take_along_axis(self.at_least_.T, runs, axis=0)

    def p_values(self, runs: np.ndarray) -> np.ndarray:
        runs = np.asarray(runs)
        if runs.size == 0:
            return np.ones(runs.shape[0])
        p = (1.0 + self._as_still(runs)) / (1.0 + self.n_)
        return np.minimum(1.0, self.at_least_.shape[0] * p.min(axis=1))

    def frozen_channel(self, runs: np.ndarray) -> np.ndarray:
        """(N,) the channel of each window whose stillness is rarest (the one its p-value comes from)."""
        return np.argmin(self._as_still(runs), axis=1)

    def map_to(self, scores: np.ndarray) -> "FrozenChannels":
        """Learn the detector's score at each tail probability p < ACTIVE_BELOW from its (n_v,) validation
        scores: their quantiles down to p = k/n_v (k = max(10, 1 % of n_v)), below that an exponential tail
        fitted to the k largest (peaks over threshold with shape 0), so a p-value smaller than any the
        validation windows can show still maps to a larger score."""
        scores = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
        if scores.size < 2:
            raise ValueError(f"need at least 2 finite validation scores to map stillness onto, got {scores.size}")
        k = min(max(10, int(np.ceil(0.01 * scores.size))), scores.size - 1)
        self.tail_p_ = k / scores.size
        self.grid_p_ = np.geomspace(self.tail_p_, ACTIVE_BELOW, _GRID) if self.tail_p_ < ACTIVE_BELOW else np.zeros(0)
        self.grid_scores_ = np.quantile(scores, 1.0 - self.grid_p_) if self.grid_p_.size else np.zeros(0)
        # the tail starts where the quantiles end (no step down between them)
        self.tail_start_ = float(self.grid_scores_[0]) if self.grid_p_.size else float(scores[-k - 1])
        self.tail_scale_ = max(float(np.mean(scores[-k:] - self.tail_start_)), 1e-12)
        return self

    def scores_of(self, p: np.ndarray) -> np.ndarray:
        """(N,) tail probabilities → the detector's scores that rare (−inf from ACTIVE_BELOW up: stillness
        that common is no evidence)."""
        p = np.asarray(p, dtype=np.float64)
        out = np.full(p.shape, -np.inf)
        inside = (p >= self.tail_p_) & (p < ACTIVE_BELOW)
        if inside.any():  # grid_p_ rises, grid_scores_ fall: interpolate in log p
            out[inside] = np.interp(np.log(p[inside]), np.log(self.grid_p_), self.grid_scores_)
        below = (p < self.tail_p_) & (p < ACTIVE_BELOW)
        out[below] = self.tail_start_ + self.tail_scale_ * np.log(self.tail_p_ / p[below])
        return out

    def floor(self, windows: Windows, runs: Optional[np.ndarray] = None) -> np.ndarray:
        """(N,) the score each window's stillness is worth (−inf: not rare)."""
        return self.scores_of(self.p_values(trailing_runs(windows) if runs is None else runs))

    def to_dict(self) -> dict:
        return {"window": self.window_, "n": self.n_, "at_least": self.at_least_.tolist(),
                "tail_p": self.tail_p_, "tail_start": self.tail_start_, "tail_scale": self.tail_scale_,
                "grid_p": self.grid_p_.tolist(), "grid_scores": self.grid_scores_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "FrozenChannels":
        frozen = cls()
        frozen.window_, frozen.n_ = int(data["window"]), int(data["n"])
        frozen.at_least_ = np.asarray(data["at_least"], dtype=np.int64)
        frozen.tail_p_, frozen.tail_start_, frozen.tail_scale_ = data["tail_p"], data["tail_start"], data["tail_scale"]
        frozen.grid_p_, frozen.grid_scores_ = np.asarray(data["grid_p"]), np.asarray(data["grid_scores"])
        return frozen


class StillnessFloor:
    """For a detector with ``params.frozen_channels`` and ``window_``: fit FrozenChannels beside its error
    model, floor its scores, and attribute a window whose stillness set its score to the still channel.
    Fitted state: ``frozen_`` (None when off)."""

    def fit_stillness(self, reference: "Windows | FrozenChannels | None", validation: Windows, scores: np.ndarray
                      ) -> np.ndarray:
        """Learn the stillness of ``reference`` (the training windows, or a FrozenChannels already counted
        over them; None: the validation windows), map it onto the (N,) validation ``scores``; returns those
        scores floored (unchanged when the setting is off, or, with a warning, when there are too few
        validation scores to map onto)."""
        self.frozen_ = None
        if not getattr(self.params, "frozen_channels", False):
            return scores
        reference = validation if reference is None else reference
        counted = reference if isinstance(reference, FrozenChannels) else \
            FrozenChannels().fit(trailing_runs(reference), self.window_)
        if np.isfinite(scores).sum() < 2:
            log.warning("frozen_channels: %d finite validation scores, too few to map stillness onto; the check "
                        "is off for this model", int(np.isfinite(scores).sum()))
            return scores
        self.frozen_ = counted.map_to(scores)
        return np.maximum(scores, self.frozen_.floor(validation))

    def with_floor(self, scores: np.ndarray, windows: Windows) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(N,) scores raised to what each window's stillness is worth, and the (N, C) trailing runs (None
        when off)."""
        if getattr(self, "frozen_", None) is None:
            return scores, None
        runs = trailing_runs(windows)
        floor = self.frozen_.floor(windows, runs)
        scales = getattr(self, "asset_score_scales_", None)  # per-asset thresholds (ModelBundle sets them)
        if scales:
            # the floor is a value of the fleet threshold's scale, where the bundle multiplies this score by the
            # asset's scale: divided here, a stillness alarms at the same p-value on every asset
            floor = floor / per_window(scales, windows, 1.0)
        return np.maximum(scores, floor), runs

    def floored_with_shares(self, model_scores: np.ndarray, windows: Windows, selected,
                            shares_of) -> tuple[np.ndarray, np.ndarray]:
        """Detector.score_and_shares from the model's own (N,) scores: the floored scores, and the (K, C)
        shares of the K windows ``selected(scores)`` picks — ``shares_of(picked)`` (indices), except that a
        window whose stillness set its score has all of it on its stillest channel (the stuck sensor is
        the one to look at)."""
        scores, runs = self.with_floor(model_scores, windows)
        picked = np.flatnonzero(selected(scores))
        shares = shares_of(picked)
        if runs is None or picked.size == 0:
            return scores, shares
        still = scores[picked] > model_scores[picked]
        shares = shares.copy()
        shares[still] = 0.0
        shares[still, self.frozen_.frozen_channel(runs[picked][still])] = 1.0
        return scores, shares

    def stillness_state(self) -> dict:
        frozen = getattr(self, "frozen_", None)
        return {"frozen": frozen.to_dict() if frozen is not None else None}

    def restore_stillness(self, state: dict) -> None:
        self.frozen_ = FrozenChannels.from_dict(state["frozen"]) if state.get("frozen") else None
