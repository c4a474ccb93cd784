"""The shared training loop: checkpoints every epoch, and a run killed mid-training resumes to the same model."""

import numpy as np
import pytest
import torch

from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.transforms.blocks import Windows

W, C = 12, 2


def windows(seed=0, n=600):
    t = np.arange(n + W)
    series = np.stack([np.sin(t / 7), np.cos(t / 5)], 1) + 0.05 * np.random.default_rng(seed).normal(size=(n + W, C))
    return Windows.from_array(np.lib.stride_tricks.sliding_window_view(series, W, axis=0).transpose(0, 2, 1))


class Killed(RuntimeError):
    pass


def detector(**kwargs):
    # dropout on: the resumed run must also restore the random generators to match
    return LSTMForecasterDetector(hidden_sizes=(8,), dropout=0.2, epochs=4, batch_size=64, patience=10, seed=3,
                                  device="cpu", **kwargs)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_uninterrupted_model(tmp_path):
    data = windows()
    uninterrupted = detector().fit(data)

    def kill_after_second(record):
        if record["epoch"] == 2:
            raise Killed("simulated kill after epoch 2")

    with pytest.raises(Killed):
        detector(checkpoint_dir=str(tmp_path)).fit(data, on_epoch=kill_after_second)
    assert (tmp_path / "last.pt").exists()
    epochs_run = []
    resumed = detector(checkpoint_dir=str(tmp_path)).fit(data, on_epoch=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [3, 4]  # epochs 1–2 were not trained again
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history_],
                               [h["val_loss"] for h in uninterrupted.history_], rtol=1e-6)
    for name, value in uninterrupted.network_.state_dict().items():
        torch.testing.assert_close(resumed.network_.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.score(data), uninterrupted.score(data), rtol=1e-5)


def test_cosine_schedule_is_followed_and_bf16_on_cpu_is_refused_up_front():
    data = windows()
    fitted = detector(lr_schedule="cosine").fit(data)
    rates = [h["learning_rate"] for h in fitted.history_]
    # cosine annealing over 4 epochs from 1e-3: 1e-3·(1 + cos(π·e/4))/2 for e = 0..3
    np.testing.assert_allclose(rates, [1e-3 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)], rtol=1e-9)
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        detector(precision="bf16").fit(data)


def test_auto_precision_is_fp32_on_every_device_and_bf16_is_asked_for(monkeypatch):
    from lstmad.training.loop import uses_bf16

    # measured on an H200 (docs/benchmarks.md): bf16 autocast trained the forecaster and the autoencoder no faster;
    # even a card that supports bf16 trains in fp32 unless asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert not uses_bf16("auto", torch.device("cuda")) and not uses_bf16("auto", torch.device("cpu"))
    assert uses_bf16("bf16", torch.device("cuda")) and not uses_bf16("fp32", torch.device("cuda"))


def test_iae_lstm_kl_scores_reach_numpy_when_its_latents_are_bf16():
    # under bf16 autocast on a GPU the encoder hands back bf16 latents, which NumPy cannot hold (seen on an H200)
    from lstmad.detectors import IAELSTMKLDetector

    data = windows()
    detector = IAELSTMKLDetector.variant("iae_lstm_kl_soft", "small", epochs=1, pretrain_epochs=1).fit(data)
    fp32 = detector.score(data)
    encode = detector.network_.encode
    detector.network_.encode = lambda x: encode(x).to(torch.bfloat16)
    in_bf16 = detector.score(data)
    assert in_bf16.dtype == np.float64 and np.all(np.isfinite(in_bf16))
    np.testing.assert_allclose(in_bf16, fp32, rtol=0.05, atol=1e-3)  # latents rounded to bf16's 8 bits
