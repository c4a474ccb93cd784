"""Stacked LSTM forecaster detector: next-step prediction, score = squared error of the predicted last row; or,
with driver channels, a normal-behaviour model: the response channels of the last row predicted from the driver
channels of the whole window (wind speed → power, ambient → temperatures), score = their residuals, so a
fault that breaks the relation between channels shows even when every channel still looks normal alone. With
``residual_steps`` k > 1 the residual is the mean over the window's last k rows, each predicted the same way
(with ``residual_spread``, their root mean square too)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstmad.detectors.base import Detector
from lstmad.detectors.frozen import StillnessFloor
from lstmad.detectors.gaussian_error import GaussianErrorModel, cross_fitted_scores
from lstmad.detectors.regimes import RegimeErrorModel, cross_fitted_regime_scores
from lstmad.models.lstm_forecaster import StackedLSTMForecaster
from lstmad.training.loop import EpochCallback, fit_network, loop_settings, resolve_device
from lstmad.training.params import TrainingParams
from lstmad.transforms import attribution
from lstmad.transforms.blocks import Windows


@dataclasses.dataclass(frozen=True)
class ForecasterParams(TrainingParams):
    """Architecture and training settings of the stacked LSTM forecaster."""

    hidden_sizes: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    error_model: str = "squared"  # or "mahalanobis": Gaussian of validation errors (Malhotra et al. 2015)
    drivers: tuple[int, ...] = ()  # channel indices that drive the others (normal-behaviour model); () forecasts
    # k: a window is scored by the mean of the residuals of its last k predicted rows, not the last one alone.
    # A fault that shifts a channel by less than its noise (an offset, a drift, a gain) moves each residual
    # a little but their mean by as much, while the mean's noise shrinks (the EWMA/MEWMA charts of statistical
    # process control, here over a moving window); 1: the last row.
    residual_steps: int = 1
    # With k ≥ 2 and the Mahalanobis error model: each response's root-mean-square residual over the k rows
    # joins the mean (a 2R-long error vector), so a burst of noise, which the mean averages away, shows too
    residual_spread: bool = False
    # A window's score is at least what the rarity of its stillest channel is worth on the score's own scale
    # (lstmad.detectors.frozen): a stuck sensor shows even when it is a driver, which the model never scores.
    frozen_channels: bool = False
    # ≥ 2, with the Mahalanobis error model: one error Gaussian per operating regime (k-means of the predicted
    # values on validation windows; lstmad.detectors.regimes), for residuals whose spread depends on the regime
    error_regimes: int = 0
    # k > 1: consecutive windows are scored k at a time from one pass over their rows (chunked_step_errors):
    # each scored row predicted once, from at least its window's rows: (W−2+k)/k network steps per window
    # instead of W−1 (1/13 at W = 26, k = 25); 1: each window alone, from exactly its own rows. A window's score
    # then depends on which consecutive windows are scored with it: the validation windows are scored the same
    # way only when they are consecutive too (not once model.max_train_windows has thinned them), and the
    # MLflow pyfunc model, handed windows side by side, scores each alone (docs/training.md)
    scoring_chunk: int = 1


class LSTMForecasterDetector(StillnessFloor, Detector):
    """fit(windows) → self; score(windows) → (N,) mean squared next-step error of each window's last row (of
    the mean error of its last ``residual_steps`` rows).

    Windows are (N, W, C): the first W−1 rows predict row W; with ``drivers`` (D channel indices), the
    drivers' W rows predict the other R = C − D channels of row W and only those are scored. With
    ``residual_steps`` k > 1 each of the last k rows is predicted the same way (from the rows up to it) and the
    window's error vector is the mean of their k errors. With ``frozen_channels`` a window scores at least
    what the stillness of its stillest channel is worth (lstmad.detectors.frozen, fitted on the training
    windows, mapped onto the validation scores). Fitted state: ``network_``, ``n_channels_``, ``window_``,
    ``history_`` (per-epoch losses), ``validation_scores_`` (scores of the held-out windows), ``frozen_``.
    """

    kind = "lstm_forecaster"
    params_class = ForecasterParams
    # Each window's score describes its last timestamp (the row that was forecast).
    score_alignment = "last"

    def judged_rows(self, window: int) -> int:
        """A normal-behaviour model: the window's last ``residual_steps`` rows (its inputs are the drivers,
        valid in any state); a plain forecaster: every row, since each predicts the next from the responses."""
        return self.params.residual_steps if self.params.drivers else window

    def fit(self, windows: Windows, on_epoch: Optional[EpochCallback] = None) -> "LSTMForecasterDetector":
        if len(windows) < 2:
            raise ValueError(f"need at least 2 training windows, got {len(windows)}")
        p = self.params
        self.n_channels_, self.window_ = windows.n_channels, windows.window
        # Hold out the latest windows (by end time), not a random sample: neighbouring windows overlap by
        # W−1 rows, so a random split would validate on near-copies of training windows.
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(1, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        device = resolve_device(p.device)
        network = self.new_network(self.n_channels_, self.window_)
        history = fit_network(network, train, validation, self.batch_loss, epochs=p.epochs,
                              batch_size=p.batch_size, device=device, on_epoch=on_epoch, **loop_settings(p))
        return self.adopt(network, history, validation, stillness_of=train)

    # The three steps of fit, apart: lstmad.training.distributed trains new_network on batch_loss across processes and
    # hands the result to adopt.
    def batch_loss(self, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted rows (step_errors); batch (B, W, C)."""
        return torch.mean(self.step_errors(model, batch) ** 2)

    def responses(self, n_channels: int) -> list[int]:
        """The channels the model predicts and scores: all, or those that are not drivers."""
        drivers = set(self.params.drivers)
        return [c for c in range(n_channels) if c not in drivers]

    def step_errors(self, model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """(B, k, R) prediction errors of the last k = ``residual_steps`` rows of each window in ``batch`` (B, W,
        C): every channel of a row from the rows before it, or its responses from the drivers of the rows up to
        it (its own included)."""
        steps = self.params.residual_steps
        if not self.params.drivers:
            actual = batch[:, -steps:, :]
            return model(batch[:, :-1, :], steps=steps).reshape(actual.shape) - actual
        actual = batch[:, -steps:, self.responses(batch.shape[2])]
        return model(batch[:, :, list(self.params.drivers)], steps=steps).reshape(actual.shape) - actual

    def new_network(self, n_channels: int, window: int) -> StackedLSTMForecaster:
        """A freshly initialised network (seeded: weight initialisation is part of the seeded run)."""
        self.n_channels_, self.window_ = n_channels, window
        torch.manual_seed(self.params.seed)
        return self.network_of_shape(n_channels)

    def network_of_shape(self, n_channels: int) -> StackedLSTMForecaster:
        drivers = tuple(self.params.drivers)
        # the first row has no row before it to be forecast from; a normal-behaviour model predicts every row
        most_steps = self.window_ - (0 if drivers else 1)
        if not 1 <= self.params.residual_steps <= most_steps:
            raise ValueError(f"residual_steps {self.params.residual_steps} must be between 1 and {most_steps} "
                             f"for windows of {self.window_} rows")
        if drivers and (max(drivers) >= n_channels or len(set(drivers)) >= n_channels or min(drivers) < 0):
            raise ValueError(f"drivers {list(drivers)} must be distinct channel indices below {n_channels}, "
                             "leaving at least one response channel")
        if not drivers:
            return StackedLSTMForecaster(n_channels, tuple(self.params.hidden_sizes), self.params.dropout)
        return StackedLSTMForecaster(len(drivers), tuple(self.params.hidden_sizes), self.params.dropout,
                                     n_outputs=n_channels - len(drivers))

    def adopt(self, network: StackedLSTMForecaster, history: list[dict], validation: Windows,
              stillness_of=None) -> "LSTMForecasterDetector":
        """Take a trained network: fit the error model on ``validation`` and score the validation windows (out
        of fold under the Mahalanobis error model: see gaussian_error.cross_fitted_scores). With
        ``frozen_channels``, how still each channel sits is learnt from ``stillness_of`` (the training
        windows, or a FrozenChannels counted over them; the validation windows when not given) and mapped
        onto the validation scores."""
        self.network_, self.history_ = network, history
        self.error_model_ = None
        errors, predicted = self._residuals(validation)
        if self.params.error_model == "mahalanobis" and self.params.error_regimes >= 2:
            self.error_model_ = RegimeErrorModel(self.params.error_regimes, seed=self.params.seed).fit(errors, predicted)
            scores = cross_fitted_regime_scores(errors, predicted, validation.end_us, self.error_model_)
        elif self.params.error_model == "mahalanobis":
            self.error_model_ = GaussianErrorModel().fit(errors)
            scores = cross_fitted_scores(errors, validation.end_us)
        else:
            scores = self._scores_of(errors, predicted)
        self.validation_scores_ = self.fit_stillness(stillness_of, validation, scores)
        self.keep_validation_times(validation)
        return self

    @torch.no_grad()
    def _residuals(self, windows: Windows, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """(prediction errors, predictions) of the windows' last rows (each the mean over the last
        ``residual_steps`` rows), (N, R) each (R = C without drivers); with ``residual_spread`` the errors are
        (N, 2R): the R means, then the R root-mean-square errors. With ``scoring_chunk`` k > 1, runs of
        consecutive windows are scored k at a time from one pass over their rows (chunked_step_errors)."""
        self._check_fitted()
        if windows.n_channels != self.n_channels_ or windows.window != self.window_:
            raise ValueError(f"windows are {windows.window}×{windows.n_channels}, the model expects "
                             f"{self.window_}×{self.n_channels_}")
        network = self.network_.eval()
        device = next(network.parameters()).device
        responses = self.responses(self.n_channels_)
        r = len(responses)
        spread = self.params.residual_spread
        errors = np.empty((len(windows), 2 * r if spread else r), dtype=np.float64)
        predicted = np.empty((len(windows), r), dtype=np.float64)
        chunk = self.params.scoring_chunk
        if chunk > 1:
            for index, step, actual, rms in self.chunked_step_errors(network, windows, chunk, batch_size, device):
                errors[index] = (torch.cat([step, rms], dim=1) if spread else step).double().cpu().numpy()
                predicted[index] = (step + actual).double().cpu().numpy()
            return errors, predicted
        steps = self.params.residual_steps
        for lo in range(0, len(windows), batch_size):
            batch = windows.batch(slice(lo, lo + batch_size)).to(device)
            step = self.step_errors(network, batch)  # prediction − actual
            actual = batch[:, -steps:, responses]
            mean = step.mean(dim=1)
            if spread:
                mean = torch.cat([mean, step.square().mean(dim=1).sqrt()], dim=1)
            errors[lo:lo + batch.shape[0]] = mean.double().cpu().numpy()
            predicted[lo:lo + batch.shape[0]] = (step + actual).mean(dim=1).double().cpu().numpy()
        return errors, predicted

    def chunked_step_errors(self, network, windows: Windows, chunk: int, batch_size: int, device):
        """Yields (window positions (n,), mean errors (n, R), mean actual values (n, R), root-mean-square errors
        (n, R)) of all ``windows``, k =
        ``chunk`` consecutive windows (starts s..s+k−1 of one series) at a time from one pass of the network over
        their W−1+k rows: each row a window scores (its last ``residual_steps``) is predicted once, from the
        chunk's rows up to it (before it for a plain forecaster, up to and including it for a normal-behaviour
        model) — at least those its window alone would give, at most k−1 more — instead of once per window:
        (W−2+k)/k network steps per window instead of W−1. A run of consecutive windows is cut from its first
        window, so a window's score depends on which of its neighbours are in ``windows``. Windows without a
        consecutive neighbour are scored alone, exactly as with k = 1."""
        r, drivers = self.params.residual_steps, list(self.params.drivers)
        responses = self.responses(self.n_channels_)
        w = self.window_
        starts = np.asarray(windows.starts, dtype=np.int64)
        order = np.argsort(starts, kind="stable")
        sorted_starts = starts[order]
        # runs of consecutive starts, cut into chunks of ≤ k windows: (first position in order, length)
        breaks = np.flatnonzero(np.diff(sorted_starts) != 1) + 1
        run_first = np.concatenate([[0], breaks])
        run_length = np.diff(np.concatenate([run_first, [sorted_starts.size]]))
        firsts, lengths = [], []
        for first, length in zip(run_first.tolist(), run_length.tolist()):
            full = length // chunk
            firsts.extend(first + i * chunk for i in range(full))
            lengths.extend([chunk] * full)
            if length % chunk:
                firsts.append(first + full * chunk)
                lengths.append(length % chunk)
        firsts, lengths = np.asarray(firsts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        series = windows.series
        for m in np.unique(lengths).tolist():
            group = firsts[lengths == m]
            span = w - 1 + m  # rows of a chunk: its first window's W plus m − 1 later rows
            per_batch = max(1, batch_size * w // span)  # the rows of batch_size windows per pass
            for lo in range(0, group.size, per_batch):
                picked = group[lo:lo + per_batch]
                rows = torch.as_tensor(sorted_starts[picked], dtype=torch.long)
                # (b, span, C): series rows s..s+span−1 of each chunk
                views = series.unfold(0, span, 1)[rows].transpose(1, 2).to(device)
                steps = m + r - 1  # every window's last r rows
                if drivers:
                    out = network(views[:, :, drivers], steps=steps)
                else:
                    out = network(views[:, :-1, :], steps=steps)
                actual = views[:, -steps:, responses]
                step = out.reshape(actual.shape) - actual  # (b, m + r − 1, R)
                # window j of the chunk: the mean over its last r rows = steps j..j+r−1
                mean_error = step.unfold(1, r, 1).mean(dim=3)  # (b, m, R)
                mean_actual = actual.unfold(1, r, 1).mean(dim=3)
                rms_error = step.square().unfold(1, r, 1).mean(dim=3).sqrt()
                position = order[picked[:, None] + np.arange(m)[None, :]].reshape(-1)
                yield (position, mean_error.reshape(-1, len(responses)), mean_actual.reshape(-1, len(responses)),
                       rms_error.reshape(-1, len(responses)))

    def score(self, windows: Windows, batch_size: int = 4096) -> np.ndarray:
        """(N,) float64 scores of N windows (N, W, C): mean squared error of the forecast last row (of the mean
        error of the last ``residual_steps`` rows), or its Mahalanobis distance under the validation error
        Gaussian."""
        return self.with_floor(self._scores_of(*self._residuals(windows, batch_size)), windows)[0]

    attribution_method = "forecast_error_share"

    def channel_shares(self, windows: Windows, batch_size: int = 4096) -> np.ndarray:
        """(N, C) share of each channel in each window's score: its squared forecast error over the sum, or
        with the Mahalanobis error model its term of the distance (lstmad.transforms.attribution); drivers,
        never scored, get 0."""
        return self.score_and_shares(windows, lambda scores: np.ones(scores.size, dtype=bool), batch_size)[1]

    def score_and_shares(self, windows: Windows, selected, batch_size: int = 4096):
        """score and channel_shares of the selected windows from one forward pass (Detector.score_and_shares)."""
        errors, predicted = self._residuals(windows, batch_size)
        return self.floored_with_shares(self._scores_of(errors, predicted), windows, selected,
                                        lambda picked: self._shares_of(errors[picked], predicted[picked]))

    def _scores_of(self, errors: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(N, R) prediction errors and predictions → (N,) scores."""
        model = getattr(self, "error_model_", None)
        if isinstance(model, RegimeErrorModel):
            return model.score(errors, predicted)
        if model is not None:
            return model.score(errors)
        return np.mean(errors ** 2, axis=1)

    def _shares_of(self, errors: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(N, R) prediction errors (N, 2R with ``residual_spread``: a response's mean and RMS terms are summed)
        and predictions → (N, C) channel shares (drivers 0)."""
        model = getattr(self, "error_model_", None)
        if isinstance(model, RegimeErrorModel):
            per_response = attribution.shares(model.terms(errors, predicted))
        elif model is not None:
            per_response = attribution.shares(attribution.mahalanobis_terms(errors - model.mean_, model.precision_))
        else:
            per_response = attribution.shares(errors ** 2)
        if self.params.residual_spread:
            r = per_response.shape[1] // 2
            per_response = per_response[:, :r] + per_response[:, r:]
        shares = np.zeros((errors.shape[0], self.n_channels_), dtype=np.float64)
        shares[:, self.responses(self.n_channels_)] = per_response
        return shares

    def saved_state(self) -> dict:
        return {"history": self.history_,
                "error_model": self.error_model_.to_dict() if self.error_model_ is not None else None,
                **self.stillness_state()}

    def restore(self, state: dict, directory: Path, device: str) -> None:
        saved_error_model = state.get("error_model")
        if saved_error_model and "centres" in saved_error_model:
            self.error_model_ = RegimeErrorModel.from_dict(saved_error_model)
        else:
            self.error_model_ = GaussianErrorModel.from_dict(saved_error_model) if saved_error_model else None
        self.restore_stillness(state)
        self.network_ = self.load_network(self.network_of_shape(self.n_channels_), directory, device)

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("detector is not fitted: call fit() or load() first")
