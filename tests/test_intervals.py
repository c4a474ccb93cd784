"""Alarm rules (merge gap, minimum duration, persistence, hysteresis) on hand-worked examples."""

import numpy as np

import pytest

from lstmad.transforms.intervals import AlarmRules, alarm_intervals

US = 1_000_000


def ts(minutes):
    return np.asarray(minutes, dtype=np.int64) * 60 * US


def test_runs_merge_across_short_gaps_and_short_runs_are_dropped():
    minutes = np.arange(30)
    flags = np.zeros(30, bool)
    flags[[2, 3, 4]] = True          # run A: 2..4
    flags[[7, 8]] = True             # run B: 7..8, gap from A = 7-4-1 = 2 minutes -> merged with A
    flags[[20]] = True               # run C: single point, gap 11 min -> separate, 1 min long -> dropped
    scores = np.where(flags, np.arange(30, dtype=float), 0.0)
    got = alarm_intervals(ts(minutes), scores, 0.5, AlarmRules(step_s=60, min_duration_s=120, merge_gap_s=180))
    assert got == [{"start_us": 2 * 60 * US, "end_us": 8 * 60 * US, "duration_s": 7 * 60, "n_points": 5,
                    "peak_score": 8.0, "mean_score": (2 + 3 + 4 + 7 + 8) / 5}]


def test_gap_longer_than_merge_gap_splits():
    flags = np.zeros(20, bool)
    flags[[1, 2, 3, 10, 11, 12]] = True
    got = alarm_intervals(ts(np.arange(20)), flags * 1.0, 0.5, AlarmRules(60, min_duration_s=60, merge_gap_s=300))
    assert [(g["start_us"] // (60 * US), g["end_us"] // (60 * US)) for g in got] == [(1, 3), (10, 12)]
    assert [g["duration_s"] for g in got] == [180, 180]


def test_no_flags_no_intervals():
    assert alarm_intervals(ts([0, 1, 2]), np.zeros(3), 0.5, AlarmRules(60, 0, 0)) == []


def test_a_short_run_carried_in_from_the_night_before_starts_the_interval():
    # minute 0 is midnight: the night before flagged minute -1 only (too short alone), tonight 0..2
    minutes = np.array([-1, 0, 1, 2])
    shares = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.5, 0.5]])
    got = alarm_intervals(ts(minutes), np.array([5.0, 1.0, 2.0, 3.0]), 0.5, AlarmRules(60, 180, 0),
                          shares=shares, new_from_us=0)
    assert len(got) == 1 and got[0]["start_us"] == -60 * US and got[0]["n_points"] == 4
    assert got[0]["peak_score"] == 5.0 and got[0]["duration_s"] == 240
    np.testing.assert_allclose(got[0]["shares"], [0.5, 0.5])


