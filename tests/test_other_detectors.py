"""LSTM-AE with Mahalanobis errors, the forecaster's Gaussian option, PCA T²+Q and Isolation Forest."""

import numpy as np
import pytest

from lstmad.detectors import load_detector
from lstmad.detectors.gaussian_error import GaussianErrorModel
from lstmad.detectors.isolation_forest import IsolationForestDetector
from lstmad.detectors.lstm_autoencoder import LSTMAutoencoderDetector
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.detectors.pca_t2q import PCAT2QDetector
from lstmad.transforms.blocks import Windows


def test_gaussian_error_model_matches_hand_mahalanobis():
    errors = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    model = GaussianErrorModel(shrinkage=0.0).fit(errors)
    # mean 0, covariance diag(2/3, 8/3): distance² of (1, 2) = 1/(2/3) + 4/(8/3)
    assert model.score(np.array([[1.0, 2.0]]))[0] == pytest.approx(1.5 + 1.5, rel=1e-6)


def correlated_rows(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 1))
    return np.hstack([base, 2 * base, -base]) + 0.05 * rng.normal(size=(n, 3))


def test_pca_t2q_flags_a_broken_correlation_and_limits_hold_on_training_data(tmp_path):
    rows = correlated_rows(2000, 0)
    windows = Windows.from_array(rows[:, None, :])  # window of one row: per-point method
    detector = PCAT2QDetector().fit(windows)
    assert detector.components_.shape[0] == 1  # one component explains > 90 %
    assert np.mean(detector.score(windows) > 1) == pytest.approx(0.02, abs=0.01)  # two 0.99 limits
    broken = np.array([[1.0, -2.0, -1.0]])  # in range, but against the correlation: Q explodes
    assert detector.score(Windows.from_array(broken[:, None, :]))[0] > 10
    detector.save(tmp_path)
    np.testing.assert_allclose(load_detector(tmp_path).score(windows), detector.score(windows))


def test_isolation_forest_scores_outliers_higher():
    rows = correlated_rows(1000, 1)
    detector = IsolationForestDetector(n_estimators=50).fit(Windows.from_array(rows[:, None, :]))
    scores = detector.score(Windows.from_array(np.array([[[0.0, 0.0, 0.0]], [[6.0, -6.0, 6.0]]])))
    assert scores[1] > scores[0]


def sliding(x, w):
    return np.lib.stride_tricks.sliding_window_view(x, w, axis=0).transpose(0, 2, 1)


def test_lstm_ae_and_mahalanobis_forecaster_rank_an_anomaly_first(tmp_path):
    t = np.arange(1200)
    series = np.stack([np.sin(t / 8), np.cos(t / 8)], 1) + 0.02 * np.random.default_rng(0).normal(size=(1200, 2))
    train = Windows.from_array(sliding(series[:1000], 12))
    test = series[1000:].copy()
    test[100, 0] += 2.0
    test_windows = Windows.from_array(sliding(test, 12))
    ae = LSTMAutoencoderDetector(hidden=16, epochs=8, device="cpu").fit(train)
    forecaster = LSTMForecasterDetector(hidden_sizes=(16,), epochs=8, device="cpu", error_model="mahalanobis").fit(train)
    windows_with_spike = (np.arange(len(test_windows)) <= 100) & (np.arange(len(test_windows)) + 11 >= 100)
    assert np.argmax(ae.score(test_windows)) in np.flatnonzero(windows_with_spike)
    assert np.argmax(forecaster.score(test_windows)) == 100 - 11  # the window whose last row is the spike
    for detector in (ae, forecaster):
        detector.save(tmp_path / detector.kind)
        np.testing.assert_allclose(load_detector(tmp_path / detector.kind).score(test_windows),
                                   detector.score(test_windows), rtol=1e-6)
