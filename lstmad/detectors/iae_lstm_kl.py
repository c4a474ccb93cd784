"""IAE-LSTM-KL detector (Huang et al., ../shared/references/003) and the ablations of its Tables III and V.

One implementation, switched by IAEParams: CAE, Deep SVDD, IAEAD, IAE-KL, IAE-LSTM, DLSVDD, DLSVDD-KL,
DSVDD-KL and IAE-LSTM-KL, each with a soft or hard boundary where it has an SVDD term.
Training: autoencoder pre-training (reconstruction only), centre c = mean pre-trained latent, then joint
training of L = L_svdd + λ1·KL(ẑ ‖ N(0, I)) + λ2·L_rec + λ3·weight decay (eq. 13–16).
Score (eq. 17) = ‖ẑ − c‖²; for the CAE (no SVDD term) the reconstruction error.

Switches reproduce the authors' code (profile ``authors``, lstmad.detectors.variants) where it differs from
the text: the batch-recurrent LSTM, pre-training without the LSTM, their KL term, a radius ratchet updated
every batch, AMSGrad, 8-bit inputs zero-padded to 32×32, the last epoch kept. A detector with the
batch-recurrent LSTM says so in ``batch_dependent``; lstmad.serving.bundle refuses it.
"""

from __future__ import annotations

import dataclasses
import math
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
    """Switches and sizes. svdd: "soft" | "hard" | "none"; kl_weight λ1, rec_weight λ2, weight_decay λ3.

    Authors'-code switches (defaults = the paper's text): lstm_mode "per_sample" | "batch_recurrent";
    pretrain_lstm False pre-trains the autoencoder with the LSTM bypassed (needs lstm_hidden equal to the
    flattened encoder output); kl_form "per_sample" | "authors" (KLDivLoss(batchmean) of the raw latent against
    softmax of Gaussian noise); radius_update "epoch" (the (1−ν)-quantile of the training distances after each
    epoch) | "batch_ratchet" (after every batch, of R² + max(0, d − R²)/ν: it never falls); amsgrad; slope of the
    leaky ReLUs; latent_norm; decoder_bias; input_scaling "train_minmax" | "none" (inputs already in [0, 1]);
    quantise_bits (0: none); pad (zeros added on every side of a window); keep "best" (validation epoch) |
    "last" (the joint phase's last epoch); epoch_criterion "loss" (the joint loss, whose soft-boundary R² term
    moves) | "distance" (mean validation ‖ẑ − c‖² + λ2·reconstruction, on the fixed scale of the centre);
    min_batches: the batch size shrinks so that an epoch has at least this many batches (0: batch_size as is).
    """

    svdd: str = "soft"
    use_lstm: bool = True
    lstm_gates: bool = True
    kl_weight: float = 0.1
    rec_weight: float = 1.0
    weight_decay: float = 1e-6
    nu: float = 0.1
    conv_channels: tuple[int, int, int] = (8, 16, 32)
    latent: int = 32
    lstm_hidden: Optional[int] = 128  # None: as wide as the flattened encoder output
    bias: bool = True
    pretrain_epochs: int = 5
    epochs: int = 10
    warmup_epochs: int = 2
    batch_size: int = 128
    lstm_mode: str = "per_sample"
    pretrain_lstm: bool = True
    kl_form: str = "per_sample"
    radius_update: str = "epoch"
    amsgrad: bool = False
    slope: float = 0.1
    latent_norm: bool = False
    decoder_bias: bool = True
    input_scaling: str = "train_minmax"
    quantise_bits: int = 0
    pad: int = 0
    keep: str = "best"
    epoch_criterion: str = "loss"
    min_batches: int = 0  # data hunger: at least this many optimiser steps per epoch on small training sets


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


