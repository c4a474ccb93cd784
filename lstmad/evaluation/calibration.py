"""Alarm thresholds calibrated out of sample: a calibration slice at the end of the training range (windows the
model never trained on and early stopping never chose on) and a budget stated as operators state it.

Rules (``threshold.rule``) and what ``threshold.budget`` means for each:
- ``row_rate``: the share of normal rows allowed to alarm; the threshold is the conformal quantile of the
  calibration scores (the ⌈(n+1)(1−α)⌉-th smallest), so a new exchangeable normal row exceeds it with
  probability at most α.
- ``pot``: the same row budget for small α, extrapolated by peaks-over-threshold (a generalised Pareto tail).
- ``alarms_per_week``: false anomaly intervals per asset per week; the lowest calibration threshold whose
  intervals (as scoring forms them: the alarm rules) stay within the budget.
- ``percentile`` / ``mean_std``: the earlier rules, now on calibration scores.

With ``shift_correction`` the two row rules allow for normal operation that moves from one period to the next:
the calibration windows are cut into asset-days (longer periods when there are many), and the conformal level
is lowered until a threshold from all periods but one, applied to the one left out, alarms on the budget on
average over the periods (``shift_corrected_level``). Periods that look alike leave the level at the budget.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from lstmad.dates import MICROS
from lstmad.evaluation.thresholds import mean_std_threshold, percentile_threshold, pot_threshold
from lstmad.transforms.intervals import AlarmRules, alarm_intervals

RULES = ("percentile", "mean_std", "pot", "row_rate", "alarms_per_week")
WEEK_S = 7 * 86_400


def split_calibration(windows, share: float):
    """(windows to fit on, calibration windows): the latest ``share`` of the windows by end time are kept
    apart (none when share is 0 or fewer than 10 windows would be left to fit on)."""
    n_cal = int(round(len(windows) * share))
    if share <= 0 or n_cal < 1 or len(windows) - n_cal < 10:
        return windows, None
    order = np.argsort(windows.end_us, kind="stable")
    return windows.subset(np.sort(order[:-n_cal])), windows.subset(np.sort(order[-n_cal:]))


def conformal_threshold(scores: np.ndarray, row_rate: float) -> float:
    """The ⌈(n+1)(1−α)⌉-th smallest of n calibration scores (α = row_rate): for a new score exchangeable with
    them, P(score > threshold) ≤ α. With too few scores for α, the largest (nothing above it was seen)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if scores.size == 0:
        raise ValueError("no finite calibration scores to derive a threshold from")
    k = math.ceil((scores.size + 1) * (1.0 - row_rate))
    return float(scores[min(k, scores.size) - 1])


MAX_SHIFT_PERIODS = 48  # leave-one-out over at most this many periods: asset-days merged into longer spans beyond
MIN_SHIFT_PERIODS = 3  # fewer periods than this: no correction (two cannot tell a shift from chance)


