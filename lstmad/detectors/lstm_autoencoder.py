"""LSTM-AE detector (EncDec-AD): score = mean over the window's time steps of the Mahalanobis distance of
the reconstruction error vector under a Gaussian fitted on validation windows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstmad.detectors.gaussian_error import GaussianErrorModel
from lstmad.detectors.persistence import load_weights, read_config, save_weights, write_config
from lstmad.models.lstm_autoencoder import LSTMAutoencoder
from lstmad.tensors import Windows
from lstmad.training import EpochCallback, TrainingParams, fit_network, resolve_device


@dataclasses.dataclass
class AutoencoderParams(TrainingParams):
    hidden: int = 64
    batch_size: int = 128


def _reconstruction_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return torch.mean((model(batch) - torch.flip(batch, dims=[1])) ** 2)


class LSTMAutoencoderDetector:
    """fit(windows (N, W, C)) → self; score(windows) → (N,). Fitted: network_, error_model_, history_,
    validation_scores_."""

    kind = "lstm_autoencoder"
    score_alignment = "window"

    def __init__(self, params: Optional[AutoencoderParams] = None, **overrides):
        self.params = dataclasses.replace(params or AutoencoderParams(), **overrides)

    def fit(self, windows: Windows, on_epoch: Optional[EpochCallback] = None) -> "LSTMAutoencoderDetector":
        p = self.params
        torch.manual_seed(p.seed)
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(2, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        device = resolve_device(p.device)
        self.network_ = LSTMAutoencoder(self.n_channels_, p.hidden)
        self.history_ = fit_network(self.network_, train, validation, _reconstruction_loss, epochs=p.epochs,
                                    batch_size=p.batch_size, learning_rate=p.learning_rate, patience=p.patience,
                                    device=device, seed=p.seed, on_epoch=on_epoch,
                                    checkpoint_dir=p.checkpoint_dir or None)
        self.error_model_ = GaussianErrorModel().fit(self._errors(validation).reshape(-1, self.n_channels_))
        self.validation_scores_ = self.score(validation)
        return self

    @torch.no_grad()
    def _errors(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        """Reconstruction error vectors (N, W, C), in the window's own time order."""
        self.network_.eval()
        device = next(self.network_.parameters()).device
        out = [(torch.flip(self.network_(b.to(device)), dims=[1]) - b.to(device)).cpu().numpy()
               for b in windows.iter_batches(batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.window_, self.n_channels_))

    def score(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        errors = self._errors(windows, batch_size)
        per_step = self.error_model_.score(errors.reshape(-1, self.n_channels_)).reshape(errors.shape[:2])
        return per_step.mean(axis=1)

    def to(self, device) -> "LSTMAutoencoderDetector":
        self.network_.to(device)
        return self

    def save(self, directory: str | Path) -> None:
        save_weights(write_config(directory, {
            "detector": self.kind, "params": dataclasses.asdict(self.params), "window": self.window_,
            "n_channels": self.n_channels_, "error_model": self.error_model_.to_dict(), "history": self.history_}),
            self.network_)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "LSTMAutoencoderDetector":
        config = read_config(directory)
        detector = cls(AutoencoderParams(**config["params"]))
        detector.window_, detector.n_channels_ = config["window"], config["n_channels"]
        detector.error_model_ = GaussianErrorModel.from_dict(config["error_model"])
        detector.history_ = config["history"]
        detector.network_ = load_weights(LSTMAutoencoder(detector.n_channels_, detector.params.hidden), directory,
                                         device)
        return detector
