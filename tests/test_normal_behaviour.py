"""A driver/response (normal-behaviour) model separates a relational fault that a plain forecaster misses; the
mean residual of a window's last rows (``residual_steps``) shows a shift smaller than the noise that one row's
residual hides.

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


def gusty(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) AR(1) wind, φ = 0.3."""
    out = np.zeros(n)
    shocks = rng.normal(size=n)
    for t in range(1, n):
        out[t] = 0.3 * out[t - 1] + shocks[t]
    return out


def standardised(wind: np.ndarray, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, 2) [wind, power] standardised on the training rows, labels (n,): 1 in FAULT)."""
    values = np.column_stack([wind, power])
    values = (values - values[:TRAIN_ROWS].mean(axis=0)) / values[:TRAIN_ROWS].std(axis=0)
    labels = np.zeros(len(values), dtype=np.int8)
    labels[FAULT] = 1
    return values, labels


def toy_series(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, 2) [wind, power] standardised on the training rows, fault labels (n,))."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + TEST_ROWS
    wind, other_turbine = gusty(rng, n), gusty(rng, n)
    power = 1.5 * wind + 0.1 * rng.normal(size=n)
    reading = wind.copy()
    reading[FAULT] = other_turbine[FAULT]  # the anemometer reads another turbine's wind
    return standardised(reading, power)


def windows_of(values: np.ndarray, labels: np.ndarray, rows: range) -> Windows:
    ends = np.arange(max(rows.start, WINDOW - 1), rows.stop)
    stacked = np.stack([values[e - WINDOW + 1:e + 1] for e in ends])
    windows = Windows.from_array(stacked, labels[ends])
    windows.end_us = ends.astype(np.int64) * 60_000_000
    return windows


SETTINGS = dict(hidden_sizes=(16,), dropout=0.0, learning_rate=0.01, epochs=8, batch_size=128, patience=3, seed=0,
                device="cpu")


def split(values: np.ndarray, labels: np.ndarray) -> tuple[Windows, Windows]:
    """(training windows, test windows) of a toy series."""
    return (windows_of(values, labels, range(0, TRAIN_ROWS)),
            windows_of(values, labels, range(TRAIN_ROWS, TRAIN_ROWS + TEST_ROWS)))


@pytest.fixture(scope="module")
def fitted():
    train, test = split(*toy_series())
    plain = LSTMForecasterDetector(**SETTINGS).fit(train)
    normal_behaviour = LSTMForecasterDetector(drivers=(0,), error_model="mahalanobis", **SETTINGS).fit(train)
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


def offset_series(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The toy turbine with another fault: the power sensor reads high by its own noise's scale during FAULT
    (values (n, 2) standardised on the training rows, labels (n,))."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + TEST_ROWS
    wind = gusty(rng, n)
    power = 1.5 * wind + 0.1 * rng.normal(size=n)
    power[FAULT] += 0.1
    return standardised(wind, power)


@pytest.fixture(scope="module")
def offset_fitted():
    train, test = split(*offset_series())
    settings = dict(SETTINGS, drivers=(0,), error_model="mahalanobis")
    last_row = LSTMForecasterDetector(**settings).fit(train)
    mean_of_8 = LSTMForecasterDetector(residual_steps=8, **settings).fit(train)
    return test, last_row, mean_of_8


def test_the_mean_residual_of_the_last_rows_shows_an_offset_within_the_noise(offset_fitted):
    test, last_row, mean_of_8 = offset_fitted
    truth = test.label_last == 1
    last_row_auroc, mean_auroc = roc_auc_score(truth, last_row.score(test)), roc_auc_score(truth, mean_of_8.score(test))
    # one residual: a shift of one noise scale against noise of one; the mean of 8: against noise of 1/√8
    assert last_row_auroc < 0.75
    assert mean_auroc > 0.85 and mean_auroc > last_row_auroc + 0.15


def test_a_windows_error_is_the_mean_of_its_last_rows_residuals(offset_fitted):
    test, _, mean_of_8 = offset_fitted
    import torch

    sample = test.subset(np.arange(0, len(test), 97))
    batch = sample.batch(slice(None))
    network = mean_of_8.network_.eval()
    # reference: row t predicted by the network run on the window's rows up to t alone (the LSTM is causal)
    with torch.no_grad():
        residuals = np.stack([(network(batch[:, :t + 1, [0]])[:, 0] - batch[:, t, 1]).double().numpy()
                              for t in range(WINDOW - 8, WINDOW)], axis=1)
    mean_residual = residuals.mean(axis=1)
    model = mean_of_8.error_model_
    expected = (mean_residual - model.mean_[0]) ** 2 * model.precision_[0, 0]
    np.testing.assert_allclose(mean_of_8.score(sample), expected, rtol=1e-5)


def test_without_drivers_each_of_the_last_rows_is_forecast_from_the_rows_before_it():
    values, labels = offset_series()
    train = windows_of(values, labels, range(0, 600))
    forecaster = LSTMForecasterDetector(residual_steps=4, hidden_sizes=(8,), dropout=0.0, epochs=1, seed=0,
                                        device="cpu").fit(train)
    import torch

    sample = train.subset(np.arange(0, len(train), 53))
    batch = sample.batch(slice(None))
    network = forecaster.network_.eval()
    # reference: row t (0-based, of W) forecast by the network run on rows 0..t−1 alone
    with torch.no_grad():
        errors = np.stack([(network(batch[:, :t, :]) - batch[:, t, :]).double().numpy()
                           for t in range(WINDOW - 4, WINDOW)], axis=1)  # (n, 4, C)
    expected = np.mean(errors.mean(axis=1) ** 2, axis=1)  # squared error model: mean over the channels
    np.testing.assert_allclose(forecaster.score(sample), expected, rtol=1e-5)


def test_residual_steps_beyond_the_window_are_refused():
    values, labels = offset_series()
    train = windows_of(values, labels, range(0, 200))
    with pytest.raises(ValueError, match="residual_steps 11 must be between 1 and 10"):
        LSTMForecasterDetector(drivers=(0,), residual_steps=11, epochs=1).fit(train)
    with pytest.raises(ValueError, match="residual_steps 10 must be between 1 and 9"):
        LSTMForecasterDetector(residual_steps=10, epochs=1).fit(train)
