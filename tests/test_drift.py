"""Population stability index and the retraining rule, against hand computations."""

import numpy as np
import pytest

from lstmad.evaluation.drift import population_stability_index, reference_histogram, retrain_signal


def test_psi_hand_worked():
    reference = {"edges": [[-np.inf, 0.0, np.inf]], "proportions": [[0.5, 0.5]]}
    values = np.array([[-1.0], [1.0], [2.0], [3.0]])  # shares 0.25 / 0.75
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert population_stability_index(reference, values)[0] == pytest.approx(expected)


def test_same_distribution_has_small_psi_shifted_has_large():
    rng = np.random.default_rng(0)
    reference = reference_histogram(rng.normal(size=(20000, 2)), bins=10)
    assert all(abs(sum(p) - 1) < 1e-9 for p in reference["proportions"])
    same = population_stability_index(reference, rng.normal(size=(20000, 2)))
    shifted = population_stability_index(reference, rng.normal(size=(20000, 2)) + [0.0, 1.0])
    assert same.max() < 0.01
    assert shifted[0] < 0.01 and shifted[1] > 0.5


def test_retrain_rule_needs_share_of_channels_or_alarm_rate():
    channels = ("a", "b", "c", "d")
    assert retrain_signal(np.array([0.9, 0, 0, 0]), 0.05, 0.05, 0.25, 0.5, 3.0, channels) == (False, [])
    retrain, reasons = retrain_signal(np.array([0.9, 0.3, 0, 0]), 0.05, 0.05, 0.25, 0.5, 3.0, channels)
    assert retrain and "2/4 channels" in reasons[0]
    retrain, reasons = retrain_signal(np.zeros(4), 0.2, 0.05, 0.25, 0.5, 3.0, channels)
    assert retrain and reasons[0].startswith("alarm_rate")


def test_per_channel_thresholds_from_training_days():
    channels = ("weather", "sensor")
    # the weather channel strays 3.0 on ordinary training days: 2.5 is no drift there, but is on the sensor
    limits = np.array([3.0, 0.25])
    retrain, reasons = retrain_signal(np.array([2.5, 0.1]), 0.05, 0.05, limits, 0.5, 3.0, channels)
    assert not retrain and reasons == []
    retrain, reasons = retrain_signal(np.array([2.5, 2.5]), 0.05, 0.05, limits, 0.5, 3.0, channels)
    assert retrain and "sensor PSI 2.50>0.25" in reasons[0] and "weather" not in reasons[0]


def test_ks_against_stored_quantiles_matches_scipy_two_sample_ks():
    from scipy.stats import ks_2samp

    from lstmad.evaluation.drift import ks_statistic, reference_quantiles

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(50_000, 2))
    night = np.column_stack([rng.normal(size=2000), rng.normal(size=2000) + 0.5])
    got = ks_statistic(reference_quantiles(reference), night)
    expected = [ks_2samp(reference[:, c], night[:, c]).statistic for c in range(2)]
    np.testing.assert_allclose(got, expected, atol=0.01)  # 101 stored quantiles instead of 50,000 rows
    assert got[1] > 0.15 > got[0]


def test_retrain_rule_counts_ks_channels_score_drift_and_model_age():
    channels = ("a", "b")
    psi = np.zeros(2)
    retrain, reasons = retrain_signal(psi, 0.05, 0.05, 0.25, 0.5, 3.0, channels, ks=np.array([0.4, 0.0]),
                                      ks_threshold=0.3)
    assert retrain and "1/2 channels drifted: a KS 0.40>0.3" in reasons[0]
    assert retrain_signal(psi, 0.05, 0.05, 0.25, 0.5, 3.0, channels, ks=np.array([0.4, 0.0]))[0] is False  # off
    retrain, reasons = retrain_signal(psi, 0.05, 0.05, 0.25, 0.5, 3.0, channels, score_ks=0.5, score_ks_threshold=0.3)
    assert reasons == ["score KS 0.50>0.3"]
    retrain, reasons = retrain_signal(psi, 0.05, 0.05, 0.25, 0.5, 3.0, channels, age_days=31, max_age_days=30)
    assert retrain and "31 days before (> 30)" in reasons[0]


