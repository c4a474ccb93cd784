"""Isolation Forest (scikit-learn) on the last row of each window: the SKAB leaderboard's tree baseline.

Saved with skops (a restricted, type-checked format) instead of pickle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lstmad.detectors.base import LastRowDetector
from lstmad.transforms.blocks import Windows


@dataclasses.dataclass(frozen=True)
class ForestParams:
    n_estimators: int = 200
    contamination: str = "auto"
    seed: int = 0
    validation_share: float = 0.2


class IsolationForestDetector(LastRowDetector):
    """fit(windows) → self; score(windows) → (N,) negated sklearn score_samples (higher = more anomalous)."""

    kind = "isolation_forest"
    params_class = ForestParams
    attribution_method = "none"  # path lengths have no per-channel decomposition: no channel_shares

    def fit_rows(self, rows: np.ndarray) -> None:
        # imported here: scikit-learn (with SciPy) costs ~1.5 s to import, in every process that imports
        # lstmad.detectors — Spark's worker daemon and the nightly driver — whichever detector they run
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(n_estimators=self.params.n_estimators, contamination=self.params.contamination,
                                       random_state=self.params.seed).fit(rows)

    def score(self, windows: Windows, batch_size: int = 0) -> np.ndarray:
        return -self.forest_.score_samples(self.rows(windows)).astype(np.float64)

    def save(self, directory: str | Path) -> None:
        import skops.io

        super().save(directory)
        skops.io.dump(self.forest_, Path(directory) / "forest.skops")

    def restore(self, state: dict, directory: Path, device: str) -> None:
        import skops.io

        file = directory / "forest.skops"
        # only types skops itself reports for this file, and only sklearn/numpy ones
        trusted = [t for t in skops.io.get_untrusted_types(file=file) if t.startswith(("sklearn.", "numpy."))]
        self.forest_ = skops.io.load(file, trusted=trusted)
