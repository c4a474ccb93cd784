"""On a CUDA device: bf16 training, torch.compile, GPU scoring in process and in Spark tasks, each compared with
the CPU. Skips where there is no CUDA (CI); runs wherever there is."""

import numpy as np
import pytest
import torch

from lstmad.detectors import IAELSTMKLDetector, LSTMForecasterDetector
from lstmad.transforms.blocks import Windows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

W, C = 16, 3


def windows(n=3000, seed=0):
    t = np.arange(n + W)
    series = np.stack([np.sin(t / 7), np.cos(t / 5), np.sin(t / 11)], 1)
    series = series + 0.05 * np.random.default_rng(seed).normal(size=series.shape)
    return Windows.from_array(np.lib.stride_tricks.sliding_window_view(series, W, axis=0).transpose(0, 2, 1)[:n])


def test_bf16_training_on_cuda_scores_like_the_same_model_on_cpu():
    data = windows()
    detector = LSTMForecasterDetector(hidden_sizes=(32, 32), dropout=0.0, epochs=3, batch_size=512, seed=0,
                                      device="cuda", precision="bf16").fit(data)
    losses = [h["train_loss"] for h in detector.history_]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert next(detector.network_.parameters()).dtype == torch.float32  # autocast, weights stay fp32
    fp32 = LSTMForecasterDetector(hidden_sizes=(32, 32), dropout=0.0, epochs=3, batch_size=512, seed=0,
                                  device="cuda", precision="fp32").fit(data)
    fp32_losses = [h["train_loss"] for h in fp32.history_]
    assert losses != fp32_losses  # bf16 autocast really ran: same seed and batches, other rounding
    np.testing.assert_allclose(losses, fp32_losses, rtol=0.1)  # and trains the same model, near enough
    on_gpu = detector.score(data)
    on_cpu = detector.to("cpu").score(data)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=2e-2, atol=1e-5)  # TF32/cuDNN against CPU fp32


def test_auto_precision_is_fp32_on_cuda_and_compile_trains():
    from lstmad.training.loop import resolve_device, uses_bf16

    assert not uses_bf16("auto", resolve_device("cuda")) and uses_bf16("bf16", resolve_device("cuda"))
    settings = dict(hidden_sizes=(16,), dropout=0.0, epochs=2, batch_size=512, seed=0, device="cuda",
                    precision="fp32")
    compiled = LSTMForecasterDetector(compile=True, **settings).fit(windows(2000))
    eager = LSTMForecasterDetector(**settings).fit(windows(2000))
    np.testing.assert_allclose([h["val_loss"] for h in compiled.history_], [h["val_loss"] for h in eager.history_],
                               rtol=1e-3)


def test_iae_lstm_kl_scores_on_cuda_like_on_cpu():
    data = windows(1500)
    detector = IAELSTMKLDetector.variant("iae_lstm_kl_soft", "small", epochs=2, pretrain_epochs=2,
                                         device="cuda").fit(data)
    on_gpu = detector.score(data)
    # under bf16 autocast (as scoring with precision bf16 runs) the scores come back, near the fp32 ones
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        in_bf16 = detector.score(data)
    assert np.all(np.isfinite(in_bf16))
    np.testing.assert_allclose(in_bf16, on_gpu, rtol=0.1, atol=1e-3)
    np.testing.assert_allclose(on_gpu, detector.to("cpu").score(data), rtol=2e-2, atol=1e-5)


def test_the_autoencoder_scores_under_bf16_autocast_near_fp32():
    from lstmad.detectors import LSTMAutoencoderDetector

    data = windows(1500)
    detector = LSTMAutoencoderDetector(hidden=16, epochs=2, device="cuda", precision="fp32").fit(data)
    fp32 = detector.score(data)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        bf16 = detector.score(data)
    assert np.all(np.isfinite(bf16))
    np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=1e-3)


@pytest.mark.spark
def test_spark_tasks_score_on_the_gpu_like_the_cpu(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lstmad.benchmarks.speed import build_archive, train_model
    from lstmad.serving.bundle import ModelBundle
    from lstmad.serving.scoring import score_blocks
    from lstmad.spark import score as transforms

    build_archive(5000, tmp_path)
    model_dir = train_model("lstm_forecaster", tmp_path)
    bundle = ModelBundle.load(model_dir)
    stats = {bundle.stats.stats_id: bundle.stats}
    files = sorted(str(f) for f in (tmp_path / "tensors").glob("date=*/*.parquet"))
    expected = pa.concat_tables([score_blocks(bundle, pq.read_table(f), stats) for f in files])
    payload = spark.sparkContext.broadcast(transforms.model_payload(model_dir))
    got = transforms.file_scores(spark, files, "cuda-test", payload, {k: v.to_dict() for k, v in stats.items()},
                                 2048, device="cuda").toArrow()
    keys = [("asset_id", "ascending"), ("timestamp_us", "ascending")]
    expected, got = expected.sort_by(keys), got.sort_by(keys)
    assert got.num_rows == expected.num_rows
    np.testing.assert_allclose(got.column("score").to_numpy(), expected.column("score").to_numpy(), rtol=2e-2,
                               atol=1e-5)
