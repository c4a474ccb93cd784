"""The LSTM forecaster detector: architecture, separation of an injected anomaly, save/load."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lstmad.detectors import load_detector
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.models.lstm_forecaster import StackedLSTMForecaster
from lstmad.transforms.blocks import Windows

W, C = 16, 3


def sliding(series):
    return np.lib.stride_tricks.sliding_window_view(series, W, axis=0).transpose(0, 2, 1)


def toy_series(n, seed):
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(2 * np.pi * t / 20 + p) for p in (0, 1, 2)], 1) + 0.05 * rng.normal(size=(n, C))


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    windows = Windows.from_array(sliding(toy_series(3000, 0)))
    return LSTMForecasterDetector(hidden_sizes=(16, 8), epochs=6, batch_size=64, patience=3, seed=0,
                                  device="cpu").fit(windows)


def test_architecture_matches_notebook_and_parameter_count():
    model = StackedLSTMForecaster(26, (64, 32), 0.2)
    lstm1 = 4 * 64 * (26 + 64 + 2)  # 4 gates × hidden × (input + hidden + two biases)
    lstm2 = 4 * 32 * (64 + 32 + 2)
    dense = 32 * 26 + 26
    assert sum(p.numel() for p in model.parameters()) == lstm1 + lstm2 + dense
    assert model(torch.zeros(5, 25, 26)).shape == (5, 26)


def test_separates_injected_anomaly(fitted):
    test = toy_series(600, 1)
    test[300:330, 1] += 1.5  # a level shift on one channel
    windows = sliding(test)
    labels = np.zeros(len(windows), int)
    labels[(np.arange(len(windows)) + W - 1 >= 300) & (np.arange(len(windows)) + W - 1 < 330)] = 1
    scores = fitted.score(Windows.from_array(windows))
    assert roc_auc_score(labels, scores) > 0.9
    assert fitted.history_ and fitted.history_[-1]["val_loss"] < fitted.history_[0]["train_loss"]
    assert fitted.validation_scores_.size == int(round(len(sliding(toy_series(3000, 0))) * 0.2))


def test_save_load_gives_identical_scores_without_pickles(fitted, tmp_path):
    windows = Windows.from_array(sliding(toy_series(200, 2)))
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["detector.json", "weights.pt"]
    loaded = load_detector(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(windows), fitted.score(windows))


def test_score_refuses_wrong_shape(fitted):
    with pytest.raises(ValueError, match="model expects 16×3"):
        fitted.score(Windows.from_array(np.zeros((2, W, C + 1), np.float32)))
