"""Error Gaussians per operating regime: residuals whose spread depends on where the machine operates.

A wind turbine's pitch and yaw residuals are wide at low wind (the controller hunts) and narrow at rated
power; one Gaussian over all of them is too wide for the second and too narrow for the first, so a vane
offset at rated power hides in the width learnt at low wind. Here the validation windows are clustered by
the model's *predicted* values (k-means; in a normal-behaviour model a prediction comes from the drivers, so a
fault in a response does not move its window to another regime; a plain forecaster's predictions follow the
channels' own recent past, faults included), each regime gets its own Gaussian of the errors, shrunk towards a
prior (below), and a window is scored under the Gaussian of its nearest regime.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lstmad.detectors.gaussian_error import GaussianErrorModel

# fewer regimes than asked when the validation windows are few: at least this many windows per regime
MIN_WINDOWS_PER_REGIME = 50
# each regime's mean and covariance is a weighted mean of its own and a prior, the prior counting as this many
# windows: a small regime borrows strength, a large one keeps its own. The prior's mean is the pooled one; its
# covariance has the pooled correlations and the regime's own variances, themselves steadied by
# VARIANCE_PRIOR_WINDOWS pseudo-windows of the pooled variances.
PRIOR_WINDOWS = 50
VARIANCE_PRIOR_WINDOWS = 5


class RegimeErrorModel:
    """fit(errors (n, d), operating (n, p)) → self; score(errors, operating) → (n,) (e − μ_r)ᵀ Σ_r⁻¹ (e − μ_r)
    with r the regime of each row's operating point (nearest of ``centres_`` (K, p)); ``means_`` (K, d),
    ``precisions_`` (K, d, d). With one regime (or too few windows for two) it is about GaussianErrorModel (its
    prior adds 50 pseudo-windows of the same Gaussian)."""

    def __init__(self, regimes: int, shrinkage: float = 1e-3, seed: int = 0):
        self.regimes, self.shrinkage, self.seed = int(regimes), shrinkage, seed

    def fit(self, errors: np.ndarray, operating: np.ndarray, centres: Optional[np.ndarray] = None
            ) -> "RegimeErrorModel":
        """``centres`` (K, p): use these regimes instead of clustering (cross-fitting keeps the regimes of all
        validation windows and refits only the Gaussians)."""
        errors, operating = np.asarray(errors, dtype=np.float64), np.asarray(operating, dtype=np.float64)
        pooled = GaussianErrorModel(self.shrinkage).fit(errors)
        self.centres_ = self._centres(operating) if centres is None else np.asarray(centres, dtype=np.float64)
        regime = self.regime_of(operating)
        d = errors.shape[1]
        pooled_cov = np.cov(errors, rowvar=False).reshape(d, d)
        pooled_sd = np.sqrt(np.maximum(np.diag(pooled_cov), 1e-12))
        pooled_corr = pooled_cov / np.outer(pooled_sd, pooled_sd)
        np.fill_diagonal(pooled_corr, 1.0)  # a channel whose errors never vary
        self.means_, self.precisions_ = [], []
        for r in range(len(self.centres_)):
            own = errors[regime == r]
            n = own.shape[0]
            mean = (own.sum(axis=0) + PRIOR_WINDOWS * pooled.mean_) / (n + PRIOR_WINDOWS)
            scatter = (own - mean).T @ (own - mean) if n else np.zeros((d, d))
            # the prior keeps the regime's own scale (its variances, steadied by a few pooled pseudo-windows)
            # and borrows the pooled correlations: a tight regime is not widened by the wide ones
            variance = (np.diag(scatter) + VARIANCE_PRIOR_WINDOWS * pooled_sd ** 2) / (n + VARIANCE_PRIOR_WINDOWS)
            prior = np.sqrt(np.outer(variance, variance)) * pooled_corr
            cov = (scatter + PRIOR_WINDOWS * prior) / (n + PRIOR_WINDOWS)
            cov = (1 - self.shrinkage) * cov + self.shrinkage * np.diag(np.diag(cov)) + 1e-9 * np.eye(d)
            self.means_.append(mean)
            self.precisions_.append(np.linalg.pinv(cov))
        self.means_, self.precisions_ = np.stack(self.means_), np.stack(self.precisions_)
        return self

    def _centres(self, operating: np.ndarray) -> np.ndarray:
        k = min(self.regimes, operating.shape[0] // MIN_WINDOWS_PER_REGIME)
        if k < 2:
            return operating.mean(axis=0, keepdims=True)
        from sklearn.cluster import KMeans

        return KMeans(k, n_init=4, random_state=self.seed).fit(operating).cluster_centers_

    def regime_of(self, operating: np.ndarray) -> np.ndarray:
        """(n,) index of the nearest regime centre of each (n, p) operating point (‖x − c‖² as
        ‖c‖² − 2 x·c: (n, K) at a time, never (n, K, p))."""
        operating = np.asarray(operating, dtype=np.float64)
        return np.argmin((self.centres_ ** 2).sum(axis=1) - 2.0 * operating @ self.centres_.T, axis=1)

    def terms(self, errors: np.ndarray, operating: np.ndarray) -> np.ndarray:
        """(n, d) per-channel terms of each row's distance under its regime's Gaussian
        (attribution.mahalanobis_terms, one regime at a time)."""
        from lstmad.transforms import attribution

        errors = np.asarray(errors, dtype=np.float64)
        regime = self.regime_of(operating)
        out = np.empty_like(errors)
        for r in np.unique(regime):
            rows = regime == r
            out[rows] = attribution.mahalanobis_terms(errors[rows] - self.means_[r], self.precisions_[r])
        return out

    def score(self, errors: np.ndarray, operating: np.ndarray) -> np.ndarray:
        errors = np.asarray(errors, dtype=np.float64)
        regime = self.regime_of(operating)
        out = np.empty(errors.shape[0], dtype=np.float64)
        for r in np.unique(regime):
            rows = regime == r
            centred = errors[rows] - self.means_[r]
            out[rows] = np.einsum("nd,de,ne->n", centred, self.precisions_[r], centred)
        return out

    def to_dict(self) -> dict:
        return {"regimes": self.regimes, "shrinkage": self.shrinkage, "seed": self.seed,
                "centres": self.centres_.tolist(), "means": self.means_.tolist(),
                "precisions": self.precisions_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "RegimeErrorModel":
        model = cls(data["regimes"], data["shrinkage"], data["seed"])
        model.centres_ = np.asarray(data["centres"], dtype=np.float64)
        model.means_ = np.asarray(data["means"], dtype=np.float64)
        model.precisions_ = np.asarray(data["precisions"], dtype=np.float64)
        return model


def cross_fitted_regime_scores(errors: np.ndarray, operating: np.ndarray, end_us: np.ndarray,
                               model: RegimeErrorModel, folds: int = 10) -> np.ndarray:
    """(n,) scores of the validation windows, each under regime Gaussians fitted on the other windows (the
    regimes themselves are ``model``'s, fitted on all): gaussian_error.cross_fitted_scores' folds, for the
    same reason (a Gaussian scoring its own windows gives scores biased low)."""
    n = errors.shape[0]
    if n < 4:
        return model.score(errors, operating)
    order = np.argsort(np.asarray(end_us), kind="stable")
    out = np.empty(n, dtype=np.float64)
    for held_out in np.array_split(order, min(folds, n // 2)):
        rest = np.setdiff1d(order, held_out, assume_unique=True)
        fold = RegimeErrorModel(model.regimes, model.shrinkage, model.seed).fit(errors[rest], operating[rest],
                                                                               centres=model.centres_)
        out[held_out] = fold.score(errors[held_out], operating[held_out])
    return out
