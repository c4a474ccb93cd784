"""LSTM encoder–decoder autoencoder (EncDec-AD, Malhotra et al. 2016): reconstructs the window in reverse."""

from __future__ import annotations

import torch
from torch import nn


class LSTMAutoencoder(nn.Module):
    """Encoder LSTM → its last hidden state, repeated over W steps → decoder LSTM → Linear(C).

    forward: x (B, W, C) → reconstruction of x reversed in time, (B, W, C).
    """

    def __init__(self, n_channels: int, hidden: int = 64):
        super().__init__()
        self.encoder = nn.LSTM(n_channels, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.encoder(x)
        code = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        out, _ = self.decoder(code)
        return self.head(out)
