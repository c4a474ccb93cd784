"""Channel attribution of each detector against a NumPy (or finite-difference) reference, and the Arrow
form the result tables store."""

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch

from lstmad.detectors.iae_lstm_kl import IAELSTMKLDetector
from lstmad.detectors.isolation_forest import IsolationForestDetector
from lstmad.detectors.lstm_autoencoder import LSTMAutoencoderDetector
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.detectors.pca_t2q import PCAT2QDetector
from lstmad.serving.scoring import shares_array
from lstmad.transforms import attribution
from lstmad.transforms.blocks import Windows

W, C = 8, 3


def series(n, seed):
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(2 * np.pi * t / 16 + p) for p in (0, 1, 2)], 1) + 0.05 * rng.normal(size=(n, C))


def windows_of(values):
    return np.lib.stride_tricks.sliding_window_view(values, W, axis=0).transpose(0, 2, 1).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    train = windows_of(series(800, 0))
    test = series(120, 1)
    test[60:80, 2] += 3.0  # a fault on channel 2
    return Windows.from_array(train), windows_of(test)


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    torch.manual_seed(0)
    small = dict(epochs=2, batch_size=64, patience=2, seed=0, device="cpu")
    return {
        "squared": LSTMForecasterDetector(hidden_sizes=(8,), **small).fit(train),
        "mahalanobis": LSTMForecasterDetector(hidden_sizes=(8,), error_model="mahalanobis", **small).fit(train),
        "autoencoder": LSTMAutoencoderDetector(hidden=8, **small).fit(train),
        "iae": IAELSTMKLDetector(conv_channels=(4, 4, 4), latent=4, lstm_hidden=8, pretrain_epochs=1, epochs=1,
                                 warmup_epochs=0, batch_size=64, seed=0, device="cpu").fit(train),
        "pca": PCAT2QDetector().fit(train),
    }


