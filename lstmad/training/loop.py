"""A device-agnostic training loop with early stopping, shared by the detectors, in one process or as one rank
of a DistributedDataParallel group (lstmad.training.distributed)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from lstmad.progress import Progress
from lstmad.training.params import LR_SCHEDULES, PRECISIONS, TrainingParams
from lstmad.transforms.blocks import Windows

BatchLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]
EpochCallback = Callable[[dict], None]


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in a DDP group; sums go through all_reduce when there is more than one rank."""

    rank: int = 0
    world_size: int = 1

    def all_reduce(self, values: list[float], device: torch.device, op: str = "sum") -> list[float]:
        """``values`` reduced elementwise over the ranks (``op``: sum or max); the values themselves with one
        rank."""
        if self.world_size == 1:
            return list(values)
        import torch.distributed as dist

        reduced = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return reduced.tolist()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for ``precision`` on ``device``: ``auto`` means fp32 everywhere. Measured on an H200
    (docs/benchmarks.md, the GPU check, two runs): bf16 autocast never trained the forecaster or the
    autoencoder more than 1 % faster than fp32 at batch 4,096 (level to 1.28× slower) and moves their scores;
    only IAE-LSTM-KL trained faster (1.17–1.26×). So bf16 is asked for, not assumed."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return False
    if precision == "bf16" and device.type != "cuda":
        # oneDNN has no bf16 LSTM on most CPUs ("could not create a primitive descriptor"): say so up front
        raise ValueError(f"model.precision bf16 needs a CUDA device, training runs on {device}; use auto or fp32")
    return precision == "bf16"


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed per (run, epoch, rank): batch order and dropout of an epoch depend on nothing else, so a resumed
    run repeats them without carrying generator state."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def loop_settings(p: TrainingParams) -> dict:
    """The keyword arguments of fit_network / fit_batches that come straight from ``p``."""
    return dict(learning_rate=p.learning_rate, patience=p.patience, seed=p.seed,
                checkpoint_dir=p.checkpoint_dir or None, lr_schedule=p.lr_schedule, precision=p.precision,
                compile=p.compile, pin_memory=p.pin_memory)


def shuffled_batches(windows: Windows, batch_size: int, seed: int, epoch: int,
                     skip_single: bool = False) -> Iterable[torch.Tensor]:
    """The windows in a random order of (seed, epoch), ``batch_size`` at a time: (B, W, C) float32 batches;
    ``skip_single`` leaves out a last batch of one window (a BatchNorm over the batch cannot train on it)."""
    order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(windows))
    for lo in range(0, order.size, batch_size):
        index = order[lo:lo + batch_size]
        if skip_single and index.size == 1 and order.size > 1:
            continue
        yield windows.batch(np.sort(index))


def fit_network(model: nn.Module, train: Windows, validation: Windows, batch_loss: BatchLoss, *, epochs: int,
                batch_size: int, learning_rate: float, patience: int, device: torch.device, seed: int,
                on_epoch: Optional[EpochCallback] = None, weight_decay: float = 0.0,
                checkpoint_dir: Optional[str | Path] = None, lr_schedule: str = "constant",
                precision: str = "fp32", compile: bool = False, pin_memory: bool = False,
                amsgrad: bool = False, keep: str = "best", skip_single: bool = False) -> list[dict]:
    """fit_batches over in-memory windows: shuffled training batches (``skip_single``: see shuffled_batches),
    validation loss over all validation windows."""
    def validation_loss(network: nn.Module, bf16: bool) -> tuple[float, int]:
        return summed_loss(network, validation.iter_batches(batch_size), batch_loss, device, bf16)

    def epoch_batches(epoch: int) -> Iterable[torch.Tensor]:
        return shuffled_batches(train, batch_size, seed, epoch, skip_single)

    return fit_batches(model, epoch_batches, validation_loss,
                       batch_loss, epochs=epochs, learning_rate=learning_rate, patience=patience, device=device,
                       seed=seed, on_epoch=on_epoch, weight_decay=weight_decay, checkpoint_dir=checkpoint_dir,
                       lr_schedule=lr_schedule, precision=precision, compile=compile, pin_memory=pin_memory,
                       amsgrad=amsgrad, keep=keep, windows_per_epoch=len(train))


