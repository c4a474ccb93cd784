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
"""

from __future__ import annotations

import dataclasses
import math

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

    def metrics(self) -> dict:
        return {"threshold": self.threshold, "calibration_windows": self.n_windows,
                "calibration_row_rate": self.expected_row_rate,
                "calibration_intervals_per_asset_week": self.expected_intervals_per_asset_week}


def calibrate(rule: str, scores: np.ndarray, end_us: np.ndarray, assets: np.ndarray, *, percentile: float = 95.0,
              budget: float = 0.01, rules: AlarmRules = AlarmRules(60), source: str = "calibration") -> Calibration:
    """The threshold of ``rule`` from (n,) calibration scores of windows ending at ``end_us`` on ``assets``;
    intervals are counted under the alarm ``rules`` scoring applies."""
    scores = np.asarray(scores, dtype=np.float64)
    if rule == "percentile":
        threshold, text = percentile_threshold(scores, percentile), f"percentile {percentile:g}"
    elif rule == "mean_std":
        threshold, text = mean_std_threshold(scores), "mean + 3 std"
    elif rule == "row_rate":
        threshold, text = conformal_threshold(scores, budget), f"row rate {budget:g} (conformal)"
    elif rule == "pot":
        try:
            threshold, text = pot_threshold(scores, budget), f"row rate {budget:g} (peaks over threshold)"
        except ValueError:  # too few scores for a tail fit: the conformal quantile, said so
            threshold, text = conformal_threshold(scores, budget), f"row rate {budget:g} (conformal: too few for pot)"
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
                       f"{text} of {source} scores")


def per_asset(calibration: Calibration, scores: np.ndarray, end_us: np.ndarray, assets: np.ndarray, *,
              min_windows: int, percentile: float = 95.0, rules: AlarmRules = AlarmRules(60)
              ) -> tuple[Calibration, dict[str, float]]:
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
                        budget=calibration.budget, rules=rules).threshold
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
