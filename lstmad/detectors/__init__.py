"""Detectors: sklearn-like wrappers (fit(windows) → self, score(windows) → scores) around lstmad.models, one
module each, sharing lstmad.detectors.base; DETECTORS is the one registry of kinds, build_detector the one
factory from configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lstmad.detectors.base import Detector
from lstmad.detectors.iae_lstm_kl import IAELSTMKLDetector
from lstmad.detectors.isolation_forest import IsolationForestDetector
from lstmad.detectors.lstm_autoencoder import LSTMAutoencoderDetector
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.detectors.pca_t2q import PCAT2QDetector

DETECTORS: dict[str, type[Detector]] = {d.kind: d for d in (
    LSTMForecasterDetector, LSTMAutoencoderDetector, IAELSTMKLDetector, PCAT2QDetector, IsolationForestDetector)}


def build_detector(model, checkpoint_dir: str = "", drivers: tuple[int, ...] = ()) -> Detector:
    """A fresh detector of the kind and settings of ``model`` (a config.ModelConfig); trained kinds checkpoint
    every epoch to ``checkpoint_dir`` when it is set; ``drivers``: channel indices a normal-behaviour
    forecaster predicts the others from (config.SourceConfig.driver_indices)."""
    from lstmad.training.params import training_params_of

    training = {**training_params_of(model), "checkpoint_dir": checkpoint_dir}
    kind = DETECTORS.get(model.detector)
    if kind is LSTMForecasterDetector:
        # frozen_channels unset: on, here and for the autoencoder (no change on the synthetic farm or SKAB, the
        # stuck temperature of the La Haute Borne study found: docs/training.md)
        return kind(hidden_sizes=tuple(model.hidden_sizes), dropout=model.dropout, error_model=model.error_model,
                    drivers=tuple(drivers), residual_steps=model.residual_steps, residual_spread=model.residual_spread,
                    frozen_channels=model.frozen_channels is not False, error_regimes=model.error_regimes,
                    scoring_chunk=model.scoring_chunk, **training)
    if kind is LSTMAutoencoderDetector:
        return kind(hidden=model.hidden_sizes[0], frozen_channels=model.frozen_channels is not False, **training)
    if kind is IAELSTMKLDetector:
        return kind.variant(model.variant, model.profile, **iae_training(model, training))
    if kind is PCAT2QDetector:
        return kind(validation_share=model.validation_share)
    if kind is IsolationForestDetector:
        return kind(seed=model.seed, validation_share=model.validation_share)
    raise ValueError(f"unknown detector kind {model.detector!r}; choose from {', '.join(DETECTORS)}")


def iae_training(model, training: dict) -> dict:
    """The training settings an IAE-LSTM-KL profile runs with: a profile's own (learning rate, batch size, epochs
    of the tuned profile, say) unless the configuration sets another value than ModelConfig's default."""
    from lstmad.detectors.variants import PROFILES

    profile = PROFILES[model.profile]
    defaults = {f.name: f.default for f in dataclasses.fields(type(model))}
    chosen = {k: v for k, v in training.items() if k not in profile or v != defaults.get(k)}
    epochs = chosen.get("epochs", profile.get("epochs", model.epochs))
    if "pretrain_epochs" not in profile or epochs != profile.get("epochs"):
        # epochs set in the configuration: pre-training and warm-up follow it
        chosen["pretrain_epochs"] = max(2, epochs // 2)
        if "warmup_epochs" in profile:
            chosen["warmup_epochs"] = min(profile["warmup_epochs"], max(1, epochs // 2))
    return chosen


def judged_rows(config) -> int:
    """How many of a window's last rows the score of the pipeline's detector (``config``: a PipelineConfig)
    judges (Detector.judged_rows): windows with a row outside normal operation among them are outside normal
    operation (windows_from_blocks)."""
    return build_detector(config.model, "", config.source.driver_indices).judged_rows(config.prepare.window)


def load_detector(directory: str | Path) -> Detector:
    """Load any saved detector (weights + JSON config) from ``directory``."""
    from lstmad.detectors.persistence import read_config

    kind = read_config(directory)["detector"]
    if kind not in DETECTORS:
        raise ValueError(f"{directory}: unknown detector kind {kind!r}")
    return DETECTORS[kind].load(directory)
