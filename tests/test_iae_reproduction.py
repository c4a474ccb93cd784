"""The authors'-code profile of IAE-LSTM-KL (issue 16): the batch-recurrent LSTM really runs across the batch
(checked against an LSTM recurrence written out in NumPy), a per-sample model's scores do not depend on their
batch, the authors' shapes and parameter counts, their KL term's gradient, the radius ratchet, and the
pipeline's refusal of a batch-dependent model."""

import numpy as np
import pytest
import torch

from lstmad.config import ConfigError, load_config
from lstmad.detectors.iae_lstm_kl import IAELSTMKLDetector, authors_kl
from lstmad.detectors.variants import PROFILES
from lstmad.models.iae_lstm_kl import BatchRecurrentLSTM, IAELSTMKLNet
from lstmad.transforms.blocks import Windows


def numpy_lstm(weights: dict, features: np.ndarray) -> np.ndarray:
    """Hidden states of an LSTM run over the rows of ``features`` (T, n) from h0 = c0 = 0, gates in PyTorch's order
    (input, forget, cell, output); (T, hidden)."""
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    hidden = weights["weight_hh_l0"].shape[1]
    h, c, out = np.zeros(hidden), np.zeros(hidden), []
    for x in features:
        a = weights["weight_ih_l0"] @ x + weights["bias_ih_l0"] + weights["weight_hh_l0"] @ h + weights["bias_hh_l0"]
        i, f, g, o = np.split(a, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.array(out)


def test_batch_recurrent_lstm_runs_its_recurrence_over_the_windows_of_a_batch():
    torch.manual_seed(0)
    memory = BatchRecurrentLSTM(6, 4)
    with torch.no_grad():  # non-zero biases, so that the check covers them (the authors initialise them to 0)
        for name, p in memory.lstm.named_parameters():
            if name.startswith("bias"):
                p.normal_()
    z = torch.randn(5, 6)
    weights = {k: v.detach().double().numpy() for k, v in memory.lstm.state_dict().items()}
    expected = numpy_lstm(weights, z.double().numpy())
    np.testing.assert_allclose(memory(z).detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # window 3's output changes when window 2 before it changes; window 0's is that of the window alone
    other = z.clone()
    other[2] += 1.0
    assert not torch.allclose(memory(z)[3], memory(other)[3])
    torch.testing.assert_close(memory(z)[0], memory(z[:1])[0])


def test_authors_lstm_starts_orthogonal_with_zero_biases():
    memory = BatchRecurrentLSTM(8, 8)
    for name, p in memory.lstm.named_parameters():
        if name.startswith("bias"):
            assert torch.count_nonzero(p) == 0
        else:  # (4·hidden, n): orthonormal columns
            torch.testing.assert_close(p.T @ p, torch.eye(p.shape[1]), atol=1e-5, rtol=0)


def test_authors_profile_shapes_and_parameter_count():
    detector = IAELSTMKLDetector.variant("iae_lstm_kl_soft", "authors")
    net = detector._network(26, 26)
    assert net.sizes == [(32, 32), (16, 16), (8, 8), (4, 4)]  # 26×26 zero-padded by 3 on every side
    assert net.batch_dependent and detector.batch_dependent
    # no bias anywhere, no BatchNorm affine terms: only convolution, LSTM and linear weights
    encoder = 1 * 32 * 25 + 32 * 64 * 25 + 64 * 128 * 25
    lstm = 4 * 2048 * (2048 + 2048) + 2 * 4 * 2048  # LSTM(2048, 2048): weights and its two bias vectors
    latent = 2048 * 128
    decoder = 8 * 128 * 25 + 128 * 64 * 25 + 64 * 32 * 25 + 32 * 1 * 25
    assert sum(p.numel() for p in net.parameters()) == encoder + lstm + latent + decoder
    assert sum(p.numel() for p in net.memory.parameters()) == lstm
    x = torch.rand(4, 32, 32)
    z, x_hat = net.eval()(x)
    assert z.shape == (4, 128) and x_hat.shape == (4, 32, 32)


def test_small_authors_profile_bypasses_its_lstm_in_pretraining():
    p = PROFILES["authors_small"]
    net = IAELSTMKLNet(32, 32, tuple(p["conv_channels"]), latent=p["latent"], lstm_hidden=p["lstm_hidden"],
                       lstm_mode="batch_recurrent")
    assert net.flat == net.to_latent.in_features == 32 * 4 * 4  # the latent layer takes the LSTM or the encoder
    x = torch.rand(3, 32, 32)
    net.eval()
    with torch.no_grad():
        net.memory_on = False
        bypassed = net.encode(x)
        expected = net.to_latent(net.encoder(x.unsqueeze(1)).flatten(1))
    torch.testing.assert_close(bypassed, expected)


def test_authors_kl_gradient_does_not_depend_on_the_latent():
    # KLDivLoss(batchmean)(z, t) = Σ t·(ln t − z) / B: ∂/∂z = −t / B, the same for any z
    for z0 in (torch.zeros(4, 3), torch.randn(4, 3) * 10):
        z = z0.clone().requires_grad_(True)
        torch.manual_seed(1)
        authors_kl(z).backward()
        torch.manual_seed(1)
        target = torch.softmax(torch.randn(4, 3), dim=1)
        torch.testing.assert_close(z.grad, -target / 4)


def windows(n: int, seed: int) -> Windows:
    rng = np.random.default_rng(seed)
    return Windows.from_array(rng.normal(size=(n, 8, 4)).astype(np.float32))


@pytest.fixture(scope="module")
def fitted():
    """One batch-recurrent and one per-sample model, otherwise the authors' settings at a toy size."""
    toy = dict(conv_channels=(4, 8, 8), latent=8, epochs=13, pretrain_epochs=2, batch_size=32,
               warmup_epochs=10, device="cpu")  # 8×4 windows padded to 14×10 → 2×2×8 = 32 features
    train = windows(160, 0)
    return {mode: IAELSTMKLDetector.variant("iae_lstm_kl_soft", "authors_small", lstm_mode=mode, **toy).fit(train)
            for mode in ("batch_recurrent", "per_sample")}


def test_batch_recurrent_scores_depend_on_batch_neighbours_and_per_sample_scores_do_not(fitted):
    test = windows(40, 1)
    reversed_order = test.subset(np.arange(39, -1, -1))
    for mode, detector in fitted.items():
        alone = detector.score(test, batch_size=1)
        batched = detector.score(test, batch_size=16)
        in_reverse = detector.score(reversed_order, batch_size=16)[::-1]
        if mode == "per_sample":
            np.testing.assert_allclose(batched, alone, rtol=1e-4)
            np.testing.assert_allclose(in_reverse, alone, rtol=1e-4)
        else:
            # the first window of a batch is scored as if alone; the others depend on who came before
            np.testing.assert_allclose(batched[::16], alone[::16], rtol=1e-4)
            later = np.setdiff1d(np.arange(40), np.arange(0, 40, 16))
            assert np.all(np.abs(batched[later] - alone[later]) > 1e-6 * np.abs(alone[later]))
            assert not np.allclose(in_reverse, batched, rtol=1e-3)


def test_the_authors_radius_only_rises_after_warm_up(fitted):
    radii = [h["radius"] for h in fitted["per_sample"].history_ if h["phase"] == "joint"]
    assert radii[:10] == [0.0] * 10  # warm-up: R stays 0
    assert radii[10] > 0 and np.all(np.diff(radii[10:]) >= 0)


def test_pipeline_refuses_the_batch_dependent_model(fitted, tmp_path):
    from lstmad.serving.bundle import ModelBundle, ModelMismatchError
    from lstmad.transforms.series import NormalisationStats

    stats = NormalisationStats("zscore", ("a", "b", "c", "d"), (0.0,) * 4, (1.0,) * 4)
    with pytest.raises(ModelMismatchError, match="batch"):
        ModelBundle(fitted["batch_recurrent"], ("a", "b", "c", "d"), 8, 60, stats, 1.0, "percentile", 0.05, {})
    ModelBundle(fitted["per_sample"], ("a", "b", "c", "d"), 8, 60, stats, 1.0, "percentile", 0.05, {})


def test_config_refuses_the_authors_profile(tmp_path):
    conf = tmp_path / "authors.yaml"
    conf.write_text("pipeline: t\nsource:\n  path: x.csv\n  channels: [a, b]\nmodel:\n  detector: iae_lstm_kl\n"
                    "  profile: authors\n")
    with pytest.raises(ConfigError, match=r"authors.yaml: key 'model.profile' 'authors' .*batch"):
        load_config(conf)


def test_a_profile_keeps_its_training_settings_unless_the_config_changes_them():
    from lstmad.config import ModelConfig
    from lstmad.detectors import build_detector

    own = build_detector(ModelConfig(detector="iae_lstm_kl", profile="authors_per_sample")).params
    assert (own.learning_rate, own.batch_size, own.epochs, own.pretrain_epochs) == (1e-4, 512, 20, 10)
    assert own.lstm_mode == "per_sample" and own.nu == pytest.approx(0.898364)
    changed = build_detector(ModelConfig(detector="iae_lstm_kl", profile="authors_per_sample", learning_rate=3e-3,
                                         epochs=7)).params
    assert (changed.learning_rate, changed.batch_size, changed.epochs) == (3e-3, 512, 7)
    small = build_detector(ModelConfig(detector="iae_lstm_kl", profile="small", epochs=8)).params
    assert (small.learning_rate, small.batch_size, small.pretrain_epochs) == (1e-3, 256, 4)  # ModelConfig's own


def test_small_training_sets_get_at_least_min_batches_steps_an_epoch():
    # tuned: batches of 512 but at least 8 an epoch; 100 windows, 20 % held out → 80 trained in batches of 10
    detector = IAELSTMKLDetector.variant("iae_lstm_kl_soft", "tuned", conv_channels=(4, 8, 8), latent=8,
                                         epochs=1, pretrain_epochs=1, device="cpu").fit(windows(100, 2))
    assert detector.params.batch_size == 512 and detector.batch_size_ == 10
    assert [h["windows"] for h in detector.history_] == [80, 80]


def test_a_training_set_leaving_one_window_in_its_last_batch_trains():
    # 71 windows, 20 % held out → 57 trained in batches of 8 (at least 8 a epoch): the last batch holds one window,
    # which the latent BatchNorm cannot train on; it is left out of that epoch
    detector = IAELSTMKLDetector.variant("iae_lstm_kl_soft", "tuned", conv_channels=(4, 8, 8), latent=8,
                                         epochs=1, pretrain_epochs=1, device="cpu").fit(windows(71, 3))
    assert detector.batch_size_ == 8 and [h["windows"] for h in detector.history_] == [56, 56]


def test_windows_cover_the_rows_they_span():
    # windows of 3 rows starting at rows 0, 1 and 6 of a 10-row series cover rows 0–3 and 6–8
    w = Windows(torch.zeros(10, 2), np.array([0, 1, 6]), 3, np.arange(3), np.zeros(3, dtype=np.int64), ["a"],
                np.zeros(3, dtype=np.int8), np.zeros(3, dtype=np.int8))
    np.testing.assert_array_equal(np.flatnonzero(w.covered_rows()), [0, 1, 2, 3, 6, 7, 8])


def test_a_value_beyond_the_training_range_changes_the_score(fitted):
    # the inputs are quantised, not clamped: a window far above the training maximum scores differently from one
    # at the maximum
    detector = fitted["per_sample"]
    top = np.tile(detector.scale_min_ + detector.scale_span_, (8, 1)).astype(np.float32)
    at_max, beyond = Windows.from_array(top[None]), Windows.from_array((top * 50)[None])
    assert detector.score(beyond)[0] != pytest.approx(detector.score(at_max)[0], rel=1e-3)
