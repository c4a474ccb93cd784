"""Turning per-timestamp flags of one asset into anomaly intervals, continuing those still open when the
previous night ended."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

from lstmad.dates import MICROS

# Intervals as found, before lineage is added (the Spark interval stage returns these columns)
FOUND_SCHEMA = pa.schema([("interval_id", pa.string()), ("asset_id", pa.string()), ("start_us", pa.int64()),
                          ("end_us", pa.int64()), ("duration_s", pa.int64()), ("n_points", pa.int64()),
                          ("peak_score", pa.float64()), ("mean_score", pa.float64()),
                          ("shares", pa.list_(pa.float64()))])


def merge_flags(timestamps_us: np.ndarray, flags: np.ndarray, scores: np.ndarray, step_s: int,
                min_duration_s: int, merge_gap_s: int, shares: Optional[np.ndarray] = None,
                new_from_us: Optional[int] = None) -> list[dict]:
    """Intervals of flagged timestamps of one asset; inputs (n,) sorted by time.

    Flagged timestamps one step apart form a run; runs whose gap (from the end of one to the start of the
    next, in seconds) is at most ``merge_gap_s`` are merged; intervals shorter than ``min_duration_s`` are
    dropped. An interval covers [start, end + step): duration_s = end − start + step_s. Each dict has
    start_us, end_us, duration_s, n_points (flagged timestamps inside), peak_score, mean_score (of the
    flagged timestamps), and with ``shares`` ((n, C) channel shares of each timestamp; rows of unflagged
    ones are ignored) ``shares``: the mean share of each channel over the flagged timestamps, (C,).

    Continuation: with ``new_from_us``, timestamps before it are the flagged tail of earlier nights (carried
    in); an interval that began in that tail gets its true start, so the same interval is found whichever
    night ends it. Intervals wholly inside the tail are earlier nights' results and are left out.
    """
    timestamps_us = np.asarray(timestamps_us, dtype=np.int64)
    flags = np.asarray(flags, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.flatnonzero(flags)
    if flagged.size == 0:
        return []
    ts = timestamps_us[flagged]
    # gap between consecutive flagged timestamps, measured from the end of the earlier one's step
    gaps = np.diff(ts) - step_s * MICROS
    splits = np.flatnonzero(gaps > merge_gap_s * MICROS) + 1
    intervals = []
    for group in np.split(np.arange(flagged.size), splits):
        start, end = int(ts[group[0]]), int(ts[group[-1]])
        if new_from_us is not None and end < new_from_us:
            continue  # wholly in the carried-in tail: an earlier night's result
        duration_s = (end - start) // MICROS + step_s
        if duration_s < min_duration_s:
            continue
        group_scores = scores[flagged[group]]
        interval = {"start_us": start, "end_us": end, "duration_s": int(duration_s), "n_points": int(group.size),
                    "peak_score": float(group_scores.max()), "mean_score": float(group_scores.mean())}
        if shares is not None:
            interval["shares"] = np.asarray(shares, dtype=np.float64)[flagged[group]].mean(axis=0)
        intervals.append(interval)
    return intervals
