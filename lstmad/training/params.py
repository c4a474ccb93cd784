"""The training settings every trained detector shares (no torch import: configuration extends them)."""

from __future__ import annotations

import dataclasses

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class TrainingParams:
    """Settings every trained detector shares; detectors' parameter classes and the pipeline's ModelConfig
    extend it."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 3
    validation_share: float = 0.2
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str = ""  # where each epoch's checkpoint goes; a run finding one there resumes from it
    lr_schedule: str = "constant"  # or "cosine": cosine annealing of the learning rate over the epochs
    # auto: fp32 (bf16 autocast trained the forecaster and autoencoder no faster on an H200); fp32; bf16 (CUDA)
    precision: str = "auto"
    compile: bool = False  # torch.compile the network for the training steps
    pin_memory: bool = True  # page-locked host batches (non-blocking copies) when training on CUDA


def training_params_of(settings) -> dict:
    """The TrainingParams fields of any object that has them (a ModelConfig), as keyword arguments."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(TrainingParams)}
