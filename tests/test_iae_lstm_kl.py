"""IAE-LSTM-KL: profile shapes and parameter counts, each loss term by hand, radius update, ablations,
separation of an injected anomaly, save/load."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lstmad.detectors import load_detector
from lstmad.detectors.iae_lstm_kl import (
    PROFILES,
    VARIANTS,
    IAELSTMKLDetector,
    kl_to_standard_normal,
    soft_radius,
    svdd_loss,
)
from lstmad.models.iae_lstm_kl import IAELSTMKLNet, SingleStepLSTM
from lstmad.transforms.blocks import Windows


def conv_params(c_in, c_out, k=5, bias=True):
    return c_in * c_out * k * k + (c_out if bias else 0) + 2 * c_out  # conv + batch-norm affine


def test_paper_profile_shapes_and_parameter_count_for_wtbi_windows():
    net = IAELSTMKLNet(26, 26, **{k: v for k, v in PROFILES["paper"].items()})
    assert net.sizes == [(26, 26), (13, 13), (7, 7), (4, 4)]  # three 2×2 poolings, rounding up
    z, x_hat = net(torch.rand(3, 26, 26))
    assert z.shape == (3, 128) and x_hat.shape == (3, 26, 26)
    assert 0 < x_hat.min() and x_hat.max() < 1  # sigmoid output
    encoder = conv_params(1, 32) + conv_params(32, 64) + conv_params(64, 128)
    lstm = 4 * 2048 * (2048 + 2048 + 2)  # LSTM(2048, 2048) cell: 4 gates, input + recurrent weights, 2 biases
    latent = 2048 * 128 + 128  # Linear(2048, 128)
    decoder = sum(conv_params(a, b) for a, b in [(8, 128), (128, 64), (64, 32)]) + (32 * 1 * 25 + 1)
    assert sum(p.numel() for p in net.encoder.parameters()) == encoder
    assert sum(p.numel() for p in net.memory.parameters()) == lstm
    assert sum(p.numel() for p in net.to_latent.parameters()) == latent
    assert isinstance(net.from_latent, torch.nn.Identity)  # 128 = 8×4×4: reshaped as published
    assert sum(p.numel() for n, p in net.named_parameters() if n.startswith(("decoder", "output"))) == decoder


@pytest.mark.parametrize("window, channels", [(26, 8), (10, 3), (26, 26)])
def test_small_profile_adapts_to_any_window(window, channels):
    net = IAELSTMKLNet(window, channels, **PROFILES["small"])
    z, x_hat = net(torch.rand(2, window, channels))
    assert z.shape == (2, 32) and x_hat.shape == (2, window, channels)


def test_single_step_lstm_is_the_degenerate_cell():
    torch.manual_seed(0)
    cell = SingleStepLSTM(5, 3)
    z = torch.randn(4, 5)
    w, b = cell.cell.weight_ih, cell.cell.bias_ih + cell.cell.bias_hh
    s, f, g, o = (z @ w.T + b).chunk(4, dim=1)  # PyTorch gate order: input, forget, cell, output
    expected = torch.sigmoid(o) * torch.tanh(torch.sigmoid(s) * torch.tanh(g))  # eq. 11-12 with c0 = 0
    torch.testing.assert_close(cell(z), expected)
    open_gates = SingleStepLSTM(5, 3, gates=False)
    open_gates.load_state_dict(cell.state_dict())
    torch.testing.assert_close(open_gates(z), torch.tanh(torch.tanh(g)))


def test_loss_terms_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    c = torch.tensor([1.0, 1.0])
    # squared distances to c: 0 + 1 = 1 and 1 + 4 = 5
    assert svdd_loss(z, c, torch.tensor(0.0), "hard", 0.1).item() == pytest.approx(3.0)
    # soft: R² + mean(max(0, d − R²)) / ν with R = 2: 4 + ((0 + 1) / 2) / 0.5
    assert svdd_loss(z, c, torch.tensor(2.0), "soft", 0.5).item() == pytest.approx(5.0)
    # KL of each row's components: row 1 mean 0.5 var 0.25; row 2 mean 1.5 var 2.25
    expected = np.mean([0.5 * (0.25 + 0.25 - 1 - np.log(0.25)), 0.5 * (2.25 + 2.25 - 1 - np.log(2.25))])
    assert kl_to_standard_normal(z).item() == pytest.approx(expected, rel=1e-5)
    assert kl_to_standard_normal(torch.randn(4096, 64)).item() < 0.05  # standard normal rows: near 0


def test_soft_radius_update_is_the_one_minus_nu_quantile_of_distances():
    distances = np.arange(1, 101, dtype=float) ** 2  # ‖z − c‖² of 100 latents: 1² … 100²
    assert soft_radius(distances, nu=0.1) == pytest.approx(np.quantile(np.arange(1, 101), 0.9))


def test_every_ablation_is_a_switch_of_one_implementation():
    expected = {"cae", "deep_svdd_soft", "deep_svdd_hard", "iaead_soft", "iaead_hard", "iae_kl", "iae_lstm",
                "dlsvdd", "dlsvdd_kl", "dsvdd_kl", "iae_lstm_kl_soft", "iae_lstm_kl_hard"}
    assert set(VARIANTS) == expected
    cae, dsvdd, full = (IAELSTMKLDetector.variant(n).params for n in ("cae", "deep_svdd_soft", "iae_lstm_kl_soft"))
    assert (cae.svdd, cae.use_lstm, cae.kl_weight) == ("none", False, 0.0)
    assert (dsvdd.rec_weight, dsvdd.bias, dsvdd.use_lstm) == (0.0, False, False)
    assert (full.svdd, full.use_lstm) == ("soft", True) and full.kl_weight > 0 and full.rec_weight > 0
    with pytest.raises(ValueError, match="unknown IAE-LSTM-KL variant"):
        IAELSTMKLDetector.variant("iae_lstm_kl_medium")


W, C = 16, 3


def toy(n, seed):
    t = np.arange(n)
    return np.stack([np.sin(2 * np.pi * t / 20 + p) for p in range(C)], 1) + 0.05 * np.random.default_rng(seed).normal(size=(n, C))


def sliding(x):
    return np.lib.stride_tricks.sliding_window_view(x, W, axis=0).transpose(0, 2, 1)


@pytest.fixture(scope="module")
def fitted():
    return {name: IAELSTMKLDetector.variant(name, epochs=4, pretrain_epochs=3, device="cpu").fit(
        Windows.from_array(sliding(toy(1500, 0)))) for name in ("iaead_soft", "cae")}


def test_detectors_separate_an_injected_anomaly(fitted):
    test = toy(500, 1)
    test[250:290, 1] += 1.0
    windows = sliding(test)
    ends = np.arange(len(windows)) + W - 1
    labels = (ends >= 250) & (ends < 290 + W - 1)
    scores = {name: d.score(Windows.from_array(windows)) for name, d in fitted.items()}
    assert roc_auc_score(labels, scores["iaead_soft"]) > 0.9
    # the plain convolutional autoencoder, 3 + 4 epochs: weaker, but better than chance
    assert roc_auc_score(labels, scores["cae"]) > 0.6
    assert fitted["iaead_soft"].radius_ > 0
    phases = [h["phase"] for h in fitted["iaead_soft"].history_]
    assert phases[0] == "pretrain" and phases[-1] == "joint"


def test_save_load_gives_identical_scores(fitted, tmp_path):
    windows = Windows.from_array(sliding(toy(100, 2)))
    for name, detector in fitted.items():
        detector.save(tmp_path / name)
        np.testing.assert_allclose(load_detector(tmp_path / name).score(windows), detector.score(windows), rtol=1e-6)
