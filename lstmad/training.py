"""A device-agnostic training loop with early stopping, shared by the detectors."""

from __future__ import annotations

import copy
import dataclasses
import math
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
                on_epoch: Optional[EpochCallback] = None, weight_decay: float = 0.0) -> list[dict]:
    """Adam (with L2 ``weight_decay``) on ``batch_loss`` over shuffled training windows; keeps the weights of
    the best validation epoch.

    Stops after ``patience`` epochs without improvement. Returns one dict per epoch:
    {"epoch", "train_loss", "val_loss"}. ``model`` ends on ``device`` with the best weights loaded.
    """
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history: list[dict] = []
    best_loss, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, epochs + 1):
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
        if on_epoch:
            on_epoch(record)
        if val_loss < best_loss - 1e-9:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return history


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
