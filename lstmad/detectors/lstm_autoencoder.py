"""LSTM-AE detector (EncDec-AD): score = mean over the window's time steps of the Mahalanobis distance of
the reconstruction error vector under a Gaussian fitted on validation windows (with ``frozen_channels``, at
least what the window's stillest channel's stillness is worth: lstmad.detectors.frozen)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstmad.detectors.base import Detector
from lstmad.detectors.frozen import StillnessFloor
from lstmad.detectors.gaussian_error import GaussianErrorModel, cross_fitted_scores
from lstmad.models.lstm_autoencoder import LSTMAutoencoder
from lstmad.training.loop import EpochCallback, fit_network, loop_settings, resolve_device
from lstmad.training.params import TrainingParams
from lstmad.transforms import attribution
from lstmad.transforms.blocks import Windows


@dataclasses.dataclass(frozen=True)
class AutoencoderParams(TrainingParams):
    hidden: int = 64
    batch_size: int = 128
    frozen_channels: bool = False  # as the forecaster's (lstmad.detectors.frozen)


def _reconstruction_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return torch.mean((model(batch) - torch.flip(batch, dims=[1])) ** 2)


class LSTMAutoencoderDetector(StillnessFloor, Detector):
    """fit(windows (N, W, C)) → self; score(windows) → (N,). Fitted: network_, error_model_, history_,
    validation_scores_, frozen_."""

    kind = "lstm_autoencoder"
    params_class = AutoencoderParams
    score_alignment = "window"

    def fit(self, windows: Windows, on_epoch: Optional[EpochCallback] = None) -> "LSTMAutoencoderDetector":
        p = self.params
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(2, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        network = self.new_network(windows.n_channels, windows.window)
        history = fit_network(network, train, validation, self.batch_loss, epochs=p.epochs,
                              batch_size=p.batch_size, device=resolve_device(p.device), on_epoch=on_epoch,
                              **loop_settings(p))
        return self.adopt(network, history, validation, stillness_of=train)

    # The three steps of fit, apart (see lstmad.training.distributed).
    batch_loss = staticmethod(_reconstruction_loss)

    def new_network(self, n_channels: int, window: int) -> LSTMAutoencoder:
        self.window_, self.n_channels_ = window, n_channels
        torch.manual_seed(self.params.seed)
        return LSTMAutoencoder(n_channels, self.params.hidden)

    def adopt(self, network: LSTMAutoencoder, history: list[dict], validation: Windows,
              stillness_of=None) -> "LSTMAutoencoderDetector":
        """Take a trained network: fit the error Gaussian on ``validation``, and score the validation windows
        out of fold (each tenth by a Gaussian of the rest: scores of the windows the Gaussian was fitted on
        are biased low, and a threshold from them alarms on most new normal rows). With ``frozen_channels``
        the stillness of ``stillness_of`` (the training windows, or a FrozenChannels counted over them; else
        the validation windows) floors them."""
        self.network_, self.history_ = network, history
        errors = self._errors(validation)
        self.error_model_ = GaussianErrorModel().fit(errors.reshape(-1, self.n_channels_))
        self.validation_scores_ = self.fit_stillness(stillness_of, validation,
                                                     cross_fitted_scores(errors, validation.end_us))
        self.keep_validation_times(validation)
        return self

    @torch.no_grad()
    def _errors(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        """Reconstruction error vectors (N, W, C), in the window's own time order."""
        self.network_.eval()
        device = next(self.network_.parameters()).device
        out = [(torch.flip(self.network_(b.to(device)), dims=[1]) - b.to(device)).float().cpu().numpy()
               for b in windows.iter_batches(batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.window_, self.n_channels_))

    def score(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        return self.with_floor(self._scores_of(self._errors(windows, batch_size)), windows)[0]

    attribution_method = "reconstruction_error_share"

    def channel_shares(self, windows: Windows, batch_size: int = 2048) -> np.ndarray:
        """(N, C) share of each channel in each window's score: its terms of the per-step Mahalanobis
        distances of the reconstruction error, summed over the window's W steps (all on the still channel
        where its stillness set the score)."""
        return self.score_and_shares(windows, lambda scores: np.ones(scores.size, dtype=bool), batch_size)[1]

    def score_and_shares(self, windows: Windows, selected, batch_size: int = 2048):
        """score and channel_shares of the selected windows from one forward pass (Detector.score_and_shares)."""
        errors = self._errors(windows, batch_size)
        return self.floored_with_shares(self._scores_of(errors), windows, selected,
                                        lambda picked: self._shares_of(errors[picked]))

    def _scores_of(self, errors: np.ndarray) -> np.ndarray:
        """(N, W, C) reconstruction errors → (N,) mean per-step Mahalanobis distance."""
        per_step = self.error_model_.score(errors.reshape(-1, self.n_channels_)).reshape(errors.shape[:2])
        return per_step.mean(axis=1)

    def _shares_of(self, errors: np.ndarray) -> np.ndarray:
        terms = attribution.mahalanobis_terms(errors - self.error_model_.mean_, self.error_model_.precision_)
        return attribution.shares(terms.sum(axis=1))

    def saved_state(self) -> dict:
        return {"error_model": self.error_model_.to_dict(), "history": self.history_, **self.stillness_state()}

    def restore(self, state: dict, directory: Path, device: str) -> None:
        self.error_model_ = GaussianErrorModel.from_dict(state["error_model"])
        self.restore_stillness(state)
        self.network_ = self.load_network(LSTMAutoencoder(self.n_channels_, self.params.hidden), directory, device)
