"""Detectors: sklearn-like wrappers (fit(windows) → self, score(windows) → scores) around lstmad.models."""

from __future__ import annotations

from pathlib import Path

from lstmad.detectors.iae_lstm_kl import IAELSTMKLDetector
from lstmad.detectors.isolation_forest import IsolationForestDetector
from lstmad.detectors.lstm_autoencoder import LSTMAutoencoderDetector
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.detectors.pca_t2q import PCAT2QDetector

DETECTORS = {d.kind: d for d in (LSTMForecasterDetector, LSTMAutoencoderDetector, IAELSTMKLDetector,
                                 PCAT2QDetector, IsolationForestDetector)}


def load_detector(directory: str | Path):
    """Load any saved detector (weights + JSON config) from ``directory``."""
    from lstmad.detectors.persistence import read_config

    kind = read_config(directory)["detector"]
    if kind not in DETECTORS:
        raise ValueError(f"{directory}: unknown detector kind {kind!r}")
    return DETECTORS[kind].load(directory)