def fit_batches(model: nn.Module, epoch_batches: Callable[[int], Iterable[torch.Tensor]],
                validation_loss: Callable[[nn.Module, bool], tuple[float, int]], batch_loss: BatchLoss, *,
                epochs: int, learning_rate: float, patience: int, device: torch.device, seed: int,
                on_epoch: Optional[EpochCallback] = None, weight_decay: float = 0.0,
                checkpoint_dir: Optional[str | Path] = None, lr_schedule: str = "constant",
                precision: str = "fp32", compile: bool = False, pin_memory: bool = False,
                ranks: Ranks = Ranks(), amsgrad: bool = False, keep: str = "best",
                windows_per_epoch: Optional[int] = None) -> list[dict]:
    """Adam (with L2 ``weight_decay``) on ``batch_loss`` over ``epoch_batches(epoch)`` ((B, W, C) batches);
    keeps the weights of the best validation epoch and stops after ``patience`` epochs without improvement.

    ``model`` may be wrapped in DistributedDataParallel; then every rank calls this with its own batches (the
    same number of equal-sized batches on every rank, so averaged gradients are those of the global batch),
    losses are summed over ``ranks`` and only rank 0 writes checkpoints. ``validation_loss(network, bf16)``
    returns this rank's (sum of batch losses × batch sizes, window count).
    ``keep="last"`` trains every epoch and ends on the last weights (no early stopping); ``amsgrad`` switches
    Adam to its AMSGrad form.
    Returns one dict per epoch: {"epoch", "train_loss", "val_loss", "learning_rate", "windows" (trained, all
    ranks), "seconds" (the epoch's wall time, validation included)}; ``model`` ends on
    ``device`` with the best weights loaded (the last with ``keep="last"``).
    With ``checkpoint_dir``, every epoch ends by saving model, optimiser, scheduler, epoch, history and
    early-stopping state there (``last.pt``, replaced atomically); a call that finds a checkpoint resumes
    after its epoch. Batch order and dropout are seeded per (seed, epoch, rank), so the resumed run ends with
    the model an uninterrupted run would have given.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    module = getattr(model, "module", model)  # the network itself, also when DDP wraps it
    model.to(device)
    bf16 = uses_bf16(precision, device)
    step_model = torch.compile(model) if compile else model
    pin = pin_memory and device.type == "cuda"
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay, amsgrad=amsgrad)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
                 if lr_schedule == "cosine" else torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0))
    history: list[dict] = []
    best_loss, best_state, stale = math.inf, copy.deepcopy(module.state_dict()), 0
    first_epoch = 1
    checkpoint = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)  # our own file, written below
        module.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_loss, best_state, stale = state["history"], state["best_loss"], state["best_state"], state["stale"]
        first_epoch = epochs + 1 if state["stopped"] else state["epoch"] + 1
    if ranks.world_size > 1:
        # every rank reads the checkpoint itself; one that cannot see it would train different epochs and the
        # group would hang in its collectives
        low, high = ranks.all_reduce([-first_epoch, first_epoch], device, op="max")
        if -low != high:
            raise RuntimeError(f"ranks disagree on the epoch to resume at ({-low} to {high}): every rank must see "
                               f"the checkpoint folder {checkpoint_dir}")
    for epoch in range(first_epoch, epochs + 1):
        epoch_started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, ranks.rank))  # dropout masks of this epoch and rank
        model.train()
        # summed on the device: a .item() per step would wait for the GPU every step
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        rate = optimiser.param_groups[0]["lr"]
        # periodic lines (lstmad.progress): a long epoch shows it is alive, with its rate and ETA
        progress = Progress(f"train epoch {epoch}/{epochs}" + (f" rank {ranks.rank}" if ranks.world_size > 1 else ""),
                            windows_per_epoch)
        for batch in epoch_batches(epoch):
            batch = (batch.pin_memory() if pin else batch).to(device, non_blocking=pin)
            optimiser.zero_grad(set_to_none=True)
            with _autocast(device, bf16):
                loss = batch_loss(step_model, batch)
            loss.backward()
            optimiser.step()
            # detached: summing the losses themselves would keep every batch's autograd graph alive
            total += loss.detach().double() * batch.shape[0]
            count += batch.shape[0]
            progress.advance(batch.shape[0])
        scheduler.step()
        val_sum, val_count = validation_loss(module, bf16)
        total, count, val_sum, val_count = ranks.all_reduce([total.item(), count, val_sum, val_count], device)
        if not val_count or not math.isfinite(val_sum):
            # without a finite validation loss no epoch would count as best and the initial weights would stay
            raise ValueError(f"epoch {epoch}: validation loss over {int(val_count)} windows is {val_sum}; "
                             "need validation windows with finite values")
        val_loss = val_sum / val_count
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss, "learning_rate": rate,
                  "windows": int(count), "seconds": time.perf_counter() - epoch_started}
        history.append(record)
        if ranks.rank == 0:
            progress.finish(f"train loss {record['train_loss']:.4g}, validation loss {val_loss:.4g}")
        if val_loss < best_loss - 1e-9:
            best_loss, best_state, stale = val_loss, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
        stopped = stale >= patience and keep == "best"
        if checkpoint is not None and ranks.rank == 0:
            _save_checkpoint(checkpoint, {"model": module.state_dict(), "optimiser": optimiser.state_dict(),
                                          "scheduler": scheduler.state_dict(), "history": history,
                                          "best_loss": best_loss, "best_state": best_state, "stale": stale,
                                          "epoch": epoch, "stopped": stopped})
        if on_epoch:
            on_epoch(record)
        if stopped:
            break
    if keep == "best":
        module.load_state_dict(best_state)
    return history


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@torch.no_grad()
def summed_loss(network: nn.Module, batches: Iterable[torch.Tensor], batch_loss: BatchLoss, device: torch.device,
                bf16: bool = False) -> tuple[float, int]:
    """(Σ batch loss × batch size, number of windows) over ``batches``, in eval mode (no dropout)."""
    network.eval()
    total, count = 0.0, 0
    for batch in batches:
        with _autocast(device, bf16):
            total += batch_loss(network, batch.to(device)).item() * batch.shape[0]
        count += batch.shape[0]
    return total, count

