"""What every detector shares: the sklearn-like interface (fit / score), the parameter dataclass it is built
from, moving to a device, and storage as ``detector.json`` (+ ``weights.pt`` for networks, nothing pickled).

A detector subclasses Detector, names its ``kind`` and ``params_class``, and implements ``fit(windows,
on_epoch) -> self`` (setting ``window_``, ``n_channels_``, ``history_`` and ``validation_scores_``),
``score(windows, batch_size) -> (N,) float64`` and, to be saved, ``saved_state() -> dict`` and
``restore(state, directory, device)``; networks live in ``network_`` and are saved and moved here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lstmad.detectors.persistence import load_weights, read_config, save_weights, write_config
from lstmad.transforms.blocks import Windows


class Detector:
    """Base of every detector (see the module docstring)."""

    kind: str = ""
    params_class: type = object
    score_alignment = "window"  # "window": a score per window, belonging to its last row; "last": of its last row
    # fits in seconds where an LSTM takes minutes: unset threshold.cross_fit_folds calibrates it out of fold
    quick_to_fit = False

    def __init__(self, params: Optional[object] = None, **overrides):
        self.params = dataclasses.replace(params or self.params_class(), **overrides)

    def judged_rows(self, window: int) -> int:
        """How many of a W-row window's last rows its score is made of: W for a score of the whole window, 1
        for one of its last row. A window is outside normal operation when any of them is
        (windows_from_blocks' state_rows), so the rows of a stop never weigh in a score."""
        return window if self.score_alignment == "window" else 1

    def to(self, device) -> "Detector":
        """Move the network (if any) to ``device``; returns self."""
        if hasattr(self, "network_"):
            self.network_.to(device)
        return self

    def score_and_shares(self, windows: Windows, selected: Callable[[np.ndarray], np.ndarray],
                         batch_size: int = 4096) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(N,) scores of the windows, and the (K, C) channel shares of the K windows ``selected(scores)`` (an
        (N,) boolean mask) picks, or None when the detector has no attribution. Here the picked windows go
        through the model a second time; detectors whose score and shares come from the same error vectors
        override this to run the model once."""
        scores = self.score(windows, batch_size=batch_size)
        shares_of = getattr(self, "channel_shares", None)
        if shares_of is None:
            return scores, None
        picked = np.flatnonzero(selected(scores))
        if picked.size == 0:
            return scores, np.zeros((0, windows.n_channels))
        return scores, shares_of(windows.subset(picked), batch_size=batch_size)

    def keep_validation_times(self, validation: Windows) -> None:
        """Remember when and on which asset each validation window ends (``validation_end_us_``,
        ``validation_assets_``, beside ``validation_scores_``): a threshold budget in intervals per asset-week
        is calibrated on them."""
        self.validation_end_us_ = np.asarray(validation.end_us)
        self.validation_assets_ = np.asarray(validation.assets, dtype=object)[validation.asset]

    def saved_state(self) -> dict:
        """Fitted state for ``detector.json`` beyond kind, params, window and channels (JSON-able)."""
        return {}

    def restore(self, state: dict, directory: Path, device: str) -> None:
        """Set the fitted state back from ``detector.json`` (and, for networks, load ``network_``)."""

    def save(self, directory: str | Path) -> None:
        """``detector.json`` (kind, parameters, fitted state) and, for networks, ``weights.pt`` (a plain
        state_dict); no pickled objects."""
        if not hasattr(self, "window_"):
            raise RuntimeError(f"{self.kind} detector is not fitted: call fit() or load() first")
        folder = write_config(directory, {"detector": self.kind, "params": dataclasses.asdict(self.params),
                                          "window": self.window_, "n_channels": self.n_channels_,
                                          **self.saved_state()})
        if hasattr(self, "network_"):
            save_weights(folder, self.network_)

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "Detector":
        state = read_config(directory)
        # JSON gives lists where the parameters hold tuples (layer sizes)
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in state["params"].items()}
        detector = cls(cls.params_class(**params))
        detector.window_, detector.n_channels_ = state["window"], state["n_channels"]
        detector.history_ = state.get("history", [])
        detector.restore(state, Path(directory), device)
        return detector

    @staticmethod
    def load_network(network, directory: Path, device: str):
        """``network`` with the saved weights, on ``device``, in eval mode."""
        return load_weights(network, directory, device)


def latest_split(windows: Windows, share: float, minimum: int = 1) -> tuple[Windows, Windows]:
    """(earlier windows, the latest ``share`` of them by end time, at least ``minimum``): validation is held
    out by time, not at random, since neighbouring windows overlap by W−1 rows."""
    order = np.argsort(windows.end_us, kind="stable")
    n_late = max(minimum, int(round(len(windows) * share)))
    return windows.subset(np.sort(order[:-n_late])), windows.subset(np.sort(order[-n_late:]))


class LastRowDetector(Detector):
    """A detector of single rows: each window is scored by its last row (the classical baselines). It fits on
    all but the latest ``params.validation_share`` of the windows and scores those as ``validation_scores_``,
    so that a threshold from them is out of sample, as the trained detectors' are."""

    score_alignment = "last"
    quick_to_fit = True

    def fit(self, windows: Windows, on_epoch=None) -> "LastRowDetector":
        held_out = self.params.validation_share > 0 and len(windows) >= 10  # 0: fit on all, scores in sample
        fit_on, validation = latest_split(windows, self.params.validation_share) if held_out else (windows, windows)
        self.window_, self.n_channels_ = windows.window, windows.n_channels
        self.fit_rows(self.rows(fit_on))
        self.history_ = []
        self.validation_scores_ = self.score(validation)
        self.keep_validation_times(validation)
        return self

    def fit_rows(self, rows: np.ndarray) -> None:
        """Fit on (n, C) rows."""
        raise NotImplementedError

    @staticmethod
    def rows(windows: Windows) -> np.ndarray:
        """(N, C) float64: the last row of each window."""
        return windows.series.numpy()[windows.starts + windows.window - 1].astype(np.float64)
