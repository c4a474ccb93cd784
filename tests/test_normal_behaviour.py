"""A driver/response (normal-behaviour) model separates a relational fault that a plain forecaster misses.

Toy turbine: wind speed (driver) is gusty, little of it predictable from its past (AR(1), φ = 0.3); power
(response) follows the wind of the same step, power = 1.5 · wind + noise. The fault: the anemometer reads
another turbine's wind (a swapped cable), so power no longer follows the wind reading. Each channel alone
keeps its normal level, spread and dynamics, so predicting each from the past sees nothing; predicting
power from the wind reading does.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lstmad.detectors import LSTMForecasterDetector
from lstmad.transforms.blocks import Windows

WINDOW = 10
TRAIN_ROWS, TEST_ROWS = 3000, 1500
FAULT = slice(TRAIN_ROWS + 500, TRAIN_ROWS + 1000)


def toy_series(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, 2) [wind, power] standardised on the training rows, fault labels (n,))."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + TEST_ROWS
    def gusty() -> np.ndarray:
        out = np.zeros(n)
        shocks = rng.normal(size=n)
        for t in range(1, n):
            out[t] = 0.3 * out[t - 1] + shocks[t]
        return out

    wind, other_turbine = gusty(), gusty()
    power = 1.5 * wind + 0.1 * rng.normal(size=n)
    reading = wind.copy()
    reading[FAULT] = other_turbine[FAULT]  # the anemometer reads another turbine's wind
    values = np.column_stack([reading, power])
    values = (values - values[:TRAIN_ROWS].mean(axis=0)) / values[:TRAIN_ROWS].std(axis=0)
    labels = np.zeros(n, dtype=np.int8)
    labels[FAULT] = 1
    return values, labels


def windows_of(values: np.ndarray, labels: np.ndarray, rows: range) -> Windows:
    ends = np.arange(max(rows.start, WINDOW - 1), rows.stop)
    stacked = np.stack([values[e - WINDOW + 1:e + 1] for e in ends])
    windows = Windows.from_array(stacked, labels[ends])
    windows.end_us = ends.astype(np.int64) * 60_000_000
    return windows


@pytest.fixture(scope="module")
def fitted():
    values, labels = toy_series()
    train = windows_of(values, labels, range(0, TRAIN_ROWS))
    test = windows_of(values, labels, range(TRAIN_ROWS, TRAIN_ROWS + TEST_ROWS))
    settings = dict(hidden_sizes=(16,), dropout=0.0, learning_rate=0.01, epochs=8, batch_size=128, patience=3, seed=0,
                    device="cpu")
    plain = LSTMForecasterDetector(**settings).fit(train)
    normal_behaviour = LSTMForecasterDetector(drivers=(0,), error_model="mahalanobis", **settings).fit(train)
    return test, plain, normal_behaviour


def test_the_normal_behaviour_model_sees_the_swapped_anemometer(fitted):
    test, _, normal_behaviour = fitted
    truth = test.label_last == 1
    assert roc_auc_score(truth, normal_behaviour.score(test)) > 0.9


def test_a_plain_forecaster_misses_it(fitted):
    test, plain, normal_behaviour = fitted
    truth = test.label_last == 1
    plain_auroc = roc_auc_score(truth, plain.score(test))
    assert plain_auroc < 0.7
    assert roc_auc_score(truth, normal_behaviour.score(test)) > plain_auroc + 0.2


def test_residuals_are_attributed_to_the_response_never_to_the_driver(fitted):
    test, _, normal_behaviour = fitted
    shares = normal_behaviour.channel_shares(test.subset(np.flatnonzero(test.label_last == 1)))
    assert shares.shape == (int((test.label_last == 1).sum()), 2)
    np.testing.assert_allclose(shares[:, 0], 0.0)
    np.testing.assert_allclose(shares[:, 1], 1.0)


def test_a_saved_normal_behaviour_model_scores_the_same(fitted, tmp_path):
    test, _, normal_behaviour = fitted
    normal_behaviour.save(tmp_path)
    again = LSTMForecasterDetector.load(tmp_path)
    np.testing.assert_allclose(again.score(test), normal_behaviour.score(test), rtol=1e-6)
