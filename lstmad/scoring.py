"""Scoring tensor blocks with a model bundle: windows → window scores → per-timestamp scores and flags."""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from lstmad import names
from lstmad.bundle import ModelBundle
from lstmad.series import NormalisationStats
from lstmad.tensors import Windows, windows_from_blocks

SCORE_SCHEMA = pa.schema([(names.ASSET, pa.string()), ("timestamp_us", pa.int64()), (names.SCORE, pa.float64()),
                          (names.LABEL, pa.int8())])


def model_windows(bundle: ModelBundle, blocks: pa.Table, stats_by_id: dict[str, NormalisationStats],
                  max_masked_share: float = 1.0) -> Windows:
    """Windows of ``blocks`` in the model's normalisation (blocks written with other statistics are mapped
    back to source units and normalised with the model's); windows with more than ``max_masked_share`` of
    filled-in values are skipped (counted in ``Windows.skipped_masked``)."""
    def renormalised(values: np.ndarray, stats_id: str, asset: str) -> np.ndarray:
        if stats_id not in stats_by_id:
            raise KeyError(f"tensor blocks use normalisation {stats_id}, whose statistics are missing")
        return bundle.renormalise(values, stats_by_id[stats_id], asset)

    same = not blocks.num_rows or set(blocks.column(names.STATS_ID).to_pylist()) == {bundle.stats.stats_id}
    transform: Optional[Callable] = None if same else renormalised
    return windows_from_blocks(blocks, bundle.window, transform, max_masked_share)


def score_blocks(bundle: ModelBundle, blocks: pa.Table, stats_by_id: dict[str, NormalisationStats],
                 batch_size: int = 4096, max_masked_share: float = 1.0) -> pa.Table:
    """Per-timestamp scores of a table of blocks: one row (asset_id, timestamp_us, score, label) per window,
    placed at the window's last timestamp (the detectors here score the last row). Windows with too many
    filled-in values get no score."""
    windows = model_windows(bundle, blocks, stats_by_id, max_masked_share)
    scores = bundle.detector.score(windows, batch_size=batch_size) if len(windows) else np.zeros(0)
    return pa.table({
        names.ASSET: pa.array([windows.assets[i] for i in windows.asset], pa.string()),
        "timestamp_us": pa.array(windows.end_us, pa.int64()),
        names.SCORE: pa.array(scores, pa.float64()),
        names.LABEL: pa.array(windows.label_last, pa.int8()),
    }, schema=SCORE_SCHEMA)


def interval_id(asset: str, start_us: int, model_name: str, model_version: str) -> str:
    """Stable id of an interval: the same asset, start and model always give the same id."""
    return hashlib.sha1(f"{asset}|{start_us}|{model_name}|{model_version}".encode()).hexdigest()[:16]
