"""Smoothing and segmentation against independent NumPy/pandas references."""

import numpy as np
import pandas as pd

from lstmad.series import centered_moving_average, fit_normalisation, segment_ids


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
