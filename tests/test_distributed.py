"""Distributed training: per-rank shards of block files, and DDP across 2 CPU processes (TorchDistributor)
matching a plain one-process loop over the same global batches."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import lstmad.training.distributed
from lstmad import names
from lstmad.dates import DAY_US, MICROS
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.io.tensor_store import block_files
from lstmad.training.distributed import (
    ShardedData,
    assign_shards,
    count_windows,
    file_rows,
    file_windows,
    fit_distributed,
    shard_batches,
    split_by_date,
)
from lstmad.transforms.blocks import BLOCK_SCHEMA, build_blocks
from lstmad.transforms.series import segment_ids

STEP, W, C = 600, 8, 2  # 144 rows a day
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05", "2026-01-06"]


@pytest.fixture(scope="module")
def tensor_root(tmp_path_factory):
    """Six dates of blocks for two assets; asset B only has the first half of 2026-01-03 (uneven files)."""
    root = tmp_path_factory.mktemp("tensors")
    ts = np.arange(len(DAYS) * 144, dtype=np.int64) * STEP * MICROS + 20454 * DAY_US  # 2026-01-01
    rng = np.random.default_rng(1)
    for asset, keep in (("A", np.ones(ts.size, bool)), ("B", ~((ts >= ts[288 + 72]) & (ts < ts[432])))):
        t = np.arange(ts.size)
        values = np.stack([np.sin(t / 9 + len(asset)), np.cos(t / 13)], 1) + 0.05 * rng.normal(size=(ts.size, C))
        rows = build_blocks(asset, ts[keep], values[keep], segment_ids(ts[keep], STEP), None, W, 100, STEP, "s",
                            int(ts[0]), int(ts[-1]) + 1)
        for day in DAYS:
            own_start = [(r[names.BLOCK_START] + r[names.N_HISTORY] * STEP * MICROS) // DAY_US for r in rows]
            mine = [r for r, d in zip(rows, own_start) if d == 20454 + DAYS.index(day)]
            folder = root / f"{names.DATE}={day}"
            folder.mkdir(exist_ok=True)
            pq.write_table(pa.Table.from_pylist(mine, schema=BLOCK_SCHEMA), folder / f"{asset}.parquet")
    return root


def data_of(root, validation_share=1 / 6, shuffle_files=2):
    train, validation = split_by_date(block_files(root, DAYS), validation_share)
    return ShardedData(train, validation, W, shuffle_files=shuffle_files)


def test_shards_cover_every_file_once_balanced_by_rows():
    files = [f"f{i}" for i in range(7)]
    rows = [100, 90, 80, 50, 40, 30, 10]
    shards = assign_shards(files, rows, 2)
    assert sorted(shards[0] + shards[1]) == files
    loads = [sum(rows[files.index(f)] for f in shard) for shard in shards]
    assert abs(loads[0] - loads[1]) <= 10  # greedy largest-first: 200 against 200
    assert assign_shards(files, rows, 1) == [files]


def test_split_holds_out_the_latest_dates(tensor_root):
    train, validation = split_by_date(block_files(tensor_root, DAYS), 0.2)
    assert {f.split("=")[1][:10] for f in validation} == {"2026-01-06"}
    assert len(train) == 10 and len(validation) == 2


def test_each_rank_streams_distinct_windows_of_its_own_shard(tensor_root):
    data = data_of(tensor_root)
    shards = assign_shards(data.train_files, file_rows(data.train_files), 2)
    assert not set(shards[0]) & set(shards[1])
    for rank, shard in enumerate(shards):
        n = count_windows(shard, data)
        assert n == len(file_windows(shard, data))
        steps = n // 32
        batches = list(shard_batches(shard, data, 32, steps, seed=5, epoch=1, rank=rank))
        assert len(batches) == steps and all(b.shape == (32, W, C) for b in batches)
        seen = {b.numpy().tobytes() for batch in batches for b in batch}
        assert len(seen) == steps * 32  # no window twice in an epoch
        everything = {w.numpy().tobytes() for w in file_windows(shard, data).iter_batches(10_000) for w in w}
        assert seen <= everything  # and only windows of this rank's files
        again = list(shard_batches(shard, data, 32, steps, seed=5, epoch=2, rank=rank))
        assert not torch.equal(torch.cat(batches), torch.cat(again))  # a new order each epoch


def detector(**kw):
    # no dropout: the one-process reference below draws no dropout masks
    settings = dict(hidden_sizes=(8,), dropout=0.0, epochs=3, batch_size=64, patience=10, seed=2, device="cpu",
                    learning_rate=5e-3)
    return LSTMForecasterDetector(**{**settings, **kw})


def reference_history(data):
    """A plain PyTorch loop, one process, over the global batches the two ranks form together."""
    model = detector().new_network(C, W)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    shards = assign_shards(data.train_files, file_rows(data.train_files), 2)
    steps = min(count_windows(s, data) for s in shards) // 32
    validation = file_windows(data.validation_files, data)
    history = []
    for epoch in (1, 2, 3):
        losses = []
        rank_batches = [list(shard_batches(shards[r], data, 32, steps, 2, epoch, r)) for r in (0, 1)]
        model.train()
        for part0, part1 in zip(*rank_batches):
            batch = torch.cat([part0, part1])
            loss = torch.mean((model(batch[:, :-1]) - batch[:, -1]) ** 2)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            full = validation.batch(slice(None))
            per_window = torch.mean((model(full[:, :-1]) - full[:, -1]) ** 2, dim=1)
        history.append((float(np.mean(losses)), float(per_window.mean())))
    return history, model


@pytest.mark.spark
def test_ddp_on_two_processes_follows_the_one_process_loss_curve_of_the_same_global_batch(spark, tensor_root):
    data = data_of(tensor_root)
    fitted, summary = fit_distributed(detector(), data, processes=2, local_mode=True, use_gpu=False, threads=1)
    assert summary["world_size"] == 2
    expected, reference = reference_history(data)
    np.testing.assert_allclose([h["train_loss"] for h in fitted.history_], [e[0] for e in expected], rtol=1e-4)
    np.testing.assert_allclose([h["val_loss"] for h in fitted.history_], [e[1] for e in expected], rtol=1e-4)
    # the val loss fell every epoch, so the kept weights are the last epoch's: the reference's
    assert np.all(np.diff([e[1] for e in expected]) < 0)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(fitted.network_.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert summary["validation_windows"] == len(file_windows(data.validation_files, data))
    assert fitted.validation_scores_.shape == (summary["validation_windows"],)


def test_one_rank_in_process_resumes_a_killed_run_to_the_uninterrupted_model(tensor_root, tmp_path, monkeypatch):
    data = data_of(tensor_root)
    whole, _ = fit_distributed(detector(hidden_sizes=(8, 8), dropout=0.3, epochs=4), data)
    real = lstmad.training.distributed.fit_batches

    def killed_after_epoch_two(*args, **kwargs):
        def kill(record):
            if record["epoch"] == 2:
                raise KeyboardInterrupt  # the process dies after the epoch's checkpoint is written
        return real(*args, **{**kwargs, "on_epoch": kill})

    monkeypatch.setattr(lstmad.training.distributed, "fit_batches", killed_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        fit_distributed(detector(hidden_sizes=(8, 8), dropout=0.3, epochs=4, checkpoint_dir=str(tmp_path)), data)
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 2
    resumed, _ = fit_distributed(detector(hidden_sizes=(8, 8), dropout=0.3, epochs=4, checkpoint_dir=str(tmp_path)), data)
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history_], [h["val_loss"] for h in whole.history_],
                               rtol=1e-6)
    for name, value in whole.network_.state_dict().items():
        torch.testing.assert_close(resumed.network_.state_dict()[name], value)


@pytest.mark.spark
def test_two_ranks_resume_from_a_checkpoint_to_the_uninterrupted_model(spark, tensor_root, tmp_path):
    """Both ranks read the checkpoint and continue after its epoch. A 2-epoch run leaves the checkpoint a
    4-epoch run killed after epoch 2 would (constant learning rate, no early stop)."""
    data = data_of(tensor_root)
    settings = dict(hidden_sizes=(8, 8), dropout=0.3)  # dropout on: its per-(epoch, rank) seeds must repeat
    whole, _ = fit_distributed(detector(epochs=4, **settings), data, processes=2, threads=1)
    fit_distributed(detector(epochs=2, checkpoint_dir=str(tmp_path), **settings), data, processes=2, threads=1)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 2
    resumed, _ = fit_distributed(detector(epochs=4, checkpoint_dir=str(tmp_path), **settings), data, processes=2,
                                 threads=1)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history_], [h["val_loss"] for h in whole.history_],
                               rtol=1e-6)
    for name, value in whole.network_.state_dict().items():
        torch.testing.assert_close(resumed.network_.state_dict()[name], value)


def test_windows_ending_inside_excluded_spans_are_left_out_of_the_shards(tensor_root):
    """train.exclude_severity on the sharded path: windows of asset A ending in [t0, t0 + 10 steps) go (A is
    continuous, so exactly 10); B's windows at the same times stay."""
    import dataclasses

    data = data_of(tensor_root)
    files = list(data.train_files)
    t0 = 20455 * DAY_US + 30 * STEP * MICROS  # 2026-01-02 05:00
    spans = (("A", t0, t0 + 10 * STEP * MICROS),)
    excluded = dataclasses.replace(data, excluded_spans=spans)
    assert count_windows(files, data) - count_windows(files, excluded) == 10
    assert lstmad.training.distributed.count_windows_inside(files, data, spans) == (count_windows(files, data), 10)
    kept = file_windows(files, excluded)
    ends_a = kept.end_us[np.asarray(kept.assets, dtype=object)[kept.asset] == "A"]
    assert not ((ends_a >= t0) & (ends_a < t0 + 10 * STEP * MICROS)).any()
    ends_b = kept.end_us[np.asarray(kept.assets, dtype=object)[kept.asset] == "B"]
    assert ((ends_b >= t0) & (ends_b < t0 + 10 * STEP * MICROS)).sum() == 10
