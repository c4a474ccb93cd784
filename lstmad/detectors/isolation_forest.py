"""Isolation Forest (scikit-learn) on the last row of each window: the SKAB leaderboard's tree baseline.

Saved with skops (a restricted, type-checked format) instead of pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
from sklearn.ensemble import IsolationForest

from lstmad.detectors.persistence import read_config, write_config
from lstmad.tensors import Windows


@dataclasses.dataclass
class ForestParams:
    n_estimators: int = 200
    contamination: str = "auto"
    seed: int = 0


class IsolationForestDetector:
    """fit(windows) → self; score(windows) → (N,) negated sklearn score_samples (higher = more anomalous)."""

    kind = "isolation_forest"
    attribution_method = "none"  # path lengths have no per-channel decomposition: no channel_shares
    score_alignment = "last"

    def __init__(self, params: Optional[ForestParams] = None, **overrides):
        self.params = dataclasses.replace(params or ForestParams(), **overrides)

    @staticmethod
    def _rows(windows: Windows) -> np.ndarray:
        return windows.series.numpy()[windows.starts + windows.window - 1]

    def fit(self, windows: Windows, on_epoch=None) -> "IsolationForestDetector":
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        self.forest_ = IsolationForest(n_estimators=self.params.n_estimators, contamination=self.params.contamination,
                                       random_state=self.params.seed).fit(self._rows(windows))
        self.history_ = []
        self.validation_scores_ = self.score(windows)
        return self

    def score(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        return -self.forest_.score_samples(self._rows(windows)).astype(np.float64)

    def to(self, device) -> "IsolationForestDetector":
        return self

    def save(self, directory: str | Path) -> None:
        import skops.io

        directory = write_config(directory, {"detector": self.kind, "params": dataclasses.asdict(self.params),
                                             "window": self.window_, "n_channels": self.n_channels_})
        skops.io.dump(self.forest_, directory / "forest.skops")

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "IsolationForestDetector":
        import skops.io

        directory = Path(directory)
        config = read_config(directory)
        detector = cls(ForestParams(**config["params"]))
        detector.window_, detector.n_channels_ = config["window"], config["n_channels"]
        file = directory / "forest.skops"
        # only types skops itself reports for this file, and only sklearn/numpy ones
        trusted = [t for t in skops.io.get_untrusted_types(file=file) if t.startswith(("sklearn.", "numpy."))]
        detector.forest_ = skops.io.load(file, trusted=trusted)
        detector.history_ = []
        return detector
