"""Turning per-timestamp scores of one asset into anomaly intervals, as operators receive them, continuing
those still open when the previous night ended.

The alarm rules (AlarmRules), applied in time order:
- **persistence** (k of n): a timestamp above the threshold opens an interval only when at least k of the n
  steps ending at it are above the threshold (one noisy step is no alarm);
- **hysteresis**: an open interval continues while the score stays above ``hysteresis`` × threshold (≤ 1), so
  an alarm does not chatter on and off around the threshold;
- **merge gap**: an interval continues across a gap of at most ``merge_gap_s`` between such timestamps;
- **minimum duration**: intervals shorter than ``min_duration_s`` are dropped;
- **severity**: each interval's peak score over the threshold (written by the interval stage).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pyarrow as pa

from lstmad.dates import MICROS

# Intervals as found, before lineage is added (the Spark interval stage returns these columns)
FOUND_SCHEMA = pa.schema([("interval_id", pa.string()), ("asset_id", pa.string()), ("start_us", pa.int64()),
                          ("end_us", pa.int64()), ("duration_s", pa.int64()), ("n_points", pa.int64()),
                          ("peak_score", pa.float64()), ("mean_score", pa.float64()),
                          ("shares", pa.list_(pa.float64()))])


@dataclasses.dataclass(frozen=True)
class AlarmRules:
    """How scores of one asset become intervals (module docstring); by default (k = n = 1, hysteresis 1)
    only the merge gap and the minimum duration apply."""

    step_s: int
    min_duration_s: int = 600
    merge_gap_s: int = 300
    persistence: int = 1          # k: steps above the threshold among the last n that open an interval
    persistence_window: int = 1   # n
    hysteresis: float = 1.0       # an open interval continues above hysteresis × threshold

    def __post_init__(self):
        if not 1 <= self.persistence <= self.persistence_window:
            raise ValueError(f"persistence {self.persistence} of {self.persistence_window} steps: need "
                             "1 ≤ persistence ≤ persistence_window")
        if not 0 < self.hysteresis <= 1:
            raise ValueError(f"hysteresis {self.hysteresis}: need 0 < hysteresis ≤ 1 (a share of the threshold)")

    @classmethod
    def of(cls, score_config, step_s: int) -> "AlarmRules":
        """The rules of a pipeline's ``score`` section (lstmad.config.ScoreConfig) at ``step_s``."""
        s = score_config
        return cls(step_s, s.min_interval_s, s.merge_gap_s, s.persistence, s.persistence_window, s.hysteresis)

    def lookback_s(self) -> int:
        """Seconds before a night whose timestamps can still change the intervals found in it (a run too
        short to be an interval yet, plus the persistence window)."""
        return self.min_duration_s + self.merge_gap_s + self.step_s * (1 + self.persistence_window)

    def candidates(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        """(n,) bool: the timestamps an interval can contain (above hysteresis × threshold)."""
        return np.asarray(scores, dtype=np.float64) > self.hysteresis * threshold


def alarm_intervals(timestamps_us: np.ndarray, scores: np.ndarray, threshold: float, rules: AlarmRules,
                    shares: Optional[np.ndarray] = None, new_from_us: Optional[int] = None) -> list[dict]:
    """Intervals of one asset under ``rules``; inputs (n,) sorted by time (timestamps not above the
    hysteresis level may be left out: they never belong to an interval). Every timestamp given is judged by
    its score: leave out those that must never alarm (operating states).

    Timestamps above hysteresis × threshold form groups, split where the gap from the end of one step to
    the next timestamp exceeds the merge gap; a group yields one interval from its first timestamp that the
    persistence rule confirms to its last timestamp (none when it has no confirmed one). An interval covers
    [start, end + step): duration_s = end − start + step_s. Each dict has start_us, end_us, duration_s,
    n_points (timestamps inside above the threshold), peak_score, mean_score (of those), and with ``shares``
    ((n, C) channel shares, NaN rows where a timestamp has none) ``shares``: their mean over the timestamps
    inside that have them, (C,), NaN when none does.

    Continuation: with ``new_from_us``, timestamps before it are the tail of earlier nights (carried in);
    an interval that began there keeps its true start, so the same interval is found whichever night ends
    it. Intervals wholly inside the tail are earlier nights' results and are left out.
    """
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    above = scores > threshold
    kept = np.flatnonzero(rules.candidates(scores, threshold))  # hysteresis ≤ 1: every row above is one
    if kept.size == 0:
        return []
    ts = timestamps_us[kept]
    confirmed = above[kept]
    if rules.persistence > 1:
        # steps above the threshold in (t − n·step, t] for each candidate t
        strong = timestamps_us[above]
        window_us = rules.persistence_window * rules.step_s * MICROS
        count = np.searchsorted(strong, ts, side="right") - np.searchsorted(strong, ts - window_us, side="right")
        confirmed &= count >= rules.persistence
    gaps = np.diff(ts) - rules.step_s * MICROS  # from the end of the earlier timestamp's step
    splits = np.flatnonzero(gaps > rules.merge_gap_s * MICROS) + 1
    intervals = []
    for group in np.split(np.arange(kept.size), splits):
        opened = np.flatnonzero(confirmed[group])
        if opened.size == 0:
            continue
        group = group[opened[0]:]
        start, end = int(ts[group[0]]), int(ts[group[-1]])
        if new_from_us is not None and end < new_from_us:
            continue  # wholly in the carried-in tail: an earlier night's result
        duration_s = (end - start) // MICROS + rules.step_s
        if duration_s < rules.min_duration_s:
            continue
        inside = kept[group]
        flagged = inside[above[inside]]
        interval = {"start_us": start, "end_us": end, "duration_s": int(duration_s), "n_points": int(flagged.size),
                    "peak_score": float(scores[flagged].max()), "mean_score": float(scores[flagged].mean())}
        if shares is not None:
            rows = np.asarray(shares, dtype=np.float64)[inside]
            known = ~np.isnan(rows).any(axis=1)
            interval["shares"] = rows[known].mean(axis=0) if known.any() else np.full(rows.shape[1], np.nan)
        intervals.append(interval)
    return intervals