def test_intervals_wholly_in_the_carried_in_tail_belong_to_the_night_before():
    minutes = np.array([-30, -29, -28, 10, 11])  # a closed interval before midnight, a new one after
    got = alarm_intervals(ts(minutes), np.ones(5), 0.5, AlarmRules(60, min_duration_s=60, merge_gap_s=60),
                          new_from_us=0)
    assert [(g["start_us"] // (60 * US), g["end_us"] // (60 * US)) for g in got] == [(10, 11)]


def spans(found):
    return [(g["start_us"] // (60 * US), g["end_us"] // (60 * US)) for g in found]


def test_persistence_opens_an_interval_only_at_the_kth_of_n_steps_above_the_threshold():
    # threshold 1; above it at minutes 2, 5, 6, 7, 8 and 15; 2 of 3 needed to open:
    #   minute 2: 1 of (0..2]; 5: 1 of 3..5; 6: 2 of 4..6 -> opens at 6; 15 alone never opens
    scores = np.zeros(20)
    scores[[2, 5, 6, 7, 8, 15]] = 2.0
    rules = AlarmRules(60, min_duration_s=60, merge_gap_s=0, persistence=2, persistence_window=3)
    got = alarm_intervals(ts(np.arange(20)), scores, 1.0, rules)
    assert spans(got) == [(6, 8)]
    assert got[0]["n_points"] == 3 and got[0]["duration_s"] == 180
    # without persistence each of them alarms
    plain = alarm_intervals(ts(np.arange(20)), scores, 1.0, AlarmRules(60, 60, 0))
    assert spans(plain) == [(2, 2), (5, 8), (15, 15)]


def test_persistence_counts_steps_not_rows_so_a_gap_in_the_data_is_not_persistence():
    # minutes 0 and 10 above the threshold with nothing recorded between: 2 of 3 is not met at 10
    got = alarm_intervals(ts([0, 10]), np.array([2.0, 2.0]), 1.0, AlarmRules(60, 60, 600, 2, 3))
    assert got == []


def test_hysteresis_keeps_an_open_interval_alive_above_the_lower_level_but_never_opens_one():
    # threshold 1, hysteresis 0.5: minutes 3-4 above 1 open it; 5-8 at 0.7 (above 0.5) keep it open;
    # 9 at 0.2 closes it; 12-13 at 0.7 alone open nothing
    scores = np.zeros(16)
    scores[[3, 4]] = 1.5
    scores[[5, 6, 7, 8]] = 0.7
    scores[[12, 13]] = 0.7
    got = alarm_intervals(ts(np.arange(16)), scores, 1.0, AlarmRules(60, 60, 0, hysteresis=0.5))
    assert spans(got) == [(3, 8)]
    assert got[0]["n_points"] == 2 and got[0]["peak_score"] == 1.5 and got[0]["mean_score"] == 1.5
    assert spans(alarm_intervals(ts(np.arange(16)), scores, 1.0, AlarmRules(60, 60, 0))) == [(3, 4)]


def test_lower_level_rows_before_the_alarm_do_not_move_its_start():
    # 0.7 at minutes 1-2 precede the alarm at 3: the interval starts when it was raised, at 3
    scores = np.array([0.0, 0.7, 0.7, 1.5, 1.5, 0.0])
    got = alarm_intervals(ts(np.arange(6)), scores, 1.0, AlarmRules(60, 60, 0, hysteresis=0.5))
    assert spans(got) == [(3, 4)]


def test_an_interval_continued_from_the_night_before_keeps_its_start_under_persistence():
    # the night before (minutes < 0): above the threshold at -3, -2 (2 of 2 -> open at -2); tonight 0, 1
    scores = np.array([2.0, 2.0, 0.0, 2.0, 2.0])
    minutes = np.array([-3, -2, -1, 0, 1])
    rules = AlarmRules(60, min_duration_s=180, merge_gap_s=60, persistence=2, persistence_window=2)
    got = alarm_intervals(ts(minutes), scores, 1.0, rules, new_from_us=0)
    assert spans(got) == [(-2, 1)] and got[0]["duration_s"] == 240 and got[0]["n_points"] == 3


@pytest.mark.parametrize("k, n, h", [(0, 1, 1.0), (3, 2, 1.0), (1, 1, 0.0), (1, 1, 1.5)])
def test_impossible_alarm_rules_are_refused(k, n, h):
    with pytest.raises(ValueError):
        AlarmRules(60, persistence=k, persistence_window=n, hysteresis=h)


def test_rows_in_an_operating_state_are_never_interval_candidates_in_the_lake():
    import pyarrow as pa
    import pyarrow.dataset as ds

    from lstmad import names
    from lstmad.serving.intervals import interval_candidates

    rows = pa.table({names.SCORE: [2.0, 2.0, 0.7, 0.3], names.THRESHOLD: [1.0] * 4,
                     names.FLAG: [True, False, False, False],
                     names.OPERATING_STATE: [None, "curtailment", None, None]})
    # a curtailed row above the threshold (never flagged) is no candidate; 0.7 is, under hysteresis 0.5
    got = ds.dataset(rows).to_table(filter=interval_candidates(AlarmRules(60, hysteresis=0.5)))
    assert got.column(names.SCORE).to_pylist() == [2.0, 0.7]
    plain = ds.dataset(rows).to_table(filter=interval_candidates(AlarmRules(60)))
    assert plain.column(names.SCORE).to_pylist() == [2.0]
