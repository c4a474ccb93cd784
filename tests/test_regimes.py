"""Error Gaussians per operating regime (lstmad.detectors.regimes): an offset that is large for its regime and
small against the pooled spread is found; cross-fitted validation scores give the asked budget on fresh
windows; the forecaster with ``error_regimes`` saves, loads and attributes like the pooled one.

Toy: the operating point is one number, low (−2) or high (+2) with a little jitter; the errors' spread is
0.1 at low and 3 at high operation (a controller that hunts at one end of its range).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lstmad.detectors import LSTMForecasterDetector
from lstmad.detectors.gaussian_error import GaussianErrorModel
from lstmad.detectors.regimes import RegimeErrorModel, cross_fitted_regime_scores
from lstmad.transforms.blocks import Windows


def heteroscedastic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(errors (n, 2), operating (n, 1)): half the rows at each end of the range."""
    high = rng.random(n) < 0.5
    operating = np.where(high, 2.0, -2.0)[:, None] + rng.normal(0, 0.2, (n, 1))
    errors = rng.normal(0, 1, (n, 2)) * np.where(high, 3.0, 0.1)[:, None]
    return errors, operating


def test_an_offset_small_against_the_pooled_spread_is_found_in_its_own_regime():
    rng = np.random.default_rng(0)
    errors, operating = heteroscedastic(rng, 4000)
    test_errors, test_operating = heteroscedastic(rng, 4000)
    shifted = (test_operating[:, 0] < 0) & (rng.random(4000) < 0.2)
    test_errors[shifted, 0] += 1.0  # 10 of its regime's scales, a third of the pooled one
    # against every normal window, the wide regime's included: the pooled Gaussian ranks those above
    pooled = GaussianErrorModel().fit(errors).score(test_errors)
    regimes = RegimeErrorModel(2).fit(errors, operating).score(test_errors, test_operating)
    assert roc_auc_score(shifted, regimes) > 0.99
    assert roc_auc_score(shifted, pooled) < 0.8


def test_each_point_belongs_to_its_nearest_centre():
    model = RegimeErrorModel(2).fit(np.zeros((4, 1)), np.zeros((4, 2)), centres=np.array([[0.0, 0.0], [4.0, 0.0]]))
    np.testing.assert_array_equal(model.regime_of(np.array([[1.9, 5.0], [2.1, -5.0], [-3.0, 0.0]])), [0, 1, 0])


def test_a_threshold_on_cross_fitted_validation_scores_keeps_its_budget_on_fresh_windows():
    rng = np.random.default_rng(1)
    errors, operating = heteroscedastic(rng, 3000)
    model = RegimeErrorModel(4).fit(errors, operating)
    threshold = np.quantile(cross_fitted_regime_scores(errors, operating, np.arange(3000), model), 0.99)
    fresh_errors, fresh_operating = heteroscedastic(rng, 100_000)
    assert 0.007 <= np.mean(model.score(fresh_errors, fresh_operating) > threshold) <= 0.014  # asked: 1 %


def test_too_few_windows_for_two_regimes_is_the_pooled_gaussian():
    rng = np.random.default_rng(2)
    errors, operating = heteroscedastic(rng, 60)  # < 2 × 50 windows: one regime
    model = RegimeErrorModel(5).fit(errors, operating)
    assert len(model.centres_) == 1
    np.testing.assert_allclose(model.score(errors, operating), GaussianErrorModel().fit(errors).score(errors),
                               rtol=0.03)


# ------------------------------------------------------------------ the forecaster with regimes

WINDOW = 8


@pytest.fixture(scope="module")
def fitted():
    """A normal-behaviour forecaster whose response's noise is wide when the driver is high."""
    rng = np.random.default_rng(3)
    n = 4000
    driver = np.sin(np.arange(n) / 40) + 0.1 * rng.normal(size=n)
    response = driver + rng.normal(size=n) * np.where(driver > 0, 0.5, 0.05)
    values = np.column_stack([driver, response, 0.5 * response + 0.05 * rng.normal(size=n)]).astype(np.float32)
    ends = np.arange(WINDOW - 1, n)
    windows = Windows.from_array(np.stack([values[e - WINDOW + 1:e + 1] for e in ends]))
    windows.end_us = ends.astype(np.int64) * 60_000_000
    detector = LSTMForecasterDetector(hidden_sizes=(16,), dropout=0.0, learning_rate=0.01, epochs=3, batch_size=256,
                                      seed=0, device="cpu", drivers=(0,), error_model="mahalanobis",
                                      error_regimes=4).fit(windows)
    return windows, detector


def test_the_forecaster_keeps_its_regimes_and_scores_the_same_once_saved(fitted, tmp_path):
    windows, detector = fitted
    assert isinstance(detector.error_model_, RegimeErrorModel) and len(detector.error_model_.centres_) == 4
    detector.save(tmp_path)
    np.testing.assert_allclose(LSTMForecasterDetector.load(tmp_path).score(windows), detector.score(windows),
                               rtol=1e-6)


def test_shares_under_regimes_sum_to_one_over_the_responses(fitted):
    windows, detector = fitted
    shares = detector.channel_shares(windows.subset(np.arange(500)))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(shares[:, 0], 0.0)  # the driver is never scored
