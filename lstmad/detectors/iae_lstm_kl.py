"""IAE-LSTM-KL detector (Huang et al., ../shared/references/003) and the ablations of its Tables III and V.

One implementation, switched by IAEParams: CAE, Deep SVDD, IAEAD, IAE-KL, IAE-LSTM, DLSVDD, DLSVDD-KL,
DSVDD-KL and IAE-LSTM-KL, each with a soft or hard boundary where it has an SVDD term.
Training: autoencoder pre-training (reconstruction only), centre c = mean pre-trained latent, then joint
training of L = L_svdd + λ1·KL(ẑ ‖ N(0, I)) + λ2·L_rec + λ3·weight decay (eq. 13–16).
Score (eq. 17) = ‖ẑ − c‖²; for the CAE (no SVDD term) the reconstruction error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lstmad.detectors.base import Detector
from lstmad.detectors.variants import PROFILES, VARIANTS  # noqa: F401 (re-exported)
from lstmad.models.iae_lstm_kl import IAELSTMKLNet
from lstmad.training.loop import EpochCallback, fit_network, loop_settings, resolve_device
from lstmad.training.params import TrainingParams
from lstmad.transforms import attribution
from lstmad.transforms.blocks import Windows


@dataclasses.dataclass(frozen=True)
class IAEParams(TrainingParams):
    """Switches and sizes. svdd: "soft" | "hard" | "none"; kl_weight λ1, rec_weight λ2, weight_decay λ3."""

    svdd: str = "soft"
    use_lstm: bool = True
    lstm_gates: bool = True
    kl_weight: float = 0.1
    rec_weight: float = 1.0
    weight_decay: float = 1e-6
    nu: float = 0.1
    conv_channels: tuple[int, int, int] = (8, 16, 32)
    latent: int = 32
    lstm_hidden: int = 128
    bias: bool = True
    pretrain_epochs: int = 5
    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 128


def svdd_loss(z: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor, mode: str, nu: float) -> torch.Tensor:
    """Deep SVDD objective on latents z (B, d): soft R² + 1/(ν·B)·Σ max(0, ‖z−c‖² − R²) (eq. 3), or hard
    mean ‖z−c‖² (eq. 4)."""
    distance = torch.sum((z - centre) ** 2, dim=1)
    if mode == "soft":
        return radius ** 2 + torch.mean(torch.clamp(distance - radius ** 2, min=0.0)) / nu
    return distance.mean()


def kl_to_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(N(m_i, v_i) ‖ N(0, 1)), m_i and v_i the mean and variance of the components
    of each latent vector ẑ_i (B, d): 0.5·(v + m² − 1 − ln v), the per-sample reading of eq. 15. It
    penalises a latent vector whose components are all alike (v → 0); it does not by itself stop different
    windows from mapping to one vector (see docs/benchmarks.md for the batch-wise reading, tried and worse)."""
    mean = z.mean(dim=1)
    var = z.var(dim=1, unbiased=False).clamp_min(1e-6)
    return torch.mean(0.5 * (var + mean ** 2 - 1.0 - torch.log(var)))


def soft_radius(distances: np.ndarray, nu: float) -> float:
    """Radius update of soft-boundary Deep SVDD: the (1−ν)-quantile of the distances ‖z−c‖ (not squared)."""
    return float(np.quantile(np.sqrt(distances), 1.0 - nu))


