"""A device-agnostic training loop with early stopping, shared by the detectors."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from lstmad.tensors import Windows

@dataclasses.dataclass
class TrainingParams:
    """Settings every trained detector shares; detectors' parameter classes extend it."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    validation_share: float = 0.2
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str = ""  # where each epoch's checkpoint goes; a run finding one there resumes from it


BatchLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]
EpochCallback = Callable[[dict], None]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def fit_network(model: nn.Module, train: Windows, validation: Windows, batch_loss: BatchLoss, *, epochs: int,
                batch_size: int, learning_rate: float, patience: int, device: torch.device, seed: int,
                on_epoch: Optional[EpochCallback] = None, weight_decay: float = 0.0,
                checkpoint_dir: Optional[str | Path] = None) -> list[dict]:
    """Adam (with L2 ``weight_decay``) on ``batch_loss`` over shuffled training windows; keeps the weights of
    the best validation epoch.

    Stops after ``patience`` epochs without improvement. Returns one dict per epoch:
    {"epoch", "train_loss", "val_loss"}. ``model`` ends on ``device`` with the best weights loaded.
    With ``checkpoint_dir``, every epoch ends by saving model, optimiser, epoch, history, early-stopping state
    and both random generators there (``last.pt``, replaced atomically); a call that finds a checkpoint
    resumes after its epoch and ends with the model an uninterrupted run would have given.
    """
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history: list[dict] = []
    best_loss, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    first_epoch = 1
    checkpoint = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)  # our own file, written below
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        history, best_loss, best_state, stale = state["history"], state["best_loss"], state["best_state"], state["stale"]
        first_epoch = state["epoch"] + 1
        if state["stopped"]:
            first_epoch = epochs + 1
    for epoch in range(first_epoch, epochs + 1):
        model.train()
        order = generator.permutation(len(train))
        total, count = 0.0, 0
        for lo in range(0, order.size, batch_size):
            index = np.sort(order[lo:lo + batch_size])
            batch = train.batch(index).to(device, non_blocking=True)
            optimiser.zero_grad(set_to_none=True)
            loss = batch_loss(model, batch)
            loss.backward()
            optimiser.step()
            # .item() detaches: summing tensors would keep every batch's autograd graph alive.
            total += loss.item() * index.size
            count += index.size
        val_loss = evaluate_loss(model, validation, batch_loss, batch_size, device)
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss}
        history.append(record)
        if val_loss < best_loss - 1e-9:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        stopped = stale >= patience
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                          "numpy_rng": generator.bit_generator.state,
                                          "torch_rng": torch.get_rng_state(), "history": history,
                                          "best_loss": best_loss, "best_state": best_state, "stale": stale,
                                          "epoch": epoch, "stopped": stopped})
        if on_epoch:
            on_epoch(record)
        if stopped:
            break
    model.load_state_dict(best_state)
    return history


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@torch.no_grad()
def evaluate_loss(model: nn.Module, windows: Windows, batch_loss: BatchLoss, batch_size: int,
                  device: torch.device) -> float:
    """Mean of ``batch_loss`` over all windows, in eval mode (no dropout)."""
    model.eval()
    total, count = 0.0, 0
    for batch in windows.iter_batches(batch_size):
        total += batch_loss(model, batch.to(device)).item() * batch.shape[0]
        count += batch.shape[0]
    return total / count if count else math.nan