def authors_kl(z: torch.Tensor) -> torch.Tensor:
    """The authors' "KL" term: KLDivLoss(batchmean) of the raw latent z (B, d), read as log-probabilities,
    against softmax of Gaussian noise, Σ t·(ln t − z)/B. Its gradient in z is −t/B whatever z is: linear in z, it
    pulls no latent towards N(0, I)."""
    target = torch.softmax(torch.randn_like(z), dim=1)
    return torch.nn.functional.kl_div(z, target, reduction="batchmean")


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
        if profile not in PROFILES:
            raise ValueError(f"unknown IAE-LSTM-KL profile {profile!r}; known: {sorted(PROFILES)}")
        return cls(IAEParams(**{**PROFILES[profile], **VARIANTS[name], **overrides}))

    @property
    def batch_dependent(self) -> bool:
        """True when a window's score depends on the other windows of its batch (the batch-recurrent LSTM)."""
        return self.params.use_lstm and self.params.lstm_mode == "batch_recurrent"

    def _network(self, window: int, channels: int) -> IAELSTMKLNet:
        p = self.params
        return IAELSTMKLNet(window + 2 * p.pad, channels + 2 * p.pad, tuple(p.conv_channels), latent=p.latent,
                            use_lstm=p.use_lstm, lstm_hidden=p.lstm_hidden, lstm_gates=p.lstm_gates,
                            use_decoder=True, bias=p.bias, lstm_mode=p.lstm_mode, slope=p.slope,
                            latent_norm=p.latent_norm, decoder_bias=p.decoder_bias)

    def _scaled(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, W, C) windows as the network sees them: min–max scaled with the training range (or as given),
        optionally quantised, zero-padded by ``pad`` on every side: (B, W + 2·pad, C + 2·pad)."""
        p = self.params
        x = batch
        if p.input_scaling == "train_minmax":
            x = (x - self._min_t.to(x.device)) / self._span_t.to(x.device)
        if p.quantise_bits:
            # the authors store their windows as 8-bit images: truncation to 2^bits − 1 levels per unit. Not
            # clamped: a value beyond the training range must stay visible to the encoder
            levels = 2 ** p.quantise_bits - 1
            x = torch.floor(x * levels) / levels
        if p.pad:
            x = torch.nn.functional.pad(x, (p.pad, p.pad, p.pad, p.pad))
        return x

    def _check(self) -> None:
        p = self.params
        choices = {"svdd": ("soft", "hard", "none"), "lstm_mode": ("per_sample", "batch_recurrent"),
                   "kl_form": ("per_sample", "authors"), "radius_update": ("epoch", "batch_ratchet"),
                   "input_scaling": ("train_minmax", "none"), "keep": ("best", "last"),
                   "epoch_criterion": ("loss", "distance")}
        for key, allowed in choices.items():
            if getattr(p, key) not in allowed:
                raise ValueError(f"IAE-LSTM-KL {key} must be one of {allowed}, got {getattr(p, key)!r}")
        if p.radius_update == "batch_ratchet" and p.keep == "best":
            raise ValueError("IAE-LSTM-KL radius_update batch_ratchet needs keep 'last': the radius of the last "
                             "batch would sit beside the weights of an earlier epoch")

    def fit(self, windows: Windows, on_epoch: Optional[EpochCallback] = None) -> "IAELSTMKLDetector":
        p = self.params
        self._check()
        torch.manual_seed(p.seed)
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        series = windows.series[windows.covered_rows()]  # only the rows of the training windows
        self.scale_min_ = series.min(dim=0).values.double().numpy()
        self.scale_span_ = np.maximum(series.max(dim=0).values.double().numpy() - self.scale_min_, 1e-6)
        self._set_scaling()
        order = np.argsort(windows.end_us, kind="stable")
        n_val = max(1, int(round(len(windows) * p.validation_share)))
        train, validation = windows.subset(np.sort(order[:-n_val])), windows.subset(np.sort(order[-n_val:]))
        device = resolve_device(p.device)
        self.network_ = self._network(self.window_, self.n_channels_).to(device)
        if not p.pretrain_lstm and p.use_lstm:
            if self.network_.to_latent.in_features != self.network_.flat:
                raise ValueError(f"pretrain_lstm False bypasses the LSTM, so lstm_hidden must equal the flattened "
                                 f"encoder output ({self.network_.flat}), got {p.lstm_hidden}")
            self.network_.memory_on = False

        def reconstruction(model, batch):
            x = self._scaled(batch)
            _, x_hat = model(x)
            return torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2)

        # No checkpoints: the soft radius lives outside the loop's state (resume covers the other detectors).
        # a training batch of one window cannot pass the latent BatchNorm: drop it, as the authors drop the last
        settings = {**loop_settings(p), "checkpoint_dir": None, "amsgrad": p.amsgrad, "skip_single": p.latent_norm}
        # 300 windows in batches of 512 would be one optimiser step per epoch (SKAB's files): shrink the batch
        self.batch_size_ = (min(p.batch_size, max(1, math.ceil(len(train) / p.min_batches))) if p.min_batches
                            else p.batch_size)
        history = fit_network(self.network_, train, validation, reconstruction, epochs=p.pretrain_epochs,
                              batch_size=self.batch_size_, device=device, on_epoch=_tagged(on_epoch, "pretrain"),
                              **settings)
        self.history_ = [{**h, "phase": "pretrain"} for h in history]
        self.network_.memory_on = True  # the authors insert their (untrained, orthogonal) LSTM only now
        self.centre_ = self._latents(train, device).mean(axis=0)
        # Ruff et al.: keep centre coordinates away from 0, where a bias-free network trivially maps
        self.centre_ = np.where(np.abs(self.centre_) < 0.1, np.where(self.centre_ < 0, -0.1, 0.1), self.centre_)
        self.radius_ = 0.0
        if p.svdd != "none":
            self._joint(train, validation, device, settings, on_epoch)
        self.validation_scores_ = self.score(validation)
        self.keep_validation_times(validation)
        return self

    def _joint(self, train: Windows, validation: Windows, device, settings: dict,
               on_epoch: Optional[EpochCallback]) -> None:
        """The joint phase: SVDD + λ1·KL + λ2·reconstruction on every weight, the radius updated as set."""
        p = self.params
        centre = torch.as_tensor(self.centre_, dtype=torch.float32, device=device)
        radius = torch.zeros((), device=device)
        epoch = {"current": 1}

        def joint(model, batch):
            x = self._scaled(batch)
            z, x_hat = model(x)
            distance = torch.sum((z - centre) ** 2, dim=1)
            if not model.training and p.epoch_criterion == "distance":
                # validation on the fixed scale of the centre: no R², whose value moves between epochs
                return distance.mean() + p.rec_weight * torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2)
            loss = svdd_loss(z, centre, radius, p.svdd, p.nu)
            if p.kl_weight:
                kl = authors_kl(z) if p.kl_form == "authors" else kl_to_standard_normal(z)
                loss = loss + p.kl_weight * kl
            if p.rec_weight:
                loss = loss + p.rec_weight * torch.mean((x_hat - x.clamp(0.0, 1.0)) ** 2)
            if (model.training and p.svdd == "soft" and p.radius_update == "batch_ratchet"
                    and epoch["current"] > p.warmup_epochs):
                # the authors' update: the quantile of R² + max(0, d − R²)/ν, distances that never fall below R²
                inflated = radius ** 2 + torch.clamp(distance.detach() - radius ** 2, min=0.0) / p.nu
                radius.fill_(float(torch.quantile(torch.sqrt(inflated.float()), 1.0 - p.nu)))
            return loss

        def after_epoch(record):
            if p.svdd == "soft" and p.radius_update == "epoch" and record["epoch"] >= p.warmup_epochs:
                radius.fill_(soft_radius(self._distances(train, device), p.nu))
            epoch["current"] = record["epoch"] + 1
            record["radius"] = float(radius)
            if on_epoch:
                on_epoch({**record, "phase": "joint"})

        joint_history = fit_network(self.network_, train, validation, joint, epochs=p.epochs,
                                    batch_size=self.batch_size_, device=device, on_epoch=after_epoch,
                                    weight_decay=p.weight_decay, keep=p.keep, **{**settings, "seed": p.seed + 1})
        self.history_ += [{**h, "phase": "joint"} for h in joint_history]
        if p.svdd == "soft":
            self.radius_ = (float(radius) if p.radius_update == "batch_ratchet"
                            else soft_radius(self._distances(train, device), p.nu))

    def _set_scaling(self) -> None:
        self._min_t = torch.as_tensor(self.scale_min_, dtype=torch.float32)
        self._span_t = torch.as_tensor(self.scale_span_, dtype=torch.float32)

    def _batches(self, windows: Windows, batch_size: Optional[int]):
        """(B, W, C) batches in the windows' order. The batch-recurrent LSTM gets the training batch size unless
        told otherwise: its latents depend on the batch."""
        size = batch_size or (self.params.batch_size if self.batch_dependent else 1024)
        return windows.iter_batches(size)

    @torch.no_grad()
    def _latents(self, windows: Windows, device, batch_size: Optional[int] = None) -> np.ndarray:
        self.network_.eval()
        # .float(): under bf16 autocast the latents are bf16, which NumPy cannot hold
        out = [self.network_.encode(self._scaled(b.to(device))).float().cpu().numpy()
               for b in self._batches(windows, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.params.latent))

    def _distances(self, windows: Windows, device, batch_size: Optional[int] = None) -> np.ndarray:
        return np.sum((self._latents(windows, device, batch_size) - self.centre_) ** 2, axis=1)

    @torch.no_grad()
    def score(self, windows: Windows, batch_size: Optional[int] = None) -> np.ndarray:
        """(N,) scores: ‖ẑ − c‖² with an SVDD term, else mean squared reconstruction error. ``batch_size``
        matters only for the batch-recurrent LSTM, whose scores depend on it and on the windows' order."""
        if not hasattr(self, "network_"):
            raise RuntimeError("detector is not fitted: call fit() or load() first")
        if windows.window != self.window_ or windows.n_channels != self.n_channels_:
            raise ValueError(f"windows are {windows.window}×{windows.n_channels}, the model expects "
                             f"{self.window_}×{self.n_channels_}")
        device = next(self.network_.parameters()).device
        if self.params.svdd != "none":
            return self._distances(windows, device, batch_size).astype(np.float64)
        return self.reconstruction_errors(windows, batch_size)

    @torch.no_grad()
    def reconstruction_errors(self, windows: Windows, batch_size: Optional[int] = None) -> np.ndarray:
        """(N,) mean squared reconstruction error of each window (the score the authors' searches rank by)."""
        device = next(self.network_.parameters()).device
        self.network_.eval()
        out = []
        for batch in self._batches(windows, batch_size):
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
                terms = self._unpadded(gradient.abs()).sum(dim=1)
            else:
                with torch.no_grad():
                    _, x_hat = self.network_(x)
                    terms = self._unpadded((x_hat - x.clamp(0.0, 1.0)) ** 2).sum(dim=1)
            out.append(terms.double().cpu().numpy())
        return attribution.shares(np.concatenate(out)) if out else np.zeros((0, self.n_channels_))

    def _unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """(B, W + 2·pad, C + 2·pad) → (B, W, C): the window's own cells."""
        pad = self.params.pad
        return x[:, pad:x.shape[1] - pad, pad:x.shape[2] - pad] if pad else x

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
