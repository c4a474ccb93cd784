"""Fault injectors checked on hand-worked series (every expected array written out), plus the guarantees the
studies rely on: rows outside an event and missing values untouched, seeded determinism, plans that respect
gaps and eligibility, and event labels that map back onto a multi-asset table."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lstmad.evaluation.injection import (
    DEFAULT_MAGNITUDES,
    FAULT_CLASSES,
    Injection,
    apply_plan,
    event_labels,
    inject,
    inject_frame,
    plan_injections,
    robust_scales,
)

NAN = np.nan
# 8 rows × 2 channels; channel 1 is missing at row 2.
SERIES = np.array([[1, 10], [2, 11], [3, NAN], [4, 13], [5, 14], [6, 15], [7, 16], [8, 17]], dtype=float)
SCALES = np.array([2.0, 0.5])


def injected(fault, channel, start, length, magnitude, seed=0):
    return inject(SERIES, Injection(fault, channel, start, length, magnitude), SCALES, np.random.default_rng(seed))


def with_channel(channel, column):
    expected = SERIES.copy()
    expected[:, channel] = column
    return expected


@pytest.mark.parametrize("fault, channel, start, length, magnitude, column", [
    # holds row 2's value
    ("stuck", 0, 3, 3, 0.0, [1, 2, 3, 3, 3, 3, 7, 8]),
    # row 2 is missing: holds the last finite value (11); row 2 itself stays missing
    ("stuck", 1, 2, 3, 0.0, [10, 11, NAN, 11, 11, 15, 16, 17]),
    # nothing before the start: holds the event's first value
    ("stuck", 0, 0, 2, 0.0, [1, 1, 3, 4, 5, 6, 7, 8]),
    # 4 scales of 2 = 8, ramped 0, 2, 4, 6, 8 over rows 2..6
    ("drift", 0, 2, 5, 4.0, [1, 2, 3, 6, 9, 12, 15, 8]),
    # 1 scale of 0.5 ramped 0, .25, .5 over rows 1..3; the missing row stays missing
    ("drift", 1, 1, 3, 1.0, [10, 11, NAN, 13.5, 14, 15, 16, 17]),
    ("drift", 0, 7, 1, 1.0, [1, 2, 3, 4, 5, 6, 7, 10]),
    # 3 scales of 0.5 = 1.5
    ("offset", 1, 1, 4, 3.0, [10, 12.5, NAN, 14.5, 15.5, 15, 16, 17]),
    ("offset", 0, 6, 2, -1.0, [1, 2, 3, 4, 5, 6, 5, 6]),
    # event 3, 4, 5, 6 has mean 4.5; deviations -1.5, -.5, .5, 1.5 doubled
    ("gain", 0, 2, 4, 1.0, [1, 2, 1.5, 3.5, 5.5, 7.5, 7, 8]),
    # event 11, NaN, 13 has finite mean 12; deviations ∓1 times 1.5
    ("gain", 1, 1, 3, 0.5, [10, 10.5, NAN, 13.5, 14, 15, 16, 17]),
    # rows 4, 5, 6 take rows 2, 3, 4
    ("lag", 0, 4, 3, 2.0, [1, 2, 3, 4, 3, 4, 5, 8]),
    # row 3 would take row 2, which is missing: the last reading, 11
    ("lag", 1, 3, 3, 1.0, [10, 11, NAN, 11, 13, 14, 16, 17]),
    # rows before the series start repeat its first row
    ("lag", 0, 0, 3, 2.0, [1, 1, 1, 4, 5, 6, 7, 8]),
])
def test_each_injector_on_a_hand_worked_series(fault, channel, start, length, magnitude, column):
    np.testing.assert_array_equal(injected(fault, channel, start, length, magnitude), with_channel(channel, column))


def test_spikes_are_plus_or_minus_magnitude_scales_on_each_row():
    out = injected("spike", 0, 2, 3, 8.0)  # 8 scales of 2 = 16
    np.testing.assert_array_equal(np.abs(out[2:5, 0] - SERIES[2:5, 0]), [16, 16, 16])
    np.testing.assert_array_equal(np.delete(out, [2, 3, 4], axis=0), np.delete(SERIES, [2, 3, 4], axis=0))
    signs = set()
    for seed in range(20):
        signs.add(float(injected("spike", 0, 3, 1, 8.0, seed)[3, 0] - 4))
    assert signs == {-16.0, 16.0}


def test_a_noise_burst_has_the_requested_spread():
    flat = np.zeros((20_000, 1))
    out = inject(flat, Injection("noise_burst", 0, 0, 20_000, 2.0), np.array([3.0]), np.random.default_rng(1))
    assert np.std(out[:, 0]) == pytest.approx(6.0, rel=0.03)
    assert abs(np.mean(out[:, 0])) < 0.15


def test_decoupling_copies_a_stretch_of_the_same_channel_outside_the_event():
    # event rows 5, 6: the only non-overlapping 2-row stretches start at rows 0..3
    sources = set()
    for seed in range(40):
        out = injected("decoupling", 0, 5, 2, 0.0, seed)
        assert out[5, 0] in (1, 2, 3, 4) and out[6, 0] == out[5, 0] + 1  # 1,2 / 2,3 / 3,4 / 4,5
        np.testing.assert_array_equal(np.delete(out, [5, 6], axis=0), np.delete(SERIES, [5, 6], axis=0))
        sources.add(out[5, 0])
    assert sources == {1, 2, 3, 4}
    # channel 1: stretches with its missing row 2 (starting at rows 1, 2) are passed over
    copied = {tuple(injected("decoupling", 1, 5, 2, 0.0, seed)[5:7, 1]) for seed in range(40)}
    assert copied == {(10, 11), (13, 14)}


def test_decoupling_on_a_longer_series_never_overlaps_its_event():
    series = np.arange(300, dtype=float)[:, None]
    for seed in range(30):
        out = inject(series, Injection("decoupling", 0, 100, 40, 0.0), np.ones(1), np.random.default_rng(seed))
        source = int(out[100, 0])
        np.testing.assert_array_equal(out[100:140, 0], np.arange(source, source + 40))
        assert source + 40 <= 100 or source >= 140


def test_decoupling_without_room_for_a_source_is_an_error():
    with pytest.raises(ValueError, match="no stretch"):
        injected("decoupling", 0, 2, 5, 0.0)


@pytest.mark.parametrize("fault", FAULT_CLASSES)
def test_rows_outside_the_event_and_missing_values_are_never_changed(fault):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(120, 3))
    values[rng.random(values.shape) < 0.1] = NAN
    before = values.copy()
    injection = Injection(fault, 1, 50, 20, DEFAULT_MAGNITUDES[fault] or 1.0)
    out = inject(values, injection, np.ones(3), np.random.default_rng(0))
    np.testing.assert_array_equal(values, before)  # the input is not modified
    outside = np.ones(values.shape, bool)
    outside[50:70, 1] = False
    np.testing.assert_array_equal(out[outside], values[outside])
    np.testing.assert_array_equal(np.isnan(out), np.isnan(values))
    if fault not in ("stuck",):  # stuck may hold a value the event already had
        assert not np.array_equal(out[50:70, 1], values[50:70, 1], equal_nan=True)


def test_plans_respect_gap_and_eligibility_and_spread_over_the_series():
    eligible = np.ones(3000, bool)
    eligible[400:900] = False
    eligible[np.arange(0, 3000, 97)] = False  # isolated ineligible rows (a NaN here and there)
    plan = plan_injections(3000, 4, per_fault=3, seed=5, min_length=10, max_length=30, gap=12,
                           eligible=eligible, channels=[1, 3])
    assert len(plan) == 3 * len(FAULT_CLASSES)
    assert sorted(p.fault for p in plan) == sorted(FAULT_CLASSES * 3)
    for earlier, later in itertools.pairwise(plan):
        assert later.start - (earlier.start + earlier.length) >= 12
    for p in plan:
        assert eligible[p.start:p.start + p.length].all()
        assert p.channel in (1, 3)
        assert p.length == 1 if p.fault == "spike" else 10 <= p.length <= 30
        assert p.magnitude == DEFAULT_MAGNITUDES[p.fault]
    quarters = {p.start * 4 // 3000 for p in plan}
    assert quarters == {0, 1, 2, 3}


def test_plans_are_deterministic_given_the_seed_and_take_magnitudes():
    kwargs = {"per_fault": 2, "min_length": 5, "max_length": 20, "faults": ("offset", "drift"),
              "magnitudes": {"offset": 5}}
    plan = plan_injections(1000, 3, seed=1, **kwargs)
    assert plan == plan_injections(1000, 3, seed=1, **kwargs)
    assert plan != plan_injections(1000, 3, seed=2, **kwargs)
    assert {(p.fault, p.magnitude) for p in plan} == {("offset", 5.0), ("drift", 4.0)}
    assert plan[0].to_dict().keys() == {"fault", "channel", "start", "length", "magnitude"}


def test_a_plan_that_does_not_fit_is_an_error():
    with pytest.raises(ValueError, match="room for only"):
        plan_injections(100, 1, per_fault=2, seed=0, min_length=20, max_length=20, faults=("offset", "drift"),
                        gap=10)


def test_apply_plan_marks_event_rows_and_is_deterministic():
    plan = [Injection("offset", 0, 1, 2, 1.0), Injection("noise_burst", 1, 4, 3, 1.0)]
    out, event_of_row = apply_plan(SERIES, plan, SCALES, seed=7)
    np.testing.assert_array_equal(event_of_row, [-1, 0, 0, -1, 1, 1, 1, -1])
    np.testing.assert_array_equal(out[:, 0], [1, 4, 5, 4, 5, 6, 7, 8])
    again, _ = apply_plan(SERIES, plan, SCALES, seed=7)
    np.testing.assert_array_equal(out, again)
    other, _ = apply_plan(SERIES, plan, SCALES, seed=8)
    assert not np.array_equal(out[4:7, 1], other[4:7, 1])
    with pytest.raises(ValueError, match="overlaps"):
        apply_plan(SERIES, plan + [Injection("offset", 1, 2, 2, 1.0)], SCALES, seed=7)


def test_robust_scales_fall_back_from_mad_to_std_to_one():
    values = np.array([[1, 5, NAN, 2], [2, 5, NAN, 2], [3, 5, NAN, 2], [4, 5, NAN, 2], [100, 9, NAN, 2]])
    # column 0: median 3, absolute deviations 2, 1, 0, 1, 97 → MAD 1; column 1: MAD 0, std 1.6
    np.testing.assert_allclose(robust_scales(values), [1.4826, 1.6, 1.0, 1.0])


def two_turbines():
    start = pd.Timestamp("2024-01-01 00:00")
    t = [start + pd.Timedelta(minutes=10 * i) for i in range(4)]
    # the turbines' rows interleaved, turbine B's out of time order
    return pd.DataFrame({
        "turbine": ["A", "B", "A", "B", "A", "B", "A", "B"],
        "time": [t[0], t[3], t[1], t[2], t[2], t[1], t[3], t[0]],
        "wind": [5.0, 8.0, 6.0, 7.0, 7.0, 6.0, 8.0, 5.0],
        "power": [100.0, 400.0, 200.0, 300.0, 300.0, 200.0, 400.0, 100.0],
    })


def test_inject_frame_and_event_labels_on_two_turbines():
    frame = two_turbines()
    plans = {"A": [Injection("offset", 1, 1, 2, 1.5)],  # A's rows at t1, t2: power + 1.5·20
             "B": [Injection("stuck", 0, 2, 2, 0.0)]}   # B's rows at t2, t3: wind held at t1's 6
    out, events = inject_frame(frame, "turbine", "time", ["wind", "power"], plans, np.array([1.0, 20.0]), seed=0)
    np.testing.assert_array_equal(out["power"], [100, 400, 230, 300, 330, 200, 400, 100])
    np.testing.assert_array_equal(out["wind"], [5, 6, 6, 6, 7, 6, 8, 5])
    np.testing.assert_array_equal(frame["wind"], two_turbines()["wind"])  # the input is not modified
    t = pd.Timestamp("2024-01-01 00:00") + pd.to_timedelta([0, 10, 20, 30], unit="min")
    assert events.to_dict("records") == [
        {"event": 0, "asset": "A", "fault": "offset", "channel": "power", "start": t[1], "end": t[2], "length": 2,
         "magnitude": 1.5},
        {"event": 1, "asset": "B", "fault": "stuck", "channel": "wind", "start": t[2], "end": t[3], "length": 2,
         "magnitude": 0.0},
    ]
    # labels for another table: a turbine without events, a time between rows, B's rows in time order
    assets = ["A", "A", "A", "A", "B", "B", "B", "B", "C", "A"]
    times = [t[0], t[1], t[2], t[3], t[0], t[1], t[2], t[3], t[2], t[1] + pd.Timedelta(minutes=5)]
    np.testing.assert_array_equal(event_labels(assets, times, events), [-1, 0, 0, -1, -1, -1, 1, 1, -1, 0])


def test_inject_frame_is_deterministic_per_asset():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"turbine": np.repeat(["A", "B"], 50), "time": np.tile(np.arange(50), 2),
                          "x": rng.normal(size=100)})
    plans = {"A": [Injection("noise_burst", 0, 10, 20, 2.0)], "B": [Injection("noise_burst", 0, 10, 20, 2.0)]}
    first, _ = inject_frame(frame, "turbine", "time", ["x"], plans, None, seed=3)
    second, _ = inject_frame(frame, "turbine", "time", ["x"], plans, None, seed=3)
    pd.testing.assert_frame_equal(first, second)
    other, _ = inject_frame(frame, "turbine", "time", ["x"], plans, None, seed=4)
    assert not first["x"].equals(other["x"])
    # the two turbines get different noise under the same seed
    assert not np.allclose(first["x"][10:30].to_numpy() - frame["x"][10:30].to_numpy(),
                           first["x"][60:80].to_numpy() - frame["x"][60:80].to_numpy())