def test_forecaster_shares_are_squared_errors_over_their_sum(fitted, data):
    detector, test = fitted["squared"], data[1]
    x = torch.as_tensor(test)
    with torch.no_grad():  # the error in float32, as the network computes it
        error = (detector.network_(x[:, :-1, :]) - x[:, -1, :]).double().numpy()
    expected = error ** 2 / (error ** 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(detector.channel_shares(Windows.from_array(test)), expected, rtol=1e-5, atol=1e-9)


def test_mahalanobis_forecaster_shares_are_the_distance_terms(fitted, data):
    detector, test = fitted["mahalanobis"], data[1]
    x = torch.as_tensor(test)
    with torch.no_grad():
        centred = (detector.network_(x[:, :-1, :]) - x[:, -1, :]).double().numpy() - detector.error_model_.mean_
    precision = detector.error_model_.precision_
    terms = np.array([[abs(e[c] * sum(precision[c, k] * e[k] for k in range(C))) for c in range(C)] for e in centred])
    np.testing.assert_allclose(detector.channel_shares(Windows.from_array(test)),
                               terms / terms.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-9)


def test_autoencoder_shares_sum_the_per_step_terms(fitted, data):
    detector, test = fitted["autoencoder"], data[1]
    x = torch.as_tensor(test)
    with torch.no_grad():
        centred = (detector.network_(x).flip(1) - x).double().numpy() - detector.error_model_.mean_
    terms = np.abs(centred * np.einsum("ck,nwk->nwc", detector.error_model_.precision_, centred)).sum(axis=1)
    np.testing.assert_allclose(detector.channel_shares(Windows.from_array(test)),
                               terms / terms.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-8)


def test_iae_shares_are_the_latent_distance_gradient_by_finite_differences(fitted, data):
    detector, test = fitted["iae"], data[1][55:58]
    network = copy.deepcopy(detector.network_).double().eval()
    centre = torch.as_tensor(detector.centre_, dtype=torch.float64)
    scaled = (test - detector.scale_min_) / detector.scale_span_

    def distance(x):
        with torch.no_grad():
            return float(torch.sum((network.encode(torch.as_tensor(x)[None]) - centre) ** 2))

    step = 1e-6
    expected = np.zeros((len(test), C))
    for n in range(len(test)):
        for t in range(W):
            for c in range(C):
                up, down = scaled[n].copy(), scaled[n].copy()
                up[t, c] += step
                down[t, c] -= step
                expected[n, c] += abs(distance(up) - distance(down)) / (2 * step)
    np.testing.assert_allclose(detector.channel_shares(Windows.from_array(test)),
                               expected / expected.sum(axis=1, keepdims=True), rtol=1e-3, atol=1e-5)
    assert detector.attribution_method == "latent_distance_gradient"


def test_pca_shares_follow_the_statistic_that_sets_the_score(fitted, data):
    detector = fitted["pca"]
    rows = data[1][:, -1, :].astype(np.float64)
    centred = rows - detector.mean_
    scores_t = centred @ detector.components_.T
    residual = centred - scores_t @ detector.components_
    t2 = (scores_t ** 2 / detector.variance_).sum(axis=1)
    q = (residual ** 2).sum(axis=1)
    t2_terms = np.abs(centred * (detector.components_.T @ (scores_t / detector.variance_).T).T)
    terms = np.where((q / detector.q_limit_ >= t2 / detector.t2_limit_)[:, None], residual ** 2, t2_terms)
    np.testing.assert_allclose(detector.channel_shares(Windows.from_array(data[1])),
                               terms / terms.sum(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)


def test_a_fault_on_one_channel_is_attributed_to_it(fitted, data):
    test = data[1]
    inside = slice(70 - W + 1, 80 - W + 1)  # windows whose last row is well inside the fault
    # (not PCA: a shift off its principal plane shows in Q along the plane's normal, which here spans every
    # channel: the known smearing of Q contributions; its decomposition is checked above)
    for name in ("squared", "mahalanobis", "autoencoder"):
        shares = fitted[name].channel_shares(Windows.from_array(test[inside]))
        np.testing.assert_allclose(shares.sum(axis=1), 1.0)
        assert (shares >= 0).all()
        assert (shares.argmax(axis=1) == 2).mean() >= 0.8, (name, shares.round(2))


def test_isolation_forest_states_it_has_no_attribution(data):
    detector = IsolationForestDetector(n_estimators=10).fit(data[0])
    assert detector.attribution_method == "none" and not hasattr(detector, "channel_shares")


def test_shares_of_a_perfect_fit_are_equal_and_the_arrow_form_is_sorted_and_sparse():
    np.testing.assert_allclose(attribution.shares(np.zeros((1, 4))), [[0.25] * 4])
    rows = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    array = shares_array(rows, np.array([1, 3]), 4, ("a", "b", "c"))
    assert array.type == pa.list_(pa.struct([("channel", pa.string()), ("share", pa.float64())]))
    assert array.to_pylist() == [None, [{"channel": "b", "share": 0.5}, {"channel": "c", "share": 0.3},
                                        {"channel": "a", "share": 0.2}],
                                 None, [{"channel": "a", "share": 0.6}, {"channel": "c", "share": 0.3},
                                        {"channel": "b", "share": 0.1}]]


@pytest.mark.parametrize("name", ["squared", "mahalanobis", "autoencoder", "iae", "pca"])
def test_scores_and_shares_of_the_flagged_windows_in_one_pass_equal_score_then_channel_shares(fitted, data, name):
    detector, test = fitted[name], Windows.from_array(data[1])
    expected_scores = detector.score(test)
    threshold = np.quantile(expected_scores, 0.8)
    picked = np.flatnonzero(expected_scores > threshold)
    scores, shares = detector.score_and_shares(test, lambda s: s > threshold)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
    assert shares.shape == (picked.size, C)
    np.testing.assert_allclose(shares, detector.channel_shares(test.subset(picked)), rtol=1e-6, atol=1e-9)
    _, empty = detector.score_and_shares(test, lambda s: np.zeros(s.shape, bool))
    assert empty.shape == (0, C)


def test_a_detector_without_attribution_scores_and_gives_no_shares(data):
    detector = IsolationForestDetector(n_estimators=10, seed=0).fit(data[0])
    test = Windows.from_array(data[1])
    scores, shares = detector.score_and_shares(test, lambda s: s > 0)
    np.testing.assert_array_equal(scores, detector.score(test))
    assert shares is None
