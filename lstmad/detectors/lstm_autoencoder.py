"""LSTM-AE detector (EncDec-AD): score = mean over the window's time steps of the Mahalanobis distance of
the reconstruction error vector under a Gaussian fitted on validation windows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstmad.detectors.gaussian_error import GaussianErrorModel
from lstmad import attribution
from lstmad.detectors.persistence import load_weights, read_config, save_weights, write_config
from lstmad.models.lstm_autoencoder import LSTMAutoencoder
from lstmad.tensors import Windows
from lstmad.training import EpochCallback, TrainingParams, fit_network, loop_settings, resolve_device


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
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(2, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        network = self.new_network(windows.n_channels, windows.window)
        history = fit_network(network, train, validation, self.batch_loss, epochs=p.epochs,
                              batch_size=p.batch_size, device=resolve_device(p.device), on_epoch=on_epoch,
                              **loop_settings(p))
        return self.adopt(network, history, validation)

    # The three steps of fit, apart (see lstmad.distributed).
    batch_loss = staticmethod(_reconstruction_loss)

    def new_network(self, n_channels: int, window: int) -> LSTMAutoencoder:
        self.window_, self.n_channels_ = window, n_channels
        torch.manual_seed(self.params.seed)
        return LSTMAutoencoder(n_channels, self.params.hidden)

    def adopt(self, network: LSTMAutoencoder, history: list[dict], validation: Windows) -> "LSTMAutoencoderDetector":
        """Take a trained network: fit the error Gaussian and the validation scores on ``validation``."""
        self.network_, self.history_ = network, history
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

    attribution_method = "reconstruction_error_share"

    def channel_shares(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        """(N, C) share of each channel in each window's score: its terms of the per-step Mahalanobis
        distances of the reconstruction error, summed over the window's W steps."""
        errors = self._errors(windows, batch_size)
        terms = attribution.mahalanobis_terms(errors - self.error_model_.mean_, self.error_model_.precision_)
        return attribution.shares(terms.sum(axis=1))

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