def shift_periods(end_us: np.ndarray, assets: np.ndarray, max_periods: int = MAX_SHIFT_PERIODS) -> np.ndarray:
    """(n,) int period of each calibration window ending at ``end_us`` on ``assets``: its asset-day (UTC) while
    there are at most ``max_periods`` asset-days; beyond, each asset's consecutive days (those it has windows
    on) merged k at a time, with k just large enough to stay within max_periods; with more assets than half of
    max_periods, the fleet's days merged likewise (one period a span of days, all assets together)."""
    import pandas as pd

    day = np.asarray(end_us, dtype=np.int64) // (86_400 * MICROS)
    if day.size == 0:
        return day
    asset_index = pd.factorize(np.asarray(assets, dtype=object), use_na_sentinel=False)[0]
    pairs = pd.MultiIndex.from_arrays([asset_index, day])
    n_pairs, n_assets = len(pairs.unique()), int(asset_index.max()) + 1
    if n_pairs <= max_periods:
        return pd.factorize(pairs)[0]
    if 2 * n_assets <= max_periods:
        # each asset's d_a days in ⌈d_a / k⌉ spans: Σ ≤ n_pairs / k + assets ≤ max_periods
        k = math.ceil(n_pairs / (max_periods - n_assets))
        rank = pd.Series(day).groupby(asset_index).rank(method="dense").to_numpy(dtype=np.int64) - 1
        return pd.factorize(pd.MultiIndex.from_arrays([asset_index, rank // k]))[0]
    rank = pd.Series(day).rank(method="dense").to_numpy(dtype=np.int64) - 1
    return rank // math.ceil((rank.max() + 1) / max_periods)


def shift_corrected_level(scores: np.ndarray, periods: np.ndarray, budget: float, *, iterations: int = 20
                          ) -> float:
    """The conformal level a ≤ ``budget`` at which the threshold of every period's left-out complement (the
    ⌈(m+1)(1−a)⌉-th smallest of the other periods' m finite scores) alarms on ``budget`` of the left-out
    period's scores, on average over the (n,) ``scores`` (periods weigh by their size; bisection on log a down to
    budget ÷ 10: with few periods the left-out rates are noisy, and no correction goes beyond one order of
    magnitude). When the periods are exchangeable the average is about a, so a stays near the budget; when
    normal operation differs between them, the left-out periods alarm above it and a falls until a new period
    is expected to alarm at the budget. The budget itself with fewer than MIN_SHIFT_PERIODS periods."""
    scores, periods = np.asarray(scores, dtype=np.float64), np.asarray(periods)
    finite = np.isfinite(scores)
    scores, periods = scores[finite], periods[finite]
    labels = np.unique(periods)
    if labels.size < MIN_SHIFT_PERIODS:
        return budget
    held = [np.sort(scores[periods == p]) for p in labels]
    rest = [np.sort(scores[periods != p]) for p in labels]

    def left_out_rate(level: float) -> float:
        above = 0
        for mine, others in zip(held, rest):
            k = min(max(math.ceil((others.size + 1) * (1.0 - level)), 1), others.size)
            above += mine.size - np.searchsorted(mine, others[k - 1], side="right")
        return above / scores.size

    low, high = budget / 10, budget
    if left_out_rate(high) <= budget:
        return budget
    if left_out_rate(low) > budget:
        return low
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if left_out_rate(middle) > budget else (middle, high)
    return low


def intervals_per_asset_week(end_us: np.ndarray, assets: np.ndarray, scores: np.ndarray, threshold: float,
                             rules: AlarmRules) -> float:
    """Anomaly intervals per asset-week that scoring would form from (n,) scores under ``threshold`` and the
    alarm ``rules`` (per asset, by time; lstmad.transforms.intervals.alarm_intervals)."""
    count, weeks = 0, 0.0
    for asset in np.unique(assets):
        mine = np.flatnonzero(assets == asset)
        mine = mine[np.argsort(end_us[mine], kind="stable")]
        times, values = end_us[mine], scores[mine]
        weeks += ((times[-1] - times[0]) / MICROS + rules.step_s) / WEEK_S
        count += len(alarm_intervals(times, values, threshold, rules))
    return count / weeks if weeks > 0 else math.nan


def interval_budget_threshold(end_us: np.ndarray, assets: np.ndarray, scores: np.ndarray, budget: float,
                              rules: AlarmRules, levels: int = 400) -> float:
    """The lowest threshold, scanned down from the largest calibration score over ``levels`` quantiles, at
    which the calibration slice gives at most ``budget`` intervals per asset-week (every higher one does too)."""
    finite = np.isfinite(scores)
    candidates = np.unique(np.quantile(scores[finite], np.linspace(1.0, 0.5, levels)))[::-1]
    chosen = float(candidates[0])
    for t in candidates:
        if intervals_per_asset_week(end_us, assets, scores, t, rules) > budget:
            break
        chosen = float(t)
    return chosen


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what the calibration slice says it will cost: the row alarm rate and the
    intervals per asset-week expected on new normal data."""

    rule: str
    budget: float
    threshold: float
    n_windows: int
    expected_row_rate: float
    expected_intervals_per_asset_week: float
    description: str
    level: Optional[float] = None  # the row rules' conformal level: the budget, or lower for shifts

    def metrics(self) -> dict:
        level = {} if self.level is None else {"calibration_level": self.level}
        return {"threshold": self.threshold, "calibration_windows": self.n_windows, **level,
                "calibration_row_rate": self.expected_row_rate,
                "calibration_intervals_per_asset_week": self.expected_intervals_per_asset_week}


def calibrate(rule: str, scores: np.ndarray, end_us: np.ndarray, assets: np.ndarray, *, percentile: float = 95.0,
              budget: float = 0.01, rules: AlarmRules = AlarmRules(60), source: str = "calibration",
              shift_correction: bool = False) -> Calibration:
    """The threshold of ``rule`` from (n,) calibration scores of windows ending at ``end_us`` on ``assets``;
    intervals are counted under the alarm ``rules`` scoring applies. ``shift_correction``: the row rules at the
    shift-corrected level of the scores' asset-days (shift_corrected_level) instead of the budget."""
    scores = np.asarray(scores, dtype=np.float64)
    level, shifted = (budget if rule in ("row_rate", "pot") else None), ""
    if shift_correction and rule in ("row_rate", "pot"):
        periods = shift_periods(end_us, assets)
        n_periods = len(np.unique(periods[np.isfinite(scores)]))
        if n_periods >= MIN_SHIFT_PERIODS:
            level = shift_corrected_level(scores, periods, budget)
            shifted = f" at level {level:.3g}, corrected for shifts between {n_periods} periods"
    if rule == "percentile":
        threshold, text = percentile_threshold(scores, percentile), f"percentile {percentile:g}"
    elif rule == "mean_std":
        threshold, text = mean_std_threshold(scores), "mean + 3 std"
    elif rule == "row_rate":
        threshold, text = conformal_threshold(scores, level), f"row rate {budget:g} (conformal{shifted})"
    elif rule == "pot":
        try:
            threshold, text = pot_threshold(scores, level), f"row rate {budget:g} (peaks over threshold{shifted})"
        except ValueError:  # too few scores for a tail fit: the conformal quantile, said so
            threshold = conformal_threshold(scores, level)
            text = f"row rate {budget:g} (conformal: too few for pot{shifted})"
    elif rule == "alarms_per_week":
        threshold = interval_budget_threshold(end_us, assets, scores, budget, rules)
        text = f"{budget:g} false intervals per asset-week"
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; choose from {', '.join(RULES)}")
    finite = scores[np.isfinite(scores)]
    # What new normal rows are expected to alarm on: the promised budget for the row rules; else the share
    # of calibration scores above the threshold, at least 1/(n+1) (none above it is no promise of none ever:
    # drift compares nightly alarm rates with this, and a 0 would call any alarm drift)
    measured = float(np.mean(finite > threshold)) if finite.size else 0.0
    expected = budget if rule in ("row_rate", "pot") else max(measured, 1.0 / (finite.size + 1))
    return Calibration(rule, budget, threshold, int(scores.size), expected,
                       intervals_per_asset_week(end_us, assets, scores, threshold, rules) if scores.size else math.nan,
                       f"{text} of {source} scores", level)


def per_asset(calibration: Calibration, scores: np.ndarray, end_us: np.ndarray, assets: np.ndarray, *,
              min_windows: int, percentile: float = 95.0, rules: AlarmRules = AlarmRules(60),
              shift_correction: bool = False) -> tuple[Calibration, dict[str, float]]:
    """Each asset's own threshold, for a fleet whose assets differ (a noisier sensor, another make): every asset
    with at least ``min_windows`` of the (n,) calibration scores gets the fleet ``calibration``'s rule and budget
    on its scores alone, t_a. Returned as score scales {asset: fleet threshold ÷ t_a}: a scaled score
    (score × scale) exceeds the fleet threshold exactly when the score exceeds t_a, so one threshold, the
    intervals' severities and hysteresis keep their meaning. Assets with fewer windows, or whose t_a or the
    fleet threshold is not a positive number, keep scale 1 (the fleet threshold). Also returns the calibration
    with its expected rates measured on the scaled scores."""
    scores, assets = np.asarray(scores, dtype=np.float64), np.asarray(assets, dtype=object)
    fleet = calibration.threshold
    scales: dict[str, float] = {}
    finite = np.isfinite(scores)
    names = np.unique(assets)
    for asset in names if fleet > 0 and math.isfinite(fleet) else ():
        mine = (assets == asset) & finite
        if mine.sum() < min_windows:
            continue
        own = calibrate(calibration.rule, scores[mine], end_us[mine], assets[mine], percentile=percentile,
                        budget=calibration.budget, rules=rules, shift_correction=shift_correction).threshold
        if own > 0 and math.isfinite(own):
            scales[str(asset)] = fleet / own
    scaled = scores * score_scales(scales, assets)
    n_finite = int(finite.sum())
    if calibration.rule in ("row_rate", "pot"):
        # the budget where an asset has its own threshold; what the fleet threshold gives on the others' scores
        owned = np.isin(assets.astype(str), list(scales)) & finite
        others = finite & ~owned
        expected = (float((owned.sum() * calibration.budget + np.sum(scaled[others] > fleet)) / n_finite)
                    if n_finite else calibration.budget)
    else:
        expected = max(float(np.mean(scaled[finite] > fleet)) if n_finite else 0.0, 1.0 / (n_finite + 1))
    return dataclasses.replace(
        calibration, expected_row_rate=expected,
        expected_intervals_per_asset_week=(intervals_per_asset_week(end_us, assets, scaled, fleet, rules)
                                           if scaled.size else math.nan),
        description=f"{calibration.description}, per asset ({len(scales)} of {len(names)} assets "
                    f"with ≥ {min_windows} windows their own)"), scales


def score_scales(scales: dict[str, float], assets: np.ndarray) -> np.ndarray:
    """(n,) the scale of each of the (n,) ``assets`` (1 for an asset without one)."""
    import pandas as pd

    index, names = pd.factorize(np.asarray(assets, dtype=object))  # a missing asset (None): index −1, scale 1
    lookup = np.array([scales.get(str(a), 1.0) for a in names] + [1.0], dtype=np.float64)
    return lookup[index]
