"""IAE-LSTM-KL network (Huang et al.) and its ablations as one module with switches.

Windows are single-channel W×C images. Encoder: three Conv(k5) → BatchNorm → LeakyReLU → MaxPool(2) stages;
an optional LSTM module followed by Linear(→ latent); a decoder of upsampling + transposed convolutions ending
in a sigmoid. Shapes adapt to any W and C (pooling rounds up).

The LSTM module comes in two forms:
- ``per_sample`` (the paper's text, eq. 6–12): one cell step from h0 = c0 = 0 for every window on its own;
- ``batch_recurrent`` (the authors' code, crazyn2/IAE-LSTM-KL_codes): ``nn.LSTM`` called on the 2-D (B, n)
  feature tensor, which PyTorch reads as ONE unbatched sequence of length B, so each window's latent depends
  on the windows before it in the mini-batch. A score from it depends on batch composition and order; lstmad
  keeps it for reproduction only and the pipeline refuses it (lstmad.detectors.iae_lstm_kl).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SingleStepLSTM(nn.Module):
    """The paper's degenerate LSTM: one cell step from h0 = c0 = 0, so c = s ⊙ c̃ and ẑ = o ⊙ tanh(c) (eq. 6–12).

    ``gates`` False replaces the input and output gates by ones (the ablation of Table VII).
    forward: z (B, n) → (B, hidden).
    """

    def __init__(self, n_in: int, hidden: int, gates: bool = True):
        super().__init__()
        self.cell = nn.LSTMCell(n_in, hidden)
        self.gates = gates

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.gates:
            h, _ = self.cell(z)  # zero initial state
            return h
        # same parameters, gates forced open: ẑ = tanh(c̃) with c̃ = tanh(W_C z + b)
        hidden = self.cell.hidden_size
        pre = F.linear(z, self.cell.weight_ih, self.cell.bias_ih + self.cell.bias_hh)
        return torch.tanh(torch.tanh(pre[:, 2 * hidden:3 * hidden]))


class BatchRecurrentLSTM(nn.Module):
    """The authors' LSTM: the mini-batch is the sequence. forward: z (B, n) → (B, hidden), step b of the
    sequence being window b of the batch, from a zero state at the start of every call (every batch).

    Weights orthogonal and biases zero at initialisation, as in the authors' code.
    """

    batch_dependent = True

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden)
        for name, weight in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(weight)
            else:
                nn.init.zeros_(weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(z)  # (B, n) is an unbatched sequence of length B: the recurrence runs over the batch
        return out


LSTM_MODES = ("per_sample", "batch_recurrent")


class IAELSTMKLNet(nn.Module):
    """Encoder → (LSTM module) → latent ẑ → (decoder). forward: x (B, W, C) → (ẑ (B, latent), x̂ (B, W, C) or None).

    use_lstm: the LSTM module (else a Linear to the latent); use_decoder: build the decoder (CAE, IAEAD,
    IAE-*); conv_channels: the three encoder widths (paper: 32, 64, 128); lstm_hidden: LSTM width (paper:
    2048 = the flattened encoder output for 26×26 windows); bias: False removes every bias and BatchNorm
    affine term from the encoder path (Deep SVDD's guard against hypersphere collapse); lstm_mode: see the
    module docstring; slope: the leaky ReLUs' negative slope; latent_norm: BatchNorm1d (no affine) + leaky ReLU
    between the latent and the decoder (the authors' code; the SVDD distance uses the latent before it);
    decoder_bias: bias and BatchNorm affine terms in the decoder.
    """

    def __init__(self, window: int, n_channels: int, conv_channels: tuple[int, int, int] = (32, 64, 128),
                 kernel: int = 5, latent: int = 128, use_lstm: bool = True, lstm_hidden: int | None = None,
                 lstm_gates: bool = True, use_decoder: bool = True, decoder_seed_channels: int = 8,
                 bias: bool = True, lstm_mode: str = "per_sample", slope: float = 0.1, latent_norm: bool = False,
                 decoder_bias: bool = True):
        super().__init__()
        if lstm_mode not in LSTM_MODES:
            raise ValueError(f"lstm_mode must be one of {LSTM_MODES}, got {lstm_mode!r}")
        self.window, self.n_channels, self.latent = window, n_channels, latent
        self.slope = slope
        pad = kernel // 2
        sizes = [(window, n_channels)]
        layers, width = [], 1
        for out in conv_channels:
            layers += [nn.Conv2d(width, out, kernel, padding=pad, bias=bias),
                       nn.BatchNorm2d(out, affine=bias), nn.LeakyReLU(slope), nn.MaxPool2d(2, ceil_mode=True)]
            width = out
            h, w = sizes[-1]
            sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
        self.encoder = nn.Sequential(*layers)
        self.sizes = sizes
        flat = conv_channels[-1] * sizes[-1][0] * sizes[-1][1]
        self.flat = flat
        self.memory_on = True  # False: encode bypasses the LSTM (pre-training without it needs hidden == flat)
        if use_lstm:
            hidden = lstm_hidden or flat
            self.memory = (BatchRecurrentLSTM(flat, hidden) if lstm_mode == "batch_recurrent"
                           else SingleStepLSTM(flat, hidden, lstm_gates))
            self.to_latent = nn.Linear(hidden, latent, bias=bias)
        else:
            self.memory = None
            self.to_latent = nn.Linear(flat, latent, bias=bias)
        self.decoder = None
        self.latent_norm = nn.BatchNorm1d(latent, affine=False) if latent_norm else None
        if use_decoder:
            seed_h, seed_w = sizes[-1]
            self.seed_shape = (decoder_seed_channels, seed_h, seed_w)
            seed = decoder_seed_channels * seed_h * seed_w
            # the paper reshapes the 128-d latent to 8×4×4 directly; other shapes need a projection
            self.from_latent = nn.Identity() if seed == latent else nn.Linear(latent, seed)
            widths = [decoder_seed_channels, *reversed(conv_channels)]
            stages = []
            for i in range(len(conv_channels)):
                stages.append(nn.Sequential(
                    nn.ConvTranspose2d(widths[i], widths[i + 1], kernel, padding=pad, bias=decoder_bias),
                    nn.BatchNorm2d(widths[i + 1], affine=decoder_bias), nn.LeakyReLU(slope)))
            self.decoder = nn.ModuleList(stages)
            self.output = nn.ConvTranspose2d(conv_channels[0], 1, kernel, padding=pad, bias=decoder_bias)

    @property
    def batch_dependent(self) -> bool:
        """True when a window's latent depends on the other windows of its batch (the batch-recurrent LSTM)."""
        return bool(getattr(self.memory, "batch_dependent", False))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, W, C) → ẑ (B, latent)."""
        features = self.encoder(x.unsqueeze(1)).flatten(1)
        if self.memory is not None and self.memory_on:
            features = self.memory(features)
        return self.to_latent(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """ẑ (B, latent) → x̂ (B, W, C) in (0, 1)."""
        if self.latent_norm is not None:
            z = F.leaky_relu(self.latent_norm(z), self.slope)
        h = self.from_latent(z).view(z.shape[0], *self.seed_shape)
        # upsample back through the encoder's sizes: stage i restores sizes[-(i+2)]
        for i, stage in enumerate(self.decoder):
            h = stage(F.interpolate(h, size=self.sizes[-(i + 2)], mode="nearest"))
        return torch.sigmoid(self.output(h)).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = self.encode(x)
        return z, (self.decode(z) if self.decoder is not None else None)