class IAELSTMKLDetector(Detector):
    """fit(windows (N, W, C)) → self; score(windows) → (N,) latent distance (or reconstruction error).

    Fitted state: network_, centre_ (d,), radius_, scale_min_ / scale_span_ (C,) of the input min–max
    scaling (the decoder ends in a sigmoid), history_, validation_scores_.
    """

    kind = "iae_lstm_kl"
    params_class = IAEParams
    score_alignment = "window"

    @classmethod
    def variant(cls, name: str, profile: str = "small", **overrides) -> "IAELSTMKLDetector":
        if name not in VARIANTS:
            raise ValueError(f"unknown IAE-LSTM-KL variant {name!r}; known: {sorted(VARIANTS)}")
        return cls(IAEParams(**{**PROFILES[profile], **VARIANTS[name], **overrides}))

    def _network(self, window: int, channels: int) -> IAELSTMKLNet:
        p = self.params
        return IAELSTMKLNet(window, channels, tuple(p.conv_channels), latent=p.latent, use_lstm=p.use_lstm,
                            lstm_hidden=p.lstm_hidden, lstm_gates=p.lstm_gates, use_decoder=True, bias=p.bias)

    def _scaled(self, batch: torch.Tensor) -> torch.Tensor:
        return (batch - self._min_t.to(batch.device)) / self._span_t.to(batch.device)

    def fit(self, windows: Windows, on_epoch: Optional[EpochCallback] = None) -> "IAELSTMKLDetector":
        p = self.params
        torch.manual_seed(p.seed)
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        series = windows.series
        self.scale_min_ = series.min(dim=0).values.double().numpy()
        self.scale_span_ = np.maximum(series.max(dim=0).values.double().numpy() - self.scale_min_, 1e-6)
        self._set_scaling()
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(1, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        device = resolve_device(p.device)
        self.network_ = self._network(self.window_, self.n_channels_).to(device)

        def reconstruction(model, batch):
            x = self._scaled(batch)
            _, x_hat = model(x)
            return torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2)

        # No checkpoints: the soft radius lives outside the loop's state (resume covers the other detectors).
        settings = {**loop_settings(p), "checkpoint_dir": None}
        history = fit_network(self.network_, train, validation, reconstruction, epochs=p.pretrain_epochs,
                              batch_size=p.batch_size, device=device, on_epoch=_tagged(on_epoch, "pretrain"),
                              **settings)
        self.history_ = [{**h, "phase": "pretrain"} for h in history]
        self.centre_ = self._latents(train, device).mean(axis=0)
        # Ruff et al.: keep centre coordinates away from 0, where a bias-free network trivially maps
        self.centre_ = np.where(np.abs(self.centre_) < 0.1, np.where(self.centre_ < 0, -0.1, 0.1), self.centre_)
        self.radius_ = 0.0
        if p.svdd != "none":
            centre = torch.as_tensor(self.centre_, dtype=torch.float32, device=device)
            radius = torch.zeros((), device=device)

            def joint(model, batch):
                x = self._scaled(batch)
                z, x_hat = model(x)
                loss = svdd_loss(z, centre, radius, p.svdd, p.nu)
                if p.kl_weight:
                    loss = loss + p.kl_weight * kl_to_standard_normal(z)
                if p.rec_weight:
                    loss = loss + p.rec_weight * torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2)
                return loss

            def after_epoch(record):
                if p.svdd == "soft" and record["epoch"] >= p.warmup_epochs:
                    radius.fill_(soft_radius(self._distances(train, device), p.nu))
                record["radius"] = float(radius)
                if on_epoch:
                    on_epoch({**record, "phase": "joint"})

            joint_history = fit_network(self.network_, train, validation, joint, epochs=p.epochs,
                                        batch_size=p.batch_size, device=device, on_epoch=after_epoch,
                                        weight_decay=p.weight_decay, **{**settings, "seed": p.seed + 1})
            self.history_ += [{**h, "phase": "joint"} for h in joint_history]
            if p.svdd == "soft":
                self.radius_ = soft_radius(self._distances(train, device), p.nu)
        self.validation_scores_ = self.score(validation)
        self.keep_validation_times(validation)
        return self

    def _set_scaling(self) -> None:
        self._min_t = torch.as_tensor(self.scale_min_, dtype=torch.float32)
        self._span_t = torch.as_tensor(self.scale_span_, dtype=torch.float32)

    @torch.no_grad()
    def _latents(self, windows: Windows, device, batch_size: int = 1024) -> np.ndarray:
        self.network_.eval()
        out = [self.network_.encode(self._scaled(b.to(device))).cpu().numpy()
               for b in windows.iter_batches(batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.params.latent))

    def _distances(self, windows: Windows, device) -> np.ndarray:
        return np.sum((self._latents(windows, device) - self.centre_) ** 2, axis=1)

    @torch.no_grad()
    def score(self, windows: Windows, batch_size: int = 1024) -> np.ndarray:
        """(N,) scores: ‖ẑ − c‖² with an SVDD term, else mean squared reconstruction error."""
        if not hasattr(self, "network_"):
            raise RuntimeError("detector is not fitted: call fit() or load() first")
        if windows.window != self.window_ or windows.n_channels != self.n_channels_:
            raise ValueError(f"windows are {windows.window}×{windows.n_channels}, the model expects "
                             f"{self.window_}×{self.n_channels_}")
        device = next(self.network_.parameters()).device
        if self.params.svdd != "none":
            return self._distances(windows, device).astype(np.float64)
        self.network_.eval()
        out = []
        for batch in windows.iter_batches(batch_size):
            x = self._scaled(batch.to(device))
            _, x_hat = self.network_(x)
            out.append(torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2, dim=(1, 2)).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    @property
    def attribution_method(self) -> str:
        return "latent_distance_gradient" if self.params.svdd != "none" else "reconstruction_error_share"

    def channel_shares(self, windows: Windows, batch_size: int = 1024) -> np.ndarray:
        """(N, C) share of each channel in each window's score. With an SVDD term: Σ_t |∂‖ẑ − c‖²/∂x_tc|,
        the gradient of the latent distance with respect to the (scaled) input, summed over the W steps;
        without: the channel's squared reconstruction errors summed over the steps."""
        device = next(self.network_.parameters()).device
        self.network_.eval()
        centre = torch.as_tensor(self.centre_, dtype=torch.float32, device=device)
        out = []
        for batch in windows.iter_batches(batch_size):
            x = self._scaled(batch.to(device)).detach()
            if self.params.svdd != "none":
                x.requires_grad_(True)
                distance = torch.sum((self.network_.encode(x) - centre) ** 2)
                (gradient,) = torch.autograd.grad(distance, x)
                terms = gradient.abs().sum(dim=1)
            else:
                with torch.no_grad():
                    _, x_hat = self.network_(x)
                    terms = ((x_hat - x.clamp(0.0, 1.0)) ** 2).sum(dim=1)
            out.append(terms.double().cpu().numpy())
        return attribution.shares(np.concatenate(out)) if out else np.zeros((0, self.n_channels_))

    def saved_state(self) -> dict:
        return {"centre": self.centre_.tolist(), "radius": self.radius_, "scale_min": self.scale_min_.tolist(),
                "scale_span": self.scale_span_.tolist(), "history": self.history_}

    def restore(self, state: dict, directory: Path, device: str) -> None:
        self.centre_ = np.asarray(state["centre"])
        self.radius_ = state["radius"]
        self.scale_min_ = np.asarray(state["scale_min"])
        self.scale_span_ = np.asarray(state["scale_span"])
        self._set_scaling()
        self.network_ = self.load_network(self._network(self.window_, self.n_channels_), directory, device)


def _tagged(callback: Optional[EpochCallback], phase: str) -> Optional[EpochCallback]:
    return None if callback is None else (lambda record: callback({**record, "phase": phase}))
