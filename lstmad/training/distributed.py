"""Training across processes with DistributedDataParallel, launched by Spark's TorchDistributor.

Every rank streams its own shard of the tensor-block files (whole files, balanced by rows): no rank reads the
whole training set, and a rank holds ``shuffle_files`` files at a time however large the archive. Each rank
takes ``batch_size / world_size`` windows per step and every rank takes the same number of steps, so the
averaged gradient of a step is the gradient of the global batch formed by the ranks' batches together.
The same code runs one rank in this process (world size 1), N CPU processes (gloo) or one process per GPU
(nccl) on Spark executors.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lstmad import names
from lstmad.config import DISTRIBUTABLE
from lstmad.training.loop import Ranks, epoch_seed, fit_batches, loop_settings, resolve_device, summed_loss
from lstmad.transforms.blocks import Windows, windows_from_blocks

log = logging.getLogger("lstmad")


@dataclasses.dataclass(frozen=True)
class ShardedData:
    """The block files every rank draws its shard from, and how windows are cut from them."""

    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    window: int
    max_masked_share: float = 1.0
    exclude_labelled: bool = False
    shuffle_files: int = 4  # files pooled (and shuffled together) per read
    # (asset, from_us, to_us): windows of that asset whose last timestamp lies in [from_us, to_us) are left out
    # (the severe intervals of train.exclude_severity)
    excluded_spans: tuple[tuple[str, int, int], ...] = ()
    state_rows: int = 1  # a window is outside normal operation when any of its last state_rows rows is


def split_by_date(files: Sequence[str], validation_share: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training files, validation files): the latest ``validation_share`` of the dates validate (at least one
    date, and at least one left to train on). Whole dates, because neighbouring windows overlap by W−1 rows."""
    dates = sorted({Path(f).parent.name for f in files})
    if len(dates) < 2:
        raise ValueError(f"distributed training needs at least 2 dates of tensor blocks (one to validate), got "
                         f"{len(dates)}")
    n_val = min(len(dates) - 1, max(1, int(round(len(dates) * validation_share))))
    held_out = set(dates[-n_val:])
    return (tuple(f for f in files if Path(f).parent.name not in held_out),
            tuple(f for f in files if Path(f).parent.name in held_out))


def file_rows(files: Sequence[str]) -> list[int]:
    """Grid rows in each block file (reads only the n_rows column)."""
    return [int(np.sum(pq.read_table(f, columns=[names.N_ROWS]).column(0).to_numpy())) for f in files]


def assign_shards(files: Sequence[str], rows: Sequence[int], world_size: int) -> list[list[str]]:
    """Files per rank: largest first onto the rank with the fewest rows so far (ties: lowest rank, then file
    name); each shard keeps the files' order."""
    load = [0] * world_size
    shards: list[list[str]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(files)), key=lambda i: (-rows[i], files[i])):
        rank = min(range(world_size), key=lambda r: (load[r], r))
        shards[rank].append(files[i])
        load[rank] += rows[i]
    position = {f: i for i, f in enumerate(files)}
    return [sorted(shard, key=position.__getitem__) for shard in shards]


def inside_spans(windows: Windows, spans: Sequence[tuple[str, int, int]]) -> np.ndarray:
    """(N,) whether each window's last timestamp lies in one of its asset's spans (asset, from_us, to_us),
    to_us exclusive."""
    inside = np.zeros(len(windows), dtype=bool)
    if not len(windows) or not spans:
        return inside
    assets = np.asarray(windows.assets, dtype=object)[windows.asset]
    for asset, start, end in spans:
        inside |= (assets == asset) & (windows.end_us >= start) & (windows.end_us < end)
    return inside


def file_windows(files: Sequence[str], data: ShardedData) -> Windows:
    """The windows of ``files`` that training uses: not too masked, ending in normal operation (no configured
    operating state), (with exclude_labelled) no labelled anomalous row, and none ending inside
    ``data.excluded_spans``."""
    if not files:
        raise ValueError("no tensor-block files to read windows from")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    windows = windows_from_blocks(table, data.window, max_masked_share=data.max_masked_share,
                                  state_rows=data.state_rows)
    windows = windows.subset(np.flatnonzero(windows.state_last == 0))
    if data.exclude_labelled:
        windows = windows.subset(np.flatnonzero(windows.label_any != 1))
    if data.excluded_spans:
        windows = windows.subset(np.flatnonzero(~inside_spans(windows, data.excluded_spans)))
    return windows


