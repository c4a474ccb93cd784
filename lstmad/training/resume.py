"""The training key: a digest of everything that shapes a trained model, so that a rerun with the same key
resumes an unfinished run's checkpoints and any change starts afresh."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from lstmad.config import PipelineConfig
from lstmad.dates import iso_dates
from lstmad.io.tensor_store import block_files
from lstmad.layout import Paths

# where and how fast it runs does not shape the model; what it is trained on does
NOT_SHAPING = ("threads", "compile", "pin_memory", "checkpoint_dir")


def training_key(config: PipelineConfig) -> str:
    """Digest of the settings and of the training dates' block files (by name and size)."""
    model = {k: v for k, v in dataclasses.asdict(config.model).items() if k not in NOT_SHAPING}
    train = dataclasses.asdict(config.train)
    train["distributed"] = {k: v for k, v in train["distributed"].items()
                            if k in ("processes", "shuffle_files", "use_gpu")}
    data = [(Path(f).parent.name, Path(f).name, Path(f).stat().st_size)
            for f in block_files(Paths.of(config).tensors, iso_dates(config.train.start, config.train.end))]
    shaping = {"pipeline": config.pipeline, "model": model, "train": train,
               "prepare": dataclasses.asdict(config.prepare), "channels": config.source.tensor_channels,
               "drivers": config.source.driver_indices,  # a resumed checkpoint must have the same inputs
               "registered_model": config.registered_model_name, "blocks": data,
               # which training windows are kept apart to calibrate changes what trains
               "calibration_share": config.threshold.calibration_share}
    return hashlib.sha1(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:20]
