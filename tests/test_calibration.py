"""Thresholds calibrated out of sample from an operator's budget, and the event metrics of what operators
receive: checked on known distributions and hand-worked interval examples."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import norm

from lstmad.dates import MICROS
from lstmad.evaluation.calibration import (calibrate, conformal_threshold, intervals_per_asset_week, per_asset,
                                          score_scales, shift_periods, split_calibration)
from lstmad.evaluation.metrics import alarm_event_metrics
from lstmad.transforms.intervals import AlarmRules
from lstmad.transforms.blocks import Windows

STEP = 60


def test_a_row_budget_is_what_fresh_samples_of_the_same_distribution_get():
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=20_000)
    fresh = rng.normal(size=400_000)
    for rule, budget in (("row_rate", 0.01), ("row_rate", 0.05), ("pot", 0.001)):
        t = calibrate(rule, calibration, np.arange(20_000) * STEP * MICROS, np.zeros(20_000, object),
                      budget=budget).threshold
        realized = float(np.mean(fresh > t))
        assert budget / 2 <= realized <= 2 * budget, (rule, budget, realized)
        assert realized == pytest.approx(norm.sf(t), abs=0.0015)  # the same tail, computed independently


def test_per_asset_thresholds_give_each_asset_its_budget_where_the_fleet_threshold_does_not():
    # two turbines whose scores differ by a factor of 4 (exponential: P(score > t) = exp(−t / scale)), and a
    # third with too few calibration windows for its own threshold
    rng = np.random.default_rng(1)
    scale = {"quiet": 1.0, "noisy": 4.0, "new": 1.0}
    size = {"quiet": 20_000, "noisy": 20_000, "new": 50}
    assets = np.concatenate([np.full(size[a], a, dtype=object) for a in scale])
    scores = np.concatenate([rng.exponential(scale[a], size[a]) for a in scale])
    end_us = np.concatenate([np.arange(size[a]) * STEP * MICROS for a in scale])
    fleet = calibrate("row_rate", scores, end_us, assets, budget=0.05)
    calibration, scales = per_asset(fleet, scores, end_us, assets, min_windows=1000)
    assert set(scales) == {"quiet", "noisy"}  # "new" keeps the fleet threshold
    assert calibration.threshold == fleet.threshold and "per asset (2 of 3 assets" in calibration.description
    # each scale is the fleet threshold over the asset's own 95 % quantile, −scale · ln 0.05 (within sampling)
    for a in ("quiet", "noisy"):
        assert scales[a] == pytest.approx(fleet.threshold / (scale[a] * math.log(20)), rel=0.05)
    fresh = {a: rng.exponential(scale[a], 200_000) for a in ("quiet", "noisy")}
    for a, values in fresh.items():
        # the fleet threshold: about exp(−T / scale), far from the budget either way
        at_fleet = float(np.mean(values > fleet.threshold))
        assert at_fleet == pytest.approx(math.exp(-fleet.threshold / scale[a]), abs=0.003)
        on_own = float(np.mean(values * score_scales(scales, np.full(values.size, a, dtype=object)) > fleet.threshold))
        assert 0.045 <= on_own <= 0.055, (a, on_own)
    assert math.exp(-fleet.threshold / 1.0) < 0.005 and math.exp(-fleet.threshold / 4.0) > 0.09
    # an asset without a scale, or none named, is scored on the fleet's scale
    assert list(score_scales(scales, np.array(["new", None, "noisy"], dtype=object))) == [1.0, 1.0, scales["noisy"]]
    # what new normal rows expect: the budget on the two assets' 40,000 windows, the fleet threshold's rate on
    # the 50 of "new"
    above = int(np.sum(scores[assets == "new"] > fleet.threshold))
    assert calibration.expected_row_rate == pytest.approx((40_000 * 0.05 + above) / 40_050)
    # an asset whose scores are all missing keeps the fleet threshold instead of failing the training
    broken = np.concatenate([assets, np.full(2000, "broken", dtype=object)])
    _, with_broken = per_asset(fleet, np.concatenate([scores, np.full(2000, np.nan)]),
                               np.concatenate([end_us, np.arange(2000) * STEP * MICROS]), broken, min_windows=1000)
    assert with_broken == scales


def test_the_conformal_threshold_is_the_hand_counted_order_statistic():
    scores = np.arange(1.0, 20.0)  # 19 scores: ⌈(19 + 1)(1 − 0.1)⌉ = 18th smallest = 18
    assert conformal_threshold(scores, 0.1) == 18.0
    assert conformal_threshold(scores, 0.01) == 19.0  # too few scores for 1 %: the largest
    assert conformal_threshold(np.array([3.0, np.nan, 1.0, 2.0]), 0.25) == 3.0  # ⌈4 · 0.75⌉ = 3rd of [1, 2, 3]


def test_intervals_per_asset_week_counts_merged_runs_as_scoring_forms_them():
    # one asset, 7 days of 1-minute steps = exactly one asset-week; runs of 15 flagged minutes at three
    # places, two of them 3 minutes apart (merged with a 5-minute gap), and a 5-minute blip (too short)
    n = 7 * 1440
    scores = np.zeros(n)
    for start, length in ((100, 15), (118, 15), (5000, 15), (9000, 5)):
        scores[start:start + length] = 1.0
    times = np.arange(n, dtype=np.int64) * STEP * MICROS
    rate = intervals_per_asset_week(times, np.full(n, "A", object), scores, 0.5, AlarmRules(STEP, 600, 300))
    assert rate == pytest.approx(2.0)  # (100..132 merged) and 5000..5014; the blip is under 10 minutes
    # two assets over the same week: 2 + 0 intervals over 2 asset-weeks
    both = intervals_per_asset_week(np.concatenate([times, times]), np.array(["A"] * n + ["B"] * n, object),
                                    np.concatenate([scores, np.zeros(n)]), 0.5, AlarmRules(STEP, 600, 300))
    assert both == pytest.approx(1.0)


def test_an_interval_budget_gives_at_most_that_many_intervals_on_the_calibration_slice():
    rng = np.random.default_rng(3)
    n = 14 * 1440  # two weeks, one asset: AR(1) noise, so exceedances come in runs as real scores do
    noise = np.zeros(n)
    shocks = rng.normal(size=n)
    for i in range(1, n):
        noise[i] = 0.95 * noise[i - 1] + shocks[i]
    times = np.arange(n, dtype=np.int64) * STEP * MICROS
    assets = np.full(n, "A", object)
    found = calibrate("alarms_per_week", noise, times, assets, budget=1.0, rules=AlarmRules(STEP, 600, 300))
    assert found.expected_intervals_per_asset_week <= 1.0
    # not merely the largest score: it alarms, and a clearly lower threshold would break the budget
    assert found.threshold < noise.max() and found.expected_row_rate > 0
    lower = float(np.quantile(noise, 0.98))
    assert lower < found.threshold and intervals_per_asset_week(times, assets, noise, lower, AlarmRules(STEP, 600, 300)) > 1.0
    assert "1 false intervals per asset-week of calibration scores" == found.description


def test_the_calibration_slice_is_the_latest_windows_and_is_kept_apart():
    windows = Windows.from_array(np.zeros((100, 3, 1), np.float32))
    windows = dataclasses.replace(windows, end_us=np.arange(100)[::-1].copy() * MICROS)  # stored newest first
    fit, calibration = split_calibration(windows, 0.1)
    assert len(fit) == 90 and len(calibration) == 10
    assert sorted(calibration.end_us.tolist()) == list(range(90 * MICROS, 100 * MICROS, MICROS))
    assert set(fit.end_us.tolist()).isdisjoint(calibration.end_us.tolist())
    assert split_calibration(windows, 0.0)[1] is None


def test_event_metrics_of_hand_worked_intervals():
    # one asset, 60 one-minute steps; labelled events at 10..19 and 40..44; flags at 12..25 (overlaps the
    # first, starts 2 min late) and 50..59 (a false interval); the second event is missed
    n = 60
    labels, flags = np.zeros(n, int), np.zeros(n, bool)
    labels[10:20] = 1
    labels[40:45] = 1
    flags[12:26] = True
    flags[50:60] = True
    times = np.arange(n, dtype=np.int64) * STEP * MICROS
    got = alarm_event_metrics(times, np.full(n, "A", object), labels, flags * 1.0, 0.5, AlarmRules(STEP, 600, 120))
    week_share = n * STEP / (7 * 86_400)
    assert got["interval_recall"] == 0.5 and got["interval_precision"] == 0.5
    assert got["detection_delay_min"] == 2.0
    assert got["false_intervals_per_asset_week"] == pytest.approx(1 / week_share)
    assert (got["n_events"], got["n_intervals"]) == (2, 2)
    nothing = alarm_event_metrics(times, np.full(n, "A", object), np.zeros(n, int), np.zeros(n), 0.5,
                                  AlarmRules(STEP, 600, 120))
    assert math.isnan(nothing["interval_recall"]) and nothing["false_intervals_per_asset_week"] == 0.0


def test_care_of_a_hand_worked_day():
    from lstmad.evaluation.care import care_score, criticality, earliness_weights

    assert criticality(np.array([1, 1, 0, 1, 1, 1, 0, 0, 0, 0], bool)).tolist() == [1, 2, 1, 2, 3, 4, 3, 2, 1, 0]
    assert earliness_weights(8).tolist() == pytest.approx([1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    day = 1440
    # asset A: day 1 normal with 36 false flags in a row; day 2 holds an 8-minute event at 600..607, flagged
    # from its 3rd minute on (6 of 8) and nothing else flagged that day
    times = np.arange(2 * day, dtype=np.int64) * STEP * MICROS
    labels, flags = np.zeros(2 * day, int), np.zeros(2 * day, bool)
    labels[day + 600:day + 608] = 1
    flags[100:136] = True
    flags[day + 602:day + 608] = True
    got = care_score(times, np.full(2 * day, "A", object), labels, flags, criticality_steps=5)
    assert (got["anomaly_events"], got["normal_events"]) == (1, 1)
    # coverage: frame = the 8 event rows + 8 before: tp 6, fn 2, fp 0 → F0.5 = 1.25·6 / (1.25·6 + 0.25·2)
    assert got["coverage"] == pytest.approx(7.5 / 8.0)
    # flagged rows 2..7 of weights [1, 1, 1, 5/6, 4/6, 3/6, 2/6, 1/6]: (1 + 15/6) / (3 + 15/6)
    assert got["earliness"] == pytest.approx(3.5 / 5.5)
    assert got["accuracy"] == pytest.approx(1 - 36 / day)
    # both events detected (criticality 6 and 36 ≥ 5): tp 1, fp 1 → F0.5 = 1.25 / (1.25 + 1) of event-wise
    assert got["reliability"] == pytest.approx(1.25 / 2.25)
    expected = (got["coverage"] + got["earliness"] + 2 * got["accuracy"] + got["reliability"]) / 5
    assert got["care"] == pytest.approx(expected)
    missed = care_score(times, np.full(2 * day, "A", object), labels, np.zeros(2 * day, bool), 5)
    assert missed["care"] == 0.0  # no anomaly event detected


def test_out_of_fold_error_scores_keep_the_promised_alarm_rate_where_in_sample_scores_do_not():
    """A Gaussian scoring the very errors it was fitted on (the LSTM-AE's old adopt) gives scores biased low:
    their 95th percentile alarms on far more than 5 % of fresh errors. Scored out of fold it holds."""
    from lstmad.detectors.gaussian_error import GaussianErrorModel, cross_fitted_scores

    rng = np.random.default_rng(1)
    d, n = 24, 200  # few windows per dimension, as a short validation slice of a wide SCADA table has
    errors, fresh = rng.normal(size=(n, d)), rng.normal(size=(200_000, d))
    model = GaussianErrorModel().fit(errors)
    fresh_scores = model.score(fresh)
    in_sample = float(np.mean(fresh_scores > np.percentile(model.score(errors), 95)))
    out_of_fold = float(np.mean(fresh_scores > np.percentile(cross_fitted_scores(errors, np.arange(n)), 95)))
    assert in_sample > 0.10  # more than twice the promised 5 %
    assert 0.025 <= out_of_fold <= 0.10
    # (N, W, C) per-step errors: each window's score is the mean of its steps' distances under the Gaussian
    # of the other folds (8 windows, 2 folds: the halves by end time, given here newest first)
    steps = rng.normal(size=(8, 3, 2))
    got = cross_fitted_scores(steps, np.arange(8)[::-1], folds=2)
    older = GaussianErrorModel().fit(steps[4:].reshape(-1, 2))
    assert got[:4] == pytest.approx(older.score(steps[:4].reshape(-1, 2)).reshape(4, 3).mean(axis=1))


def test_the_classical_detectors_score_windows_they_did_not_fit_on():
    from lstmad.detectors import IsolationForestDetector, PCAT2QDetector

    rng = np.random.default_rng(2)
    windows = Windows.from_array(rng.normal(size=(200, 4, 3)).astype(np.float32))
    for detector in (PCAT2QDetector(), IsolationForestDetector(n_estimators=20)):
        detector.fit(windows)
        latest = np.argsort(windows.end_us, kind="stable")[-40:]
        assert detector.validation_scores_ == pytest.approx(detector.score(windows.subset(np.sort(latest))))
    pca = PCAT2QDetector().fit(windows)
    refit = PCAT2QDetector().fit(windows.subset(np.sort(np.argsort(windows.end_us, kind="stable")[:160])))
    assert pca.mean_ == pytest.approx(refit.rows(windows.subset(np.sort(np.argsort(windows.end_us)[:160]))).mean(0))


def test_a_training_that_stopped_while_still_improving_or_thinned_its_windows_says_so():
    from types import SimpleNamespace

    from lstmad.training.fitting import training_notes

    config = SimpleNamespace(model=SimpleNamespace(epochs=3))
    falling = SimpleNamespace(history_=[{"val_loss": 0.5}, {"val_loss": 0.4}, {"val_loss": 0.3}])
    notes = training_notes(falling, config, {"train_windows": 100, "subsampled_from": 1000})
    assert set(notes) == {"still_improving", "subsampled"} and "100 of 1000" in notes["subsampled"]
    stopped = SimpleNamespace(history_=[{"val_loss": 0.3}, {"val_loss": 0.4}])  # early stopping ended it
    assert training_notes(stopped, config, {"train_windows": 10, "subsampled_from": 0}) == {}


def test_the_expected_alarm_rate_is_never_zero_and_pot_falls_back_with_few_scores():
    scores = np.arange(1.0, 101.0)
    times, assets = np.arange(100) * STEP * MICROS, np.zeros(100, object)
    above_all = calibrate("row_rate", scores, times, assets, budget=0.001)  # ⌈101 · 0.999⌉ = 101 > 100: the largest
    assert above_all.threshold == 100.0 and above_all.expected_row_rate == 0.001  # the budget, not the 0 seen
    # mean + 3 std of 1..100 is 137, above every score: none seen above it, 1/(n + 1) expected
    assert calibrate("mean_std", scores, times, assets).expected_row_rate == pytest.approx(1 / 101)
    few = calibrate("pot", scores, times, assets, budget=0.01)  # 100 scores: 2 above the 98th percentile
    assert few.threshold == conformal_threshold(scores, 0.01) and "too few for pot" in few.description


def test_an_interval_budget_under_persistence_holds_and_allows_a_lower_threshold():
    # k-of-n persistence only removes or shortens intervals at any threshold, so the lowest threshold that
    # keeps the budget can only go down; the budget still holds under the rules scoring will apply
    rng = np.random.default_rng(4)
    n = 14 * 1440
    noise, shocks = np.zeros(n), rng.normal(size=n)
    for i in range(1, n):
        noise[i] = 0.9 * noise[i - 1] + shocks[i]
    times = np.arange(n, dtype=np.int64) * STEP * MICROS
    assets = np.full(n, "A", object)
    plain_rules, persistent = AlarmRules(STEP, 600, 300), AlarmRules(STEP, 600, 300, persistence=4, persistence_window=6)
    plain = calibrate("alarms_per_week", noise, times, assets, budget=1.0, rules=plain_rules)
    ruled = calibrate("alarms_per_week", noise, times, assets, budget=1.0, rules=persistent)
    assert intervals_per_asset_week(times, assets, noise, ruled.threshold, persistent) <= 1.0
    assert ruled.expected_intervals_per_asset_week <= 1.0
    assert ruled.threshold <= plain.threshold


def test_event_metrics_judge_the_intervals_the_alarm_rules_form():
    # one asset, 60 one-minute steps, one labelled event at 20..34; above the threshold: 5, 6 (a blip of two),
    # 20..34 with 27 dipping to 0.7; rules: 2 of 3 steps open an interval, hysteresis 0.5, at least 3 minutes
    n = 60
    labels, scores = np.zeros(n, int), np.zeros(n)
    labels[20:35] = 1
    scores[[5, 6]] = 2.0
    scores[20:35] = 2.0
    scores[27] = 0.7
    times = np.arange(n, dtype=np.int64) * STEP * MICROS
    rules = AlarmRules(STEP, min_duration_s=180, merge_gap_s=0, persistence=2, persistence_window=3, hysteresis=0.5)
    got = alarm_event_metrics(times, np.full(n, "A", object), labels, scores, 1.0, rules)
    # the blip opens at 6 (2 of 5..6) but lasts 1 minute from there: dropped; the event's interval opens at 21
    # (2 of 19..21) and runs through the dip (0.7 > 0.5) to 34: one interval, found one minute late
    assert (got["n_intervals"], got["interval_recall"], got["interval_precision"]) == (1, 1.0, 1.0)
    assert got["detection_delay_min"] == 1.0 and got["false_intervals_per_asset_week"] == 0.0
    plain = alarm_event_metrics(times, np.full(n, "A", object), labels, scores, 1.0, AlarmRules(STEP, 60, 0))
    assert plain["n_intervals"] == 3  # the blip, and the event split at the dip


def _shifting_days(rng, days: int, sigma: float, per_day: int = 288):
    """(scores, end_us, assets, day scales) of one asset whose normal scores are exponential with a scale that
    changes from day to day (log-normal, spread ``sigma``): P(score > t) = exp(−t / scale) within a day."""
    scales = np.exp(sigma * rng.normal(size=days))
    scores = np.concatenate([rng.exponential(s, per_day) for s in scales])
    end_us = np.arange(days * per_day) * (86_400 // per_day) * MICROS
    return scores, end_us, np.zeros(scores.size, object), scales


def _expected_rate_on_a_new_day(threshold: float, new_scales: np.ndarray) -> float:
    """E over a new day's scale of exp(−threshold / scale), over (m,) draws of the scale: the false-alarm rate
    of a day not yet seen."""
    return float(np.mean(np.exp(-threshold / new_scales)))


def test_the_shift_corrected_level_holds_the_budget_on_new_days_where_normal_operation_shifts_daily():
    # 12 calibration days whose score scale differs from day to day (spread 1 in log): the conformal quantile of
    # the pooled scores fits these 12 days, and a new day alarms above the budget on average; correcting the
    # level for what a left-out day gets brings the average new day back to the budget
    rng = np.random.default_rng(5)
    new_scales = np.exp(np.random.default_rng(99).normal(size=50_000))
    plain, corrected, levels = [], [], []
    for _ in range(200):  # the new-day rate averaged over 200 calibrations: standard error about 0.0025
        scores, end_us, assets, _ = _shifting_days(rng, 12, 1.0)
        plain.append(_expected_rate_on_a_new_day(calibrate("row_rate", scores, end_us, assets, budget=0.05).threshold,
                                                 new_scales))
        shifted = calibrate("row_rate", scores, end_us, assets, budget=0.05, shift_correction=True)
        corrected.append(_expected_rate_on_a_new_day(shifted.threshold, new_scales))
        levels.append(shifted.level)
    assert np.mean(plain) > 0.058, np.mean(plain)
    assert 0.044 <= np.mean(corrected) <= 0.058, (np.mean(plain), np.mean(corrected))
    assert np.mean(plain) - np.mean(corrected) > 0.008, (np.mean(plain), np.mean(corrected))  # paired
    assert 0.025 < np.mean(levels) < 0.045  # lowered, not to nothing
    assert "corrected for shifts between 12 periods" in shifted.description and shifted.expected_row_rate == 0.05


def test_days_that_look_alike_keep_the_budget_as_the_level():
    rng = np.random.default_rng(6)
    scores, end_us, assets, _ = _shifting_days(rng, 12, 0.0)
    shifted = calibrate("row_rate", scores, end_us, assets, budget=0.05, shift_correction=True)
    assert 0.045 <= shifted.level <= 0.05
    assert shifted.threshold == pytest.approx(-math.log(0.05), rel=0.1)  # the exponential's 95 % quantile
    # two days cannot tell a shift from chance: the budget; rules other than the row rules have no level
    two_days = calibrate("row_rate", scores[:576], end_us[:576], assets[:576], budget=0.05, shift_correction=True)
    assert two_days.level == 0.05 and "corrected" not in two_days.description
    percentile = calibrate("percentile", scores, end_us, assets, shift_correction=True)
    assert percentile.level is None and "calibration_level" not in percentile.metrics()


def test_shift_periods_are_asset_days_merged_into_spans_when_there_are_many():
    day = 86_400 * MICROS
    end_us = np.array([0, day - 1, day, 0, 5 * day], dtype=np.int64)
    assets = np.array(["a", "a", "a", "b", "b"], dtype=object)
    periods = shift_periods(end_us, assets)  # 4 asset-days: a0 (two windows), a1, b0, b5
    assert periods[0] == periods[1] and len({periods[1], periods[2], periods[3], periods[4]}) == 4
    # a third day of a: 5 asset-days of 2 assets, at most 4 periods: k = ⌈5 / (4 − 2)⌉ = 3 days a period, so
    # a's days 0–2 are one period and b's days 0 and 5 another (an asset's consecutive days are those it has)
    merged = shift_periods(np.append(end_us, 2 * day), np.append(assets, "a"), max_periods=4)
    assert list(merged) == [0, 0, 0, 1, 1, 0]
    # one stray early window and four recent days: the days are counted, not the date range; 9 asset-days,
    # at most 8 periods: k = ⌈9 / (8 − 2)⌉ = 2, so a's days 0+200, 201+202, 203 and b's 0+1, 2+3
    stray = np.array([0, 200, 201, 202, 203, 0, 1, 2, 3], dtype=np.int64) * day
    owner = np.array(["a"] * 5 + ["b"] * 4, dtype=object)
    assert list(shift_periods(stray, owner, max_periods=8)) == [0, 0, 1, 1, 2, 3, 3, 4, 4]
    # more assets than half the periods: the fleet's days, all assets together, 3 days a period
    fleet = shift_periods(np.arange(12) * day, np.arange(12).astype(object), max_periods=4)
    assert list(fleet) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