def count_windows(files: Sequence[str], data: ShardedData) -> int:
    """Training windows in ``files``, one file read at a time."""
    return count_windows_inside(files, data, ())[0]


def count_windows_inside(files: Sequence[str], data: ShardedData, spans: Sequence[tuple[str, int, int]]
                         ) -> tuple[int, int]:
    """(training windows in ``files``, how many of them end inside ``spans``), in one read of each file."""
    every = inside = 0
    for f in files:
        windows = file_windows([f], data)
        every += len(windows)
        inside += int(inside_spans(windows, spans).sum())
    return every, inside


def shard_batches(files: Sequence[str], data: ShardedData, local_batch: int, steps: int, seed: int, epoch: int,
                  rank: int) -> Iterator[torch.Tensor]:
    """Exactly ``steps`` batches (local_batch, W, C) float32 from this rank's files, in a random order of
    (seed, epoch, rank): the files are shuffled, read ``shuffle_files`` at a time, and the windows of each
    read shuffled; a read's remainder carries into the next batch. Needs steps·local_batch ≤ the shard's
    windows (count_windows)."""
    rng = np.random.default_rng(epoch_seed(seed, epoch, rank))
    order = rng.permutation(len(files))
    carry: Optional[torch.Tensor] = None
    produced = 0
    for lo in range(0, order.size, data.shuffle_files):
        if produced == steps:
            return
        windows = file_windows([files[i] for i in np.sort(order[lo:lo + data.shuffle_files])], data)
        if not len(windows):
            continue  # a read of short blocks only
        perm = rng.permutation(len(windows))
        at = 0
        if carry is not None:
            take = perm[:local_batch - carry.shape[0]]
            carry = torch.cat([carry, windows.batch(np.sort(take))])
            at = take.size
            if carry.shape[0] < local_batch:
                continue
            yield carry
            produced, carry = produced + 1, None
        while at + local_batch <= perm.size and produced < steps:
            yield windows.batch(np.sort(perm[at:at + local_batch]))
            produced, at = produced + 1, at + local_batch
        if at < perm.size and produced < steps:
            carry = windows.batch(np.sort(perm[at:]))
    if produced < steps:
        raise RuntimeError(f"rank {rank}: shard gave {produced} of {steps} batches; its windows were miscounted")


