"""Smoothing and segmentation against independent NumPy/pandas references."""

import numpy as np
import pandas as pd

from lstmad.transforms.series import centered_moving_average, fit_normalisation, regular_grid, segment_ids


def naive_centered_mean(values, k, segments):
    out = np.empty_like(values, dtype=float)
    for i in range(len(values)):
        same = [j for j in range(max(0, i - k), min(len(values), i + k + 1)) if segments[j] == segments[i]]
        out[i] = values[same].mean(axis=0)
    return out


def test_centered_moving_average_matches_loop_reference():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(60, 3))
    segments = np.repeat([0, 1, 2], [25, 4, 31])
    got = centered_moving_average(values, 5, segments)
    np.testing.assert_allclose(got, naive_centered_mean(values, 5, segments), atol=1e-12)


def test_centered_moving_average_matches_pandas_rolling_within_one_segment():
    values = np.cumsum(np.random.default_rng(1).normal(size=(200, 2)), axis=0)
    expected = pd.DataFrame(values).rolling(11, center=True, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(centered_moving_average(values, 5), expected, atol=1e-9)


def test_interior_value_is_mean_of_eleven_neighbours():
    values = np.arange(30, dtype=float)[:, None] ** 2
    assert centered_moving_average(values, 5)[10, 0] == sum(i * i for i in range(5, 16)) / 11


def test_segment_ids_break_at_gaps_and_duplicates():
    us = 1_000_000
    ts = np.array([0, 60, 120, 300, 360, 360, 420]) * us
    assert segment_ids(ts, 60).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_zscore_and_minmax_from_sufficient_statistics():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    stats = fit_normalisation("zscore", ("a", "b"), np.array([3, 3]), x.sum(0), (x * x).sum(0), x.min(0), x.max(0))
    np.testing.assert_allclose(stats.offset, [3.0, 5.0])
    np.testing.assert_allclose(stats.scale, [np.std([1, 3, 5]), 1.0])  # constant channel keeps scale 1
    np.testing.assert_allclose(stats.invert(stats.apply(x)), x)
    mm = fit_normalisation("minmax", ("a", "b"), np.array([3, 3]), x.sum(0), (x * x).sum(0), x.min(0), x.max(0))
    np.testing.assert_allclose(mm.apply(x)[:, 0], [0.0, 0.5, 1.0])
    assert stats.stats_id != mm.stats_id


# ------------------------------------------------------------------------------------ regular grid


def pandas_grid(ts_s: np.ndarray, values: np.ndarray, step: int, max_gap: int):
    """Independent reference: pandas resample(step).mean(), then runs of more than max_gap empty steps cut
    segments (and are dropped), shorter ones are interpolated linearly inside their segment."""
    frame = pd.DataFrame(values, index=pd.to_datetime(ts_s, unit="s"))
    grid = frame.resample(f"{step}s").mean()
    observed = grid.notna()
    present = observed.any(axis=1).to_numpy()
    empty_run = np.zeros(len(grid), dtype=int)
    i = 0
    while i < len(grid):
        j = i
        while j < len(grid) and not present[j]:
            j += 1
        empty_run[i:j] = j - i
        i = max(j, i + 1)
    long_gap = ~present & (empty_run > max_gap)
    segment = np.cumsum(long_gap & ~np.concatenate([[False], long_gap[:-1]]))
    keep = ~long_gap
    grid, observed, segment = grid[keep], observed[keep], segment[keep]
    filled = grid.groupby(segment).transform(lambda s: s.interpolate(limit_direction="both"))
    return (grid.index.astype("int64") // 1000).to_numpy(), filled.to_numpy(), observed.to_numpy(), segment


def test_regular_grid_matches_pandas_resample_interpolate_reference():
    rng = np.random.default_rng(3)
    steps = np.concatenate([np.arange(0, 40), np.arange(42, 60), np.arange(70, 90)])  # gaps of 2 and 10
    ts_s = np.repeat(steps * 60, 2) + np.tile([5, 40], steps.size)  # two rows inside most minutes
    values = rng.normal(size=(ts_s.size, 3))
    values[rng.random(values.shape) < 0.1] = np.nan  # masked values
    order = rng.permutation(ts_s.size)  # out of order on purpose
    grid = regular_grid(ts_s[order] * 1_000_000, values[order], None, 60, max_gap_steps=3)
    ts_ref, values_ref, observed_ref, segment_ref = pandas_grid(ts_s, values, 60, 3)
    np.testing.assert_array_equal(grid.timestamps_us, ts_ref)
    np.testing.assert_allclose(grid.values, values_ref, atol=1e-12)
    np.testing.assert_array_equal(grid.observed, observed_ref)
    np.testing.assert_array_equal(np.unique(grid.segments, return_inverse=True)[1],
                                  np.unique(segment_ref, return_inverse=True)[1])
    assert grid.segments.max() == 1  # the 2-step gap is filled, the 10-step gap cuts


def test_regular_grid_labels_take_the_bucket_maximum_and_filled_rows_are_unknown():
    ts = np.array([0, 30, 60, 240]) * 1_000_000
    grid = regular_grid(ts, np.ones((4, 1)), np.array([0, 1, 0, 0], dtype=np.int8), 60, 3)
    assert grid.labels.tolist() == [1, 0, -1, -1, 0]
    assert grid.observed[:, 0].tolist() == [True, True, False, False, True]


def test_per_asset_normalisation_keeps_each_asset_and_falls_back_to_global():
    from lstmad.transforms.series import combine_moments, observed_moments

    rng = np.random.default_rng(5)
    a, b = rng.normal(10, 2, size=(500, 2)), rng.normal(-3, 0.5, size=(400, 2))
    ones = np.ones_like
    moments = {"a": observed_moments(a, ones(a, dtype=bool)), "b": observed_moments(b, ones(b, dtype=bool))}
    stats = fit_normalisation("zscore", ("x", "y"), per_asset=moments, **combine_moments(list(moments.values())))
    np.testing.assert_allclose(stats.apply(a, "a").mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(stats.apply(b, "b").std(axis=0), 1, atol=1e-12)
    both = np.vstack([a, b])
    np.testing.assert_allclose(stats.apply(both, "unseen").mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(stats.invert(stats.apply(b, "b"), "b"), b, atol=1e-12)
    from lstmad.transforms.series import NormalisationStats

    assert NormalisationStats.from_dict(json_round_trip(stats.to_dict())) == stats
    # an asset that never observed channel y in training gets the global statistics for it, not 0 and 1
    blind = {"count": np.array([500.0, 0.0]), "total": np.array([a[:, 0].sum(), 0.0]),
             "total_sq": np.array([(a[:, 0] ** 2).sum(), 0.0]), "minimum": np.array([a[:, 0].min(), np.nan]),
             "maximum": np.array([a[:, 0].max(), np.nan])}
    partial = fit_normalisation("zscore", ("x", "y"), per_asset={"blind": blind}, **combine_moments(list(moments.values())))
    assert partial.per_asset[0][1][1] == partial.offset[1] and partial.per_asset[0][2][1] == partial.scale[1]


def json_round_trip(data):
    import json

    return json.loads(json.dumps(data))


def test_operating_states_follow_their_rows_onto_the_grid_and_fill_the_steps_inserted_after_them():
    # minutes 0, 1, 4, 5 measured (2 and 3 missing, filled); states 0, 2, 0, 1; minute 5 twice (0 and 1)
    minutes = np.array([0, 1, 4, 5, 5])
    states = np.array([0, 2, 0, 0, 1], dtype=np.int8)
    grid = regular_grid(minutes * 60_000_000, np.ones((5, 1)), None, 60, max_gap_steps=3, states=states)
    # inserted minutes 2 and 3 take minute 1's state; a bucket holding two states keeps the larger code
    assert grid.states.tolist() == [0, 2, 2, 2, 0, 1]
