"""Gaussian model of prediction/reconstruction errors (Malhotra et al. 2015, 2016): Mahalanobis scores."""

from __future__ import annotations

import numpy as np


class GaussianErrorModel:
    """fit(errors (n, d)) → self; score(errors (n, d)) → (n,) (e − μ)ᵀ Σ⁻¹ (e − μ).

    Σ is shrunk towards its diagonal (``shrinkage``) so that it stays invertible with few samples.
    """

    def __init__(self, shrinkage: float = 1e-3):
        self.shrinkage = shrinkage

    def fit(self, errors: np.ndarray) -> "GaussianErrorModel":
        errors = np.asarray(errors, dtype=np.float64)
        if errors.ndim != 2 or errors.shape[0] < 2:
            raise ValueError(f"need errors of shape (n ≥ 2, d), got {errors.shape}")
        self.mean_ = errors.mean(axis=0)
        cov = np.cov(errors, rowvar=False).reshape(errors.shape[1], errors.shape[1])
        cov = (1 - self.shrinkage) * cov + self.shrinkage * np.diag(np.diag(cov)) + 1e-9 * np.eye(cov.shape[0])
        self.precision_ = np.linalg.pinv(cov)
        return self

    def score(self, errors: np.ndarray) -> np.ndarray:
        centred = np.asarray(errors, dtype=np.float64) - self.mean_
        return np.einsum("nd,de,ne->n", centred, self.precision_, centred)

    def to_dict(self) -> dict:
        return {"shrinkage": self.shrinkage, "mean": self.mean_.tolist(), "precision": self.precision_.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "GaussianErrorModel":
        model = cls(data["shrinkage"])
        model.mean_, model.precision_ = np.asarray(data["mean"]), np.asarray(data["precision"])
        return model
