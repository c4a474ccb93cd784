"""Scoring tensor blocks with a model bundle: windows → window scores → per-timestamp scores and flags."""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from lstmad import names
from lstmad.io.lakehouse import CHANNEL_SHARES_TYPE
from lstmad.serving.bundle import ModelBundle, ModelMismatchError
from lstmad.transforms.blocks import Windows, windows_from_blocks
from lstmad.transforms.series import NormalisationStats

# state: the operating state code of the timestamp (0 normal operation; k the k-th configured state)
SCORE_SCHEMA = pa.schema([(names.ASSET, pa.string()), ("timestamp_us", pa.int64()), (names.SCORE, pa.float64()),
                          (names.LABEL, pa.int8()), (names.STATE, pa.int8())])
FLAGGED_SCORE_SCHEMA = pa.schema(list(SCORE_SCHEMA) + [(names.FLAG, pa.bool_()),
                                                       (names.CHANNEL_SHARES, CHANNEL_SHARES_TYPE)])


def model_windows(bundle: ModelBundle, blocks: pa.Table, stats_by_id: dict[str, NormalisationStats],
                  max_masked_share: float = 1.0) -> Windows:
    """Windows of ``blocks`` in the model's normalisation (blocks written with other statistics are mapped
    back to source units and normalised with the model's); windows with more than ``max_masked_share`` of
    filled-in values are skipped (counted in ``Windows.skipped_masked``)."""
    def renormalised(values: np.ndarray, stats_id: str, asset: str) -> np.ndarray:
        return bundle.renormalise(values, stats_by_id[stats_id], asset)

    used = set(blocks.column(names.STATS_ID).to_pylist()) if blocks.num_rows else set()
    unknown = sorted(used - set(stats_by_id) - {bundle.stats.stats_id})
    if unknown:
        raise ModelMismatchError(f"tensor blocks use normalisation {', '.join(unknown)}, whose statistics are missing")
    bundle.check_normalisation({sid: stats_by_id[sid] for sid in used if sid in stats_by_id}, "tensor blocks")
    same = not used or used == {bundle.stats.stats_id}
    transform: Optional[Callable] = None if same else renormalised
    return windows_from_blocks(blocks, bundle.window, transform, max_masked_share,
                               state_rows=bundle.detector.judged_rows(bundle.window))


def score_blocks(bundle: ModelBundle, blocks: pa.Table, stats_by_id: dict[str, NormalisationStats],
                 batch_size: int = 4096, max_masked_share: float = 1.0,
                 threshold: Optional[float] = None) -> pa.Table:
    """Per-timestamp scores of a table of blocks: one row (asset_id, timestamp_us, score, label, state) per
    window, placed at the window's last timestamp (the detectors here score the last row). Windows with too
    many filled-in values get no score. With a ``threshold``, also flag (score > threshold, never outside
    normal operation) and channel_shares of the flagged rows (FLAGGED_SCORE_SCHEMA)."""
    return scored_blocks(bundle, blocks, stats_by_id, batch_size, max_masked_share, threshold)[0]


