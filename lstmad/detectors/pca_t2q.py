"""PCA with Hotelling's T² and the Q statistic (squared prediction error), a classical process-monitoring
reference of the SKAB leaderboard. Scores the last row of each window (a per-point method)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from lstmad import attribution
from lstmad.detectors.persistence import read_config, write_config
from lstmad.tensors import Windows


@dataclasses.dataclass
class PCAParams:
    explained_variance: float = 0.9
    control_quantile: float = 0.99


class PCAT2QDetector:
    """fit(windows) → self; score(windows) → (N,) max(T² / T²_limit, Q / Q_limit), each limit the
    ``control_quantile`` of that statistic on the training rows, so a score above 1 breaks a control limit."""

    kind = "pca_t2q"
    score_alignment = "last"

    def __init__(self, params: Optional[PCAParams] = None, **overrides):
        self.params = dataclasses.replace(params or PCAParams(), **overrides)

    @staticmethod
    def _rows(windows: Windows) -> np.ndarray:
        return windows.series.numpy()[windows.starts + windows.window - 1].astype(np.float64)

    def fit(self, windows: Windows, on_epoch=None) -> "PCAT2QDetector":
        x = self._rows(windows)
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        self.mean_ = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        variance = singular ** 2 / max(len(x) - 1, 1)
        share = np.cumsum(variance) / variance.sum()
        k = int(np.searchsorted(share, self.params.explained_variance) + 1)
        self.components_, self.variance_ = vt[:k], np.maximum(variance[:k], 1e-12)
        t2, q = self._statistics(x)
        self.t2_limit_ = float(np.quantile(t2, self.params.control_quantile))
        self.q_limit_ = float(max(np.quantile(q, self.params.control_quantile), 1e-12))
        self.history_ = []
        self.validation_scores_ = self.score(windows)
        return self

    def _statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = x - self.mean_
        t = centred @ self.components_.T
        t2 = np.sum(t ** 2 / self.variance_, axis=1)
        q = np.sum((centred - t @ self.components_) ** 2, axis=1)
        return t2, q

    def score(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        t2, q = self._statistics(self._rows(windows))
        return np.maximum(t2 / self.t2_limit_, q / self.q_limit_)

    attribution_method = "t2_or_q_term_share"

    def channel_shares(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        """(N, C) share of each channel in the statistic that sets the score: Q's squared residuals where
        Q/limit ≥ T²/limit, else T²'s terms |x̃_c · (P Λ⁻¹ Pᵀ x̃)_c| (x̃ the centred row)."""
        x = self._rows(windows)
        centred = x - self.mean_
        t = centred @ self.components_.T
        t2, q = self._statistics(x)
        q_terms = (centred - t @ self.components_) ** 2
        t2_terms = np.abs(centred * ((t / self.variance_) @ self.components_))
        by_q = (q / self.q_limit_ >= t2 / self.t2_limit_)[:, None]
        return attribution.shares(np.where(by_q, q_terms, t2_terms))

    def to(self, device) -> "PCAT2QDetector":
        return self

    def save(self, directory: str | Path) -> None:
        write_config(directory, {
            "detector": self.kind, "params": dataclasses.asdict(self.params), "window": self.window_,
            "n_channels": self.n_channels_, "mean": self.mean_.tolist(), "components": self.components_.tolist(),
            "variance": self.variance_.tolist(), "t2_limit": self.t2_limit_, "q_limit": self.q_limit_})

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "PCAT2QDetector":
        config = read_config(directory)
        detector = cls(PCAParams(**config["params"]))
        detector.window_, detector.n_channels_ = config["window"], config["n_channels"]
        detector.mean_ = np.asarray(config["mean"])
        detector.components_ = np.asarray(config["components"])
        detector.variance_ = np.asarray(config["variance"])
        detector.t2_limit_, detector.q_limit_ = config["t2_limit"], config["q_limit"]
        detector.history_ = []
        return detector