def test_ks_counts_repeated_values_as_steps_and_skips_non_finite_ones():
    from scipy.stats import ks_2samp

    from lstmad.evaluation.drift import ks_statistic, reference_quantiles

    rng = np.random.default_rng(2)
    idle = np.zeros((1000, 1))
    assert ks_statistic(reference_quantiles(idle), idle)[0] == 0.0  # an idle channel against itself
    reference = np.round(rng.normal(size=(50_000, 1)), 1)  # a coarse sensor: many ties
    night = np.round(rng.normal(size=(2000, 1)), 1)
    expected = ks_2samp(reference[:, 0], night[:, 0]).statistic
    assert ks_statistic(reference_quantiles(reference), night)[0] == pytest.approx(expected, abs=0.02)
    with_nan = np.vstack([night, [[np.nan]], [[np.inf]]])
    assert ks_statistic(reference_quantiles(reference), with_nan)[0] == pytest.approx(
        ks_statistic(reference_quantiles(reference), night)[0])


def test_psi_and_ks_of_a_float32_night_with_gaps_match_numpy_histogram_and_scipy():
    """drift_statistics (one sort per channel, channels in threads) against numpy.histogram shares and
    scipy's two-sample KS on the same rows."""
    from scipy.stats import ks_2samp

    from lstmad.evaluation.drift import drift_statistics, reference_quantiles

    rng = np.random.default_rng(3)
    reference_rows = rng.normal(size=(5000, 3))
    reference = {**reference_histogram(reference_rows), "quantiles": reference_quantiles(reference_rows)}
    night = (rng.normal(size=(4000, 3)) * [1.0, 1.5, 1.0] + [0.0, 0.0, 0.7]).astype(np.float32)
    night[::97, 0] = np.nan
    night[5, 1], night[6, 2] = np.inf, -np.inf
    psi, ks = drift_statistics(reference, night)
    for c in range(3):
        column = night[:, c].astype(np.float64)
        q = np.maximum(np.histogram(column[~np.isnan(column)], np.asarray(reference["edges"][c]))[0] / len(night), 1e-4)
        p = np.maximum(np.asarray(reference["proportions"][c]), 1e-4)
        assert psi[c] == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-9)
        finite = column[np.isfinite(column)]
        # the reference is 101 stored quantiles, not its rows: within a quantile step of scipy's statistic
        assert ks[c] == pytest.approx(ks_2samp(finite, reference_rows[:, c]).statistic, abs=0.02)
    assert ks[2] > 0.2 and ks[0] < 0.05


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, None])
def test_ks_against_a_reference_with_a_step_by_hand(chunk_rows, monkeypatch):
    """Also taken 1, 2 and 3 rows at a time: runs of tied values cross the chunks' borders."""
    from lstmad.evaluation import drift
    from lstmad.evaluation.drift import ks_statistic

    if chunk_rows:
        monkeypatch.setattr(drift, "KS_CHUNK_ROWS", chunk_rows)

    # reference quantiles 0, 0, 0, 1, 2 at levels 0, ¼, ½, ¾, 1: half its mass sits at 0 (a step from 0 to ½),
    # then linear to ¾ at 1 and to 1 at 2. The night 0, 0, 1.5: its CDF jumps to ⅔ at 0 and to 1 at 1.5.
    # Just below 1.5 the reference reaches 0.875 while the night is still at ⅔: KS = 0.875 − ⅔ = 5/24
    # (at 0 the night leads by only ⅔ − ½).
    quantiles = [[0.0, 0.0, 0.0, 1.0, 2.0]]
    assert ks_statistic(quantiles, np.array([[0.0], [0.0], [1.5]]))[0] == pytest.approx(5 / 24)
    # the night all at 0: it leads the reference's step by 1 − ½
    assert ks_statistic(quantiles, np.zeros((4, 1)))[0] == pytest.approx(0.5)