def scored_blocks(bundle: ModelBundle, blocks: pa.Table, stats_by_id: dict[str, NormalisationStats],
                  batch_size: int = 4096, max_masked_share: float = 1.0, threshold: Optional[float] = None
                  ) -> tuple[pa.Table, Optional[np.ndarray]]:
    """score_blocks' table and, with a threshold, the flagged rows' shares (K, C) in the order of the model's
    reported_channels (None without a threshold or an attribution)."""
    windows = model_windows(bundle, blocks, stats_by_id, max_masked_share)
    detector = bundle.detector
    share_rows = None

    def on_scale(raw: np.ndarray) -> np.ndarray:  # each asset's own threshold, where it has one
        return bundle.on_threshold_scale(raw, windows)

    if threshold is None:
        scores = on_scale(detector.score(windows, batch_size=batch_size)) if len(windows) else np.zeros(0)
    else:
        def flagged(window_scores: np.ndarray) -> np.ndarray:  # never outside normal operation
            return (window_scores > threshold) & (windows.state_last == 0)

        if len(windows):
            raw, share_rows = detector.score_and_shares(windows, lambda raw: flagged(on_scale(raw)),
                                                        batch_size=batch_size)
            scores = on_scale(raw)
        else:
            scores = np.zeros(0)
            share_rows = np.zeros((0, len(bundle.channels))) if hasattr(detector, "channel_shares") else None
    columns = {
        names.ASSET: pa.array(list(windows.assets), pa.string()).take(pa.array(windows.asset)),
        "timestamp_us": pa.array(windows.end_us, pa.int64()),
        names.SCORE: pa.array(scores, pa.float64()),
        names.LABEL: pa.array(windows.label_last, pa.int8()),
        names.STATE: pa.array(windows.state_last, pa.int8()),
    }
    if threshold is None:
        return pa.table(columns, schema=SCORE_SCHEMA), None
    flags = flagged(scores)
    if share_rows is not None:
        share_rows = bundle.reported_shares(share_rows)
    channel_shares = (pa.nulls(len(flags), CHANNEL_SHARES_TYPE) if share_rows is None
                      else shares_array(share_rows, np.flatnonzero(flags), len(flags), bundle.reported_channels))
    table = pa.table({**columns, names.FLAG: pa.array(flags), names.CHANNEL_SHARES: channel_shares},
                     schema=FLAGGED_SCORE_SCHEMA)
    return table, share_rows


def operating_state_names(codes: np.ndarray, state_names: tuple[str, ...]) -> pa.Array:
    """(n,) state codes → the configured states' names (null in normal operation, code 0); a code beyond the
    configured states (blocks prepared under another operating_states list) is named "unknown state k"."""
    codes = np.asarray(codes, dtype=np.int64)
    top = max(int(codes.max()) if codes.size else 0, len(state_names))
    lookup = np.array([None, *state_names, *[f"unknown state {k}" for k in range(len(state_names) + 1, top + 1)]],
                      dtype=object)
    return pa.array(lookup[np.clip(codes, 0, None)], pa.string())


def shares_array(rows: np.ndarray, positions: np.ndarray, length: int, channels: tuple[str, ...]) -> pa.Array:
    """(K, C) shares of the rows at ``positions`` (K,) of an array of ``length`` → CHANNEL_SHARES_TYPE array
    (null elsewhere), each list sorted by share, largest first; built without a Python loop per row."""
    rows = np.asarray(rows, dtype=np.float64)
    n_channels = rows.shape[1]
    order = np.argsort(-rows, axis=1, kind="stable")
    values = pa.StructArray.from_arrays(
        [pa.array(np.asarray(channels, dtype=object)[order].ravel(), pa.string()),
         pa.array(np.take_along_axis(rows, order, axis=1).ravel(), pa.float64())], names=["channel", "share"])
    present = np.zeros(length, dtype=bool)
    present[positions] = True
    offsets = np.concatenate([[0], np.cumsum(present * n_channels)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~present), type=CHANNEL_SHARES_TYPE)


def shares_row(pairs: list[dict], channels: tuple[str, ...]) -> list[float]:
    """One CHANNEL_SHARES_TYPE value ([{channel, share}, …], largest first) back in ``channels`` order (the
    inverse of shares_array for one row; a channel not listed gets 0)."""
    listed = {pair["channel"]: pair["share"] for pair in pairs}
    return [listed.get(channel, 0.0) for channel in channels]


def interval_id(asset: str, start_us: int, model_name: str, model_version: str) -> str:
    """Stable id of an interval: the same asset, start and model always give the same id."""
    return hashlib.sha1(f"{asset}|{start_us}|{model_name}|{model_version}".encode()).hexdigest()[:16]
