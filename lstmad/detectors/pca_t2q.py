"""PCA with Hotelling's T² and the Q statistic (squared prediction error), a classical process-monitoring
reference of the SKAB leaderboard. Scores the last row of each window (a per-point method)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lstmad.detectors.base import LastRowDetector
from lstmad.transforms import attribution
from lstmad.transforms.blocks import Windows


@dataclasses.dataclass(frozen=True)
class PCAParams:
    explained_variance: float = 0.9
    control_quantile: float = 0.99
    validation_share: float = 0.2


class PCAT2QDetector(LastRowDetector):
    """fit(windows) → self; score(windows) → (N,) max(T² / T²_limit, Q / Q_limit), each limit the
    ``control_quantile`` of that statistic on the training rows, so a score above 1 breaks a control limit."""

    kind = "pca_t2q"
    params_class = PCAParams

    def fit_rows(self, x: np.ndarray) -> None:
        self.mean_ = x.mean(axis=0)
        _, singular, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        variance = singular ** 2 / max(len(x) - 1, 1)
        share = np.cumsum(variance) / variance.sum()
        k = int(np.searchsorted(share, self.params.explained_variance) + 1)
        self.components_, self.variance_ = vt[:k], np.maximum(variance[:k], 1e-12)
        t2, q = self._statistics(x)
        self.t2_limit_ = float(np.quantile(t2, self.params.control_quantile))
        self.q_limit_ = float(max(np.quantile(q, self.params.control_quantile), 1e-12))

    def _statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = x - self.mean_
        t = centred @ self.components_.T
        t2 = np.sum(t ** 2 / self.variance_, axis=1)
        q = np.sum((centred - t @ self.components_) ** 2, axis=1)
        return t2, q

    def score(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        t2, q = self._statistics(self.rows(windows))
        return np.maximum(t2 / self.t2_limit_, q / self.q_limit_)

    attribution_method = "t2_or_q_term_share"

    def channel_shares(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        """(N, C) share of each channel in the statistic that sets the score: Q's squared residuals where
        Q/limit ≥ T²/limit, else T²'s terms |x̃_c · (P Λ⁻¹ Pᵀ x̃)_c| (x̃ the centred row)."""
        x = self.rows(windows)
        centred = x - self.mean_
        t = centred @ self.components_.T
        t2, q = self._statistics(x)
        q_terms = (centred - t @ self.components_) ** 2
        t2_terms = np.abs(centred * ((t / self.variance_) @ self.components_))
        by_q = (q / self.q_limit_ >= t2 / self.t2_limit_)[:, None]
        return attribution.shares(np.where(by_q, q_terms, t2_terms))

    def saved_state(self) -> dict:
        return {"mean": self.mean_.tolist(), "components": self.components_.tolist(),
                "variance": self.variance_.tolist(), "t2_limit": self.t2_limit_, "q_limit": self.q_limit_}

    def restore(self, state: dict, directory: Path, device: str) -> None:
        self.mean_ = np.asarray(state["mean"])
        self.components_ = np.asarray(state["components"])
        self.variance_ = np.asarray(state["variance"])
        self.t2_limit_, self.q_limit_ = state["t2_limit"], state["q_limit"]
