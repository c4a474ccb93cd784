"""Interval merging on hand-worked examples."""

import numpy as np

from lstmad.transforms.intervals import merge_flags

US = 1_000_000


def ts(minutes):
    return np.asarray(minutes, dtype=np.int64) * 60 * US


def test_runs_merge_across_short_gaps_and_short_runs_are_dropped():
    minutes = np.arange(30)
    flags = np.zeros(30, bool)
    flags[[2, 3, 4]] = True          # run A: 2..4
    flags[[7, 8]] = True             # run B: 7..8, gap from A = 7-4-1 = 2 minutes -> merged with A
    flags[[20]] = True               # run C: single point, gap 11 min -> separate, 1 min long -> dropped
    scores = np.arange(30, dtype=float)
    got = merge_flags(ts(minutes), flags, scores, step_s=60, min_duration_s=120, merge_gap_s=180)
    assert got == [{"start_us": 2 * 60 * US, "end_us": 8 * 60 * US, "duration_s": 7 * 60, "n_points": 5,
                    "peak_score": 8.0, "mean_score": (2 + 3 + 4 + 7 + 8) / 5}]


def test_gap_longer_than_merge_gap_splits():
    flags = np.zeros(20, bool)
    flags[[1, 2, 3, 10, 11, 12]] = True
    got = merge_flags(ts(np.arange(20)), flags, np.ones(20), step_s=60, min_duration_s=60, merge_gap_s=300)
    assert [(g["start_us"] // (60 * US), g["end_us"] // (60 * US)) for g in got] == [(1, 3), (10, 12)]
    assert [g["duration_s"] for g in got] == [180, 180]


def test_no_flags_no_intervals():
    assert merge_flags(ts([0, 1, 2]), np.zeros(3, bool), np.zeros(3), 60, 0, 0) == []


def test_a_short_run_carried_in_from_the_night_before_starts_the_interval():
    # minute 0 is midnight: the night before flagged minute -1 only (too short alone), tonight 0..2
    minutes = np.array([-1, 0, 1, 2])
    shares = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])
    got = merge_flags(ts(minutes), np.ones(4, bool), np.array([5.0, 1.0, 2.0, 3.0]), step_s=60,
                      min_duration_s=180, merge_gap_s=0, shares=shares, new_from_us=0)
    assert len(got) == 1 and got[0]["start_us"] == -60 * US and got[0]["n_points"] == 4
    assert got[0]["peak_score"] == 5.0 and got[0]["duration_s"] == 240
    np.testing.assert_allclose(got[0]["shares"], [0.5, 0.5])


def test_intervals_wholly_in_the_carried_in_tail_belong_to_the_night_before():
    minutes = np.array([-30, -29, -28, 10, 11])  # a closed interval before midnight, a new one after
    got = merge_flags(ts(minutes), np.ones(5, bool), np.ones(5), step_s=60, min_duration_s=60, merge_gap_s=60,
                      new_from_us=0)
    assert [(g["start_us"] // (60 * US), g["end_us"] // (60 * US)) for g in got] == [(10, 11)]
