"""Where a pipeline keeps its data under its home: raw landing table, tensor blocks, Delta lake, model cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lstmad import names
from lstmad.config import PipelineConfig


class PrepareError(ValueError):
    """The pipeline's data cannot be used as asked (no rows, no blocks, no statistics yet); the message names
    the file or folder and what to run first."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """The folders of one pipeline home."""

    home: Path
    raw: Path
    tensors: Path
    lake: Path
    models: Path

    @classmethod
    def of(cls, config: PipelineConfig) -> "Paths":
        home = config.pipeline_home
        return cls(home, config.resolve(config.source.path), home / names.TENSOR_BLOCKS, home / "lake",
                   home / "models")

    @property
    def locks(self) -> Path:
        return self.home / "locks"
