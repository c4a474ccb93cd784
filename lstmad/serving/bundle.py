"""A trained model as it travels: detector weights + JSON config, channel order, normalisation statistics,
threshold and the drift reference, saved together in one folder (no pickled objects)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lstmad.detectors import load_detector
from lstmad.transforms import circular
from lstmad.transforms.blocks import per_window
from lstmad.transforms.series import NormalisationStats


class ModelMismatchError(ValueError):
    """The model cannot score these data: channels, window or step differ."""


@dataclasses.dataclass
class ModelBundle:
    """Everything scoring needs besides the data. ``detector`` is fitted."""

    detector: object
    channels: tuple[str, ...]
    window: int
    step_s: int
    stats: NormalisationStats
    threshold: float
    threshold_rule: str
    expected_alarm_rate: float
    drift_reference: dict
    # threshold.per_asset: each asset's scores × its scale, so that the one threshold is that asset's own
    # (lstmad.evaluation.calibration.per_asset); an asset without a scale is scored as calibrated for the fleet
    asset_score_scales: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        # a detector's stuck-sensor floor is a value on the fleet threshold's scale: it must not be rescaled per
        # asset with the model's own score (lstmad.detectors.frozen.StillnessFloor.with_floor)
        if self.asset_score_scales:
            self.detector.asset_score_scales_ = dict(self.asset_score_scales)
        # a production score must not depend on which other windows share its batch (issue 16)
        if getattr(self.detector, "batch_dependent", False):
            raise ModelMismatchError(
                f"{self.detector.kind} with the batch-recurrent LSTM (the authors' code) scores a window "
                "differently depending on its batch neighbours; it is for reproduction only and cannot score "
                "in the pipeline: use lstm_mode per_sample (model.profile small, paper or tuned)")

    @property
    def reported_channels(self) -> tuple[str, ...]:
        """The channels an operator reads shares of: the model's, a circular channel's sine and cosine folded
        back into the source channel (lstmad.transforms.circular)."""
        return circular.source_names(self.channels)

    def reported_shares(self, shares: np.ndarray) -> np.ndarray:
        """(N, C') shares over the model's channels → (N, len(reported_channels))."""
        return circular.fold_shares(shares, self.channels)

    def on_threshold_scale(self, scores: np.ndarray, windows) -> np.ndarray:
        """(N,) detector scores of ``windows`` → the scores the pipeline stores and compares with ``threshold``:
        × each window's asset's scale (unchanged without per-asset thresholds)."""
        if not self.asset_score_scales:
            return scores
        return scores * per_window(self.asset_score_scales, windows, 1.0)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.detector.save(directory)
        meta = {"channels": list(self.channels), "window": self.window, "step_s": self.step_s,
                "stats": self.stats.to_dict(), "threshold": self.threshold, "threshold_rule": self.threshold_rule,
                "expected_alarm_rate": self.expected_alarm_rate, "drift_reference": self.drift_reference,
                "asset_score_scales": self.asset_score_scales}
        (directory / "bundle.json").write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ModelBundle":
        directory = Path(directory)
        meta = json.loads((directory / "bundle.json").read_text())
        return cls(load_detector(directory), tuple(meta["channels"]), meta["window"], meta["step_s"],
                   NormalisationStats.from_dict(meta["stats"]), meta["threshold"], meta["threshold_rule"],
                   meta["expected_alarm_rate"], meta["drift_reference"], meta.get("asset_score_scales", {}))

    def check_compatible(self, channels: tuple[str, ...], window: int, step_s: int) -> None:
        """Refuse data the model was not trained for, naming what differs."""
        if tuple(channels) != tuple(self.channels):
            missing = sorted(set(self.channels) - set(channels))
            extra = sorted(set(channels) - set(self.channels))
            raise ModelMismatchError(f"model channels differ from the data: missing {missing}, extra {extra}"
                                     if missing or extra else "model channel order differs from the data")
        if window != self.window or step_s != self.step_s:
            raise ModelMismatchError(f"model expects window {self.window} at {self.step_s}s steps, data have "
                                     f"window {window} at {step_s}s")

    def check_normalisation(self, block_stats: dict[str, NormalisationStats], where: str) -> None:
        """Refuse tensor blocks whose normalisation cannot be mapped onto the model's: statistics over other
        channels or another channel order (mapping them would mix channels up), or a model whose own statistics
        do not cover its channels. ``block_stats``: statistics id → statistics of the blocks to score;
        ``where`` names the tensor table in the message."""
        if tuple(self.stats.channels) != tuple(self.channels):
            raise ModelMismatchError(f"model normalisation {self.stats.stats_id} covers {list(self.stats.channels)}, "
                                     f"not the model's channels {list(self.channels)}: the model folder is damaged")
        for stats_id, stats in sorted(block_stats.items()):
            if tuple(stats.channels) == tuple(self.channels):
                continue
            missing = sorted(set(self.channels) - set(stats.channels))
            extra = sorted(set(stats.channels) - set(self.channels))
            differs = (f"missing {missing}, extra {extra}" if missing or extra
                       else f"channel order {list(stats.channels)}")
            raise ModelMismatchError(
                f"{where}: tensor blocks normalised with statistics {stats_id} (fitted on {stats.fitted_on or '?'}) do "
                f"not match the model's normalisation {self.stats.stats_id} over {list(self.channels)}: {differs}; "
                f"re-prepare these dates with the model's channels")

    def renormalise(self, values: np.ndarray, block_stats: NormalisationStats, asset: str | None = None) -> np.ndarray:
        """Values of ``asset`` normalised with ``block_stats`` → normalised with the model's statistics; (n, C)."""
        if block_stats.stats_id == self.stats.stats_id:
            return values
        return self.stats.apply(block_stats.invert(values, asset), asset).astype(np.float32)
