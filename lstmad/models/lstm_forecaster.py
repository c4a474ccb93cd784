"""Stacked LSTM next-step forecaster: LSTM(64) → Dropout → LSTM(32) → Dropout → Dense(C) (notebook 001)."""

from __future__ import annotations

import torch
from torch import nn


class StackedLSTMForecaster(nn.Module):
    """Predicts the next row of a multichannel sequence from the rows before it, or (``n_outputs`` set: a
    normal-behaviour model) the response channels of a sequence's last row from its driver channels.

    forward: x (B, T, C) → (B, n_outputs or C): the prediction of row T+1, or of the responses at row T; with
    ``steps`` k > 1, (B, k, n_outputs or C): the predictions made at each of the last k steps (of rows T−k+2..T+1,
    or of the responses at rows T−k+1..T), each from the rows up to its step.
    """

    def __init__(self, n_channels: int, hidden_sizes: tuple[int, ...] = (64, 32), dropout: float = 0.2,
                 n_outputs: int = 0):
        super().__init__()
        layers = []
        width = n_channels
        for hidden in hidden_sizes:
            layers.append(nn.LSTM(width, hidden, batch_first=True))
            width = hidden
        self.lstms = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, n_outputs or n_channels)

    def forward(self, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
        hidden = x
        for lstm in self.lstms:
            hidden, _ = lstm(hidden)
            hidden = self.dropout(hidden)
        if steps == 1:
            # Keras' return_sequences=False on the last LSTM: only the final step feeds the dense layer.
            return self.head(hidden[:, -1, :])
        return self.head(hidden[:, -steps:, :])