def test_float32_nights_fall_into_the_bins_their_float64_values_do():
    """0.7 has no float32: float32(0.7) = 0.69999999 lies below the float64 edge 0.7, so it counts in the
    lower bin (numpy.histogram on the float64 values says so too), where rounding the edge to float32 would
    put it above. Then edges at the ends of float32's range and beyond it, at ±0 and at the smallest
    subnormal, each bin's share against numpy.histogram's (distinct reference shares: a count in the wrong
    bin changes the index)."""
    from lstmad.evaluation.drift import drift_statistics

    reference = {"edges": [[-np.inf, 0.7, np.inf]], "proportions": [[0.3, 0.7]]}
    night = np.array([[0.7], [0.7], [0.8], [0.6]], dtype=np.float32)
    assert np.histogram(night[:, 0].astype(np.float64), reference["edges"][0])[0].tolist() == [3, 1]
    psi = 0.45 * np.log(2.5) - 0.45 * np.log(0.25 / 0.7)  # (0.75 − 0.3)·ln(0.75/0.3) + (0.25 − 0.7)·ln(0.25/0.7)
    assert drift_statistics(reference, night, with_ks=False)[0][0] == pytest.approx(psi, rel=1e-12)

    top = float(np.finfo(np.float32).max)
    edges = [-np.inf, -1e39, -top, -0.0, 1e-46, 1.4e-45, 0.7, top, top * (1 + 2**-25), 1e39, np.inf]
    proportions = np.arange(1, len(edges)) / np.arange(1, len(edges)).sum()
    reference = {"edges": [edges], "proportions": [proportions.tolist()]}
    subnormal = np.nextafter(np.float32(0), np.float32(1))  # 1.4e-45 as float32: just below the float64 edge
    values = np.array([-np.inf, -top, -1e30, -0.0, 0.0, subnormal, 2 * subnormal, 0.7, 0.8, top, np.inf],
                      dtype=np.float32)
    night = np.repeat(values, np.arange(1, values.size + 1))[:, None]  # a different count of each value
    counts = np.histogram(night[:, 0].astype(np.float64), edges)[0]
    q = np.maximum(counts / night.shape[0], 1e-4)
    p = np.maximum(proportions, 1e-4)
    with np.errstate(all="raise"):  # no overflow warnings at the ends of float32's range
        got = drift_statistics(reference, night, with_ks=False)[0][0]
    assert got == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)


def test_drift_of_a_float32_night_equals_that_of_its_float64_values(monkeypatch):
    """A coarse sensor (steps of 0.1, which float32 cannot hold exactly) against a reference that holds 0.7
    many times (a step in its CDF at a value float32 has not): the float32 night's statistics, taken 1,000
    rows at a time, equal those of the same values in float64, which are compared without any rounding."""
    from lstmad.evaluation import drift
    from lstmad.evaluation.drift import drift_statistics, reference_quantiles

    monkeypatch.setattr(drift, "KS_CHUNK_ROWS", 1000)
    rng = np.random.default_rng(4)
    reference_rows = np.round(rng.normal(size=(20_000, 2)), 1)
    reference_rows[:8000, 1] = 0.7  # 40 % of the reference at one value
    reference = {**reference_histogram(reference_rows), "quantiles": reference_quantiles(reference_rows)}
    assert 0.7 in reference["edges"][1] and reference["quantiles"][1].count(0.7) > 1
    night = np.round(rng.normal(size=(5000, 2)) + [0.1, 0.0], 1).astype(np.float32)
    night[:2500, 1] = 0.7
    night[::97, 0] = np.nan
    psi32, ks32 = drift_statistics(reference, night)
    psi64, ks64 = drift_statistics(reference, night.astype(np.float64))
    np.testing.assert_array_equal(psi32, psi64)
    np.testing.assert_array_equal(ks32, ks64)


def _ks_by_brute_force(quantiles: list[float], night: np.ndarray) -> float:
    """sup |F_night − F_reference| from both CDFs' values and left limits at every night value and quantile
    (between those points F_night is constant and F_reference continuous and monotone, so the supremum is
    at their ends); F_reference is linear between its quantiles and steps where a quantile repeats."""
    q = np.asarray(quantiles, dtype=np.float64)
    levels = np.linspace(0, 1, q.size)
    x = np.sort(night)
    worst = 0.0
    for t in np.unique(np.concatenate([x, q])):
        tied = np.flatnonzero(q == t)
        at, before = (levels[tied[-1]], levels[tied[0]]) if tied.size else (np.interp(t, q, levels),) * 2
        worst = max(worst, abs(np.searchsorted(x, t, "right") / x.size - at),
                    abs(np.searchsorted(x, t, "left") / x.size - before))
    return worst


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 8])
def test_ks_taken_a_few_rows_at_a_time_equals_the_brute_force_supremum(chunk_rows, monkeypatch):
    """Small nights of a coarse sensor (many ties, runs across every chunk border) against references with
    steps: the KS equals the supremum found by brute force, whatever the chunk."""
    from lstmad.evaluation import drift
    from lstmad.evaluation.drift import ks_statistic

    monkeypatch.setattr(drift, "KS_CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(chunk_rows)
    for quantiles in ([0.0, 0.0, 0.0, 1.0, 2.0], [0.0, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0], [0.5, 0.5, 1.5, 1.5, 2.0]):
        for _ in range(20):
            night = rng.choice([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], size=rng.integers(1, 15))
            assert ks_statistic([quantiles], night[:, None])[0] == pytest.approx(
                _ks_by_brute_force(quantiles, night), abs=1e-12)