def train_rank(job: dict) -> dict:
    """One rank of a training run (what TorchDistributor starts in each process; world size from the RANK /
    WORLD_SIZE environment, 1 when unset).

    ``job``: kind, params (the detector's parameter dict), data (ShardedData), use_gpu, threads.
    Returns {"state_dict": bytes, "history", "shard_windows" (training windows in all shards),
    "windows_per_epoch" (those trained each epoch: ranks × steps × local batch), "steps_per_epoch",
    "world_size", "n_channels"}, the same on every rank.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lstmad.detectors import DETECTORS

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if job["use_gpu"] and torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    else:  # one rank in this process follows model.device; CPU ranks of a group stay on the CPU
        device = resolve_device(job["params"].get("device", "auto")) if world == 1 else torch.device("cpu")
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        detector = DETECTORS[job["kind"]](**job["params"])
        p, data = detector.params, job["data"]
        if p.batch_size % world:
            raise ValueError(f"model.batch_size {p.batch_size} must be a multiple of the {world} training processes")
        local_batch = p.batch_size // world
        ranks = Ranks(rank, world)
        train_shard = assign_shards(data.train_files, file_rows(data.train_files), world)[rank]
        validation_shard = assign_shards(data.validation_files, file_rows(data.validation_files), world)[rank]
        local_windows = count_windows(train_shard, data)
        fewest_windows, total_windows = local_windows, local_windows
        if world > 1:
            fewest = torch.tensor([local_windows], dtype=torch.int64, device=device)
            total = fewest.clone()
            dist.all_reduce(fewest, op=dist.ReduceOp.MIN)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            fewest_windows, total_windows = int(fewest.item()), int(total.item())
        # every rank takes as many steps as the smallest shard allows: equal steps, or the group hangs
        steps = fewest_windows // local_batch
        if job.get("max_train_windows"):
            steps = min(steps, max(1, job["max_train_windows"] // p.batch_size))
        if steps == 0:
            raise ValueError(f"the smallest shard has {fewest_windows} training windows, fewer than one batch "
                             f"of {local_batch}; use fewer processes or a smaller model.batch_size")
        if rank == 0 and steps * p.batch_size < 0.9 * total_windows and not job.get("max_train_windows"):
            log.warning("shards are uneven: each epoch trains %d of %d windows (%d ranks × %d steps × %d); more, "
                        "smaller block files balance better", steps * p.batch_size, total_windows, world, steps,
                        local_batch)
        n_channels = pq.read_table(data.train_files[0], columns=[names.N_CHANNELS]).column(0)[0].as_py()
        network = detector.new_network(n_channels, data.window)
        model = DistributedDataParallel(network.to(device)) if world > 1 else network

        def validation_loss(net, bf16):
            """(Σ loss × windows, windows) over this rank's validation files, one file at a time."""
            batches = (b for f in validation_shard for b in file_windows([f], data).iter_batches(local_batch))
            return summed_loss(net, batches, detector.batch_loss, device, bf16)

        history = fit_batches(model, lambda epoch: shard_batches(train_shard, data, local_batch, steps, p.seed,
                                                                 epoch, rank),
                              validation_loss, detector.batch_loss, epochs=p.epochs, device=device, ranks=ranks,
                              **loop_settings(p))
        # Every rank returns the same result: after DDP the weights, losses and counts are identical on all of
        # them, and TorchDistributor's local mode keeps whichever rank's output is written last.
        buffer = io.BytesIO()
        torch.save({k: v.cpu() for k, v in network.state_dict().items()}, buffer)
        return {"state_dict": buffer.getvalue(), "history": history, "shard_windows": total_windows,
                "steps_per_epoch": steps, "world_size": world, "n_channels": n_channels,
                "windows_per_epoch": steps * p.batch_size}
    finally:
        if world > 1:
            dist.destroy_process_group()


def fit_distributed(detector, data: ShardedData, processes: int = 1, local_mode: bool = True,
                    use_gpu: bool = False, threads: int = 0, max_train_windows: int = 0) -> tuple[object, dict]:
    """Train ``detector`` (a DISTRIBUTABLE kind) on ``data`` with ``processes`` ranks and adopt the result.

    One process runs here; more run through TorchDistributor (needs an active SparkSession; ``local_mode``
    starts them on the driver, otherwise as barrier tasks on the executors, which must see the block files
    and the checkpoint folder). Returns (the fitted detector, rank 0's summary without the weights).
    """
    if detector.kind not in DISTRIBUTABLE:
        raise ValueError(f"model.detector {detector.kind!r} trains in one process only (train.distributed."
                         f"processes: 0); distributed training supports {list(DISTRIBUTABLE)}")
    job = {"kind": detector.kind, "params": dataclasses.asdict(detector.params), "data": data,
           "use_gpu": use_gpu, "threads": threads, "max_train_windows": max_train_windows}
    if processes <= 1 and local_mode:
        result = train_rank(job)
    else:
        from pyspark.ml.torch.distributor import TorchDistributor

        result = TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=use_gpu).run(train_rank, job)
    network = detector.new_network(result["n_channels"], data.window)
    network.load_state_dict(torch.load(io.BytesIO(result.pop("state_dict")), map_location="cpu"))
    validation = file_windows(data.validation_files, data)
    stillness = None
    if getattr(detector.params, "frozen_channels", False):
        from lstmad.detectors.frozen import FrozenChannels, trailing_runs

        # the training windows' stillness, counted file by file (the ranks never hand their windows back)
        stillness = FrozenChannels().fit(np.zeros((0, validation.n_channels), dtype=np.int64), data.window)
        for file in data.train_files:
            stillness.add(trailing_runs(file_windows((file,), data)))
    detector.adopt(network, result["history"], validation, stillness_of=stillness)
    result["validation_windows"] = len(validation)
    log.info("distributed training: %d processes, %d steps/epoch of %d windows, %d epochs", result["world_size"],
             result["steps_per_epoch"], detector.params.batch_size, len(result["history"]))
    return detector, result
