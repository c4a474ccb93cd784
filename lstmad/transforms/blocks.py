"""Tensor blocks in memory: building them from a series and turning them into windows (pure; the files
themselves are read and written by lstmad.io.tensor_store).

A block holds ``n_rows`` consecutive grid rows of one asset and segment: ``n_history`` rows of context
followed by the block's own rows. Windows are identified by their last row, which is always an own row, so
every window of a segment lies in exactly one block and consecutive blocks overlap by at most W−1 rows.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import torch

from lstmad import names
from lstmad.dates import DAY_US, MICROS

# Row groups of this many blocks: a reader can decode part of a date's file (Spark scoring cuts a single
# date into pieces for all cores) without decoding the whole of it.
BLOCKS_PER_ROW_GROUP = 32

BLOCK_SCHEMA = pa.schema([
    (names.ASSET, pa.string()),
    (names.SEGMENT, pa.int64()),
    (names.BLOCK_START, pa.int64()),  # microseconds since the epoch, UTC
    (names.STEP_S, pa.int32()),
    (names.N_ROWS, pa.int32()),
    (names.N_HISTORY, pa.int32()),
    (names.N_CHANNELS, pa.int32()),
    (names.VALUES, pa.binary()),  # float32, row-major (n_rows, n_channels)
    (names.MASK, pa.binary()),  # bits (np.packbits, little), row-major (n_rows, n_channels): 1 = measured
    (names.LABELS, pa.binary()),  # int8 per row, null when the source has no labels
    (names.STATES, pa.binary()),  # int8 per row (0: normal operation), null when no operating states are configured
    (names.STATS_ID, pa.string()),
    (names.DATE, pa.string()),
])


def build_blocks(asset: str, timestamps_us: np.ndarray, values: np.ndarray, segments: np.ndarray,
                 labels: Optional[np.ndarray], window: int, block_rows: int, step_s: int, stats_id: str,
                 own_from_us: int, own_to_us: int, observed: Optional[np.ndarray] = None,
                 dtype: type = np.float32, states: Optional[np.ndarray] = None) -> list[dict]:
    """Cut one asset's sorted, normalised series into blocks, one set per UTC date.

    timestamps_us (n,), values (n, C), segments (n,), labels (n,) or None, observed (n, C) bool (False where
    the value was filled in; None: all measured), states (n,) int8 operating states or None. Values are stored as ``dtype`` (float32; float64 only for
    the unnormalised intermediate of a statistics fit). Rows with timestamps in
    [own_from_us, own_to_us) are own rows; earlier rows only serve as history (at most W−1 per block).
    Each block has at most ``block_rows`` rows. Returns rows of BLOCK_SCHEMA as dicts.
    """
    blocks = []
    n = timestamps_us.size
    if n == 0:
        return blocks
    own_per_block = block_rows - (window - 1)
    day = timestamps_us // DAY_US
    # A new run starts where the segment or the UTC date changes: blocks never span two dates.
    run_break = np.flatnonzero((np.diff(segments) != 0) | (np.diff(day) != 0)) + 1
    seg_start = np.concatenate([[0], np.flatnonzero(np.diff(segments)) + 1])
    seg_of_row_start = seg_start[np.searchsorted(seg_start, np.arange(n), side="right") - 1]
    for lo, hi in zip(np.concatenate([[0], run_break]), np.concatenate([run_break, [n]])):
        if timestamps_us[lo] < own_from_us or timestamps_us[lo] >= own_to_us:
            continue
        for own_lo in range(lo, hi, own_per_block):
            own_hi = min(hi, own_lo + own_per_block)
            first = max(seg_of_row_start[own_lo], own_lo - (window - 1))
            blocks.append({
                names.ASSET: asset,
                names.SEGMENT: int(timestamps_us[seg_of_row_start[own_lo]] // MICROS),
                names.BLOCK_START: int(timestamps_us[first]),
                names.STEP_S: int(step_s),
                names.N_ROWS: int(own_hi - first),
                names.N_HISTORY: int(own_lo - first),
                names.N_CHANNELS: int(values.shape[1]),
                names.VALUES: np.ascontiguousarray(values[first:own_hi], dtype=dtype).tobytes(),
                names.MASK: pack_mask(None if observed is None else observed[first:own_hi], own_hi - first,
                                      values.shape[1]),
                names.LABELS: None if labels is None else np.asarray(labels[first:own_hi], dtype=np.int8).tobytes(),
                names.STATES: None if states is None else np.asarray(states[first:own_hi], dtype=np.int8).tobytes(),
                names.STATS_ID: stats_id,
                names.DATE: np.datetime_as_string(np.datetime64(int(timestamps_us[own_lo]), "us"), unit="D"),
            })
    return blocks


def pack_mask(observed: Optional[np.ndarray], n_rows: int, n_channels: int) -> bytes:
    """(n_rows, C) bool → bit-packed bytes (1 = measured); a ⌈n·C/8⌉-byte column, 1/32 of the values."""
    if observed is None:
        observed = np.ones((n_rows, n_channels), dtype=bool)
    return np.packbits(np.asarray(observed, dtype=bool).reshape(-1), bitorder="little").tobytes()


def unpack_mask(raw: Optional[bytes], n_rows: int, n_channels: int) -> np.ndarray:
    """Bytes from pack_mask → (n_rows, C) bool; a missing mask means every value was measured."""
    if raw is None:
        return np.ones((n_rows, n_channels), dtype=bool)
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n_rows * n_channels, bitorder="little")
    return bits.reshape(n_rows, n_channels).astype(bool)


def masked_share_of_windows(observed: np.ndarray, window: int) -> np.ndarray:
    """Share of filled-in values in each W-row window of a block; observed (n, C) → (n − W + 1,)."""
    per_row = (~observed).sum(axis=1)
    cumulative = np.concatenate([[0], np.cumsum(per_row)])
    return (cumulative[window:] - cumulative[:-window]) / float(window * observed.shape[1])


def block_counts(block: dict, window: int, max_masked_share: float) -> dict[str, int]:
    """What one block (a BLOCK_SCHEMA row) holds: its own grid rows, rows and values filled in, usable windows
    and windows skipped for more than ``max_masked_share`` filled-in values."""
    n_rows, n_hist, n_ch = block[names.N_ROWS], block[names.N_HISTORY], block[names.N_CHANNELS]
    observed = unpack_mask(block[names.MASK], n_rows, n_ch)
    count = windows_in_block(n_rows, window)
    skipped = int((masked_share_of_windows(observed, window) > max_masked_share + 1e-12).sum()) if count else 0
    own = observed[n_hist:]
    by_state: dict[str, int] = {}
    if block.get(names.STATES) is not None:
        codes, counts = np.unique(np.frombuffer(block[names.STATES], dtype=np.int8)[n_hist:], return_counts=True)
        by_state = {str(int(c)): int(k) for c, k in zip(codes, counts) if c != 0}
    return {"rows_by_operating_state": by_state, "blocks": 1, "grid_rows": int(own.shape[0]), "grid_rows_filled": int((~own).all(axis=1).sum()),
            "values_filled": int((~own).sum()), "windows": count - skipped, "windows_skipped_masked": skipped}


def windows_in_block(n_rows: int, window: int) -> int:
    """Number of W-row windows that lie inside a block of n_rows rows."""
    return max(0, n_rows - window + 1)


@dataclasses.dataclass
class Windows:
    """W×C windows as strided views over concatenated block rows, never materialised all at once.

    series (R, C) float32; starts (N,) first row of each window in ``series``; end_us (N,) timestamp of each
    window's last row; asset (N,) asset name index into ``assets``; label_last (N,) label of the last row
    (−1 unknown); label_any (N,) 1 when any row of the window is labelled anomalous; state_last (N,) int8
    operating state of the window (0 normal operation): that of the latest row outside normal operation among
    the last ``state_rows`` rows of the reader (windows_from_blocks; 1: the last row's own state).
    Windows with more than the reader's ``max_masked_share`` of filled-in values are not in the set; their
    number is ``skipped_masked``.
    """

    series: torch.Tensor
    starts: np.ndarray
    window: int
    end_us: np.ndarray
    asset: np.ndarray
    assets: list[str]
    label_last: np.ndarray
    label_any: np.ndarray
    skipped_masked: int = 0  # windows left out because too many of their values were filled in
    state_last: Optional[np.ndarray] = None  # None: all in normal operation

    def __post_init__(self):
        if self.state_last is None:
            self.state_last = np.zeros(self.starts.size, dtype=np.int8)

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def n_channels(self) -> int:
        return int(self.series.shape[1])

    def batch(self, index: np.ndarray | slice, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Windows ``index`` as a (B, W, C) tensor; only this batch is copied, into ``out`` ((≥B, C, W)
        float32, reused by streaming readers) when given."""
        views = self.series.unfold(0, self.window, 1)  # (R−W+1, C, W), a view
        rows = torch.as_tensor(self.starts[index], dtype=torch.long)
        if out is None:
            return views[rows].transpose(1, 2)
        target = out[:rows.numel()]
        torch.index_select(views, 0, rows, out=target)
        return target.transpose(1, 2)

    def subset(self, index: np.ndarray) -> "Windows":
        """The windows at ``index`` (positions into this set), sharing the same series."""
        return dataclasses.replace(self, starts=self.starts[index], end_us=self.end_us[index],
                                   asset=self.asset[index], label_last=self.label_last[index],
                                   label_any=self.label_any[index], state_last=self.state_last[index])

    def covered_rows(self) -> np.ndarray:
        """(R,) bool: the rows of ``series`` that lie in at least one of these windows."""
        cover = np.zeros(self.series.shape[0] + 1, dtype=np.int64)
        np.add.at(cover, self.starts, 1)
        np.add.at(cover, self.starts + self.window, -1)
        return np.cumsum(cover[:-1]) > 0

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for lo in range(0, len(self), batch_size):
            yield self.batch(slice(lo, lo + batch_size))

    @classmethod
    def from_array(cls, windows: np.ndarray, labels: Optional[np.ndarray] = None) -> "Windows":
        """Wrap an explicit (N, W, C) array (tests, small data); labels (N,) for the last row."""
        n, w, c = windows.shape
        labels = np.full(n, -1, dtype=np.int8) if labels is None else np.asarray(labels, dtype=np.int8)
        return cls(torch.as_tensor(np.ascontiguousarray(windows, dtype=np.float32).reshape(n * w, c)),
                   np.arange(n, dtype=np.int64) * w, w, np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                   ["array"], labels, (labels == 1).astype(np.int8))


def per_window(by_asset: dict, windows: Windows, default: float) -> np.ndarray:
    """(N,) float64 the value ``by_asset`` holds for each window's asset (``default`` for an asset it lacks)."""
    by_name = np.array([float(by_asset.get(name, default)) for name in windows.assets] or [default])
    return by_name[np.asarray(windows.asset, dtype=np.int64)]


def window_states(row_states: np.ndarray, ends: np.ndarray, state_rows: int) -> np.ndarray:
    """(N,) int8 state of each window ending at row ``ends`` (N,) of a block whose rows are in ``row_states``
    (n,) int8: the state of the latest row in a state (≠ 0) among rows end − state_rows + 1 .. end, else 0."""
    index = np.arange(row_states.size)
    latest = np.maximum.accumulate(np.where(row_states != 0, index, -1))[ends]  # latest row in a state, ≤ end
    inside = (latest >= 0) & (latest > ends - max(1, int(state_rows)))
    return np.where(inside, row_states[np.maximum(latest, 0)], 0).astype(np.int8)


def windows_from_blocks(blocks: pa.Table, window: int,
                        transform: Optional[Callable[[np.ndarray, str, str], np.ndarray]] = None,
                        max_masked_share: float = 1.0, state_rows: int = 1) -> Windows:
    """All windows of a table of blocks (BLOCK_SCHEMA rows): one concatenated (R, C) series plus indices.

    The series costs 1× the block bytes; windows are produced per batch by ``Windows.batch``.
    ``transform(values (n, C), stats_id, asset) -> (n, C)`` rewrites each block's values first
    (renormalisation). Windows with more than ``max_masked_share`` of their values filled in are skipped.
    A window is outside normal operation when any of its last ``state_rows`` rows is (the rows its score is
    made of: Detector.judged_rows), in the state of the latest such row.
    """
    parts, starts, end_us, asset_idx, label_last, label_any, state_last = [], [], [], [], [], [], []
    assets: list[str] = []
    offset = 0
    skipped = 0
    columns = blocks.to_pydict() if blocks.num_rows else {}
    for i in range(blocks.num_rows):
        n_rows, n_ch = columns[names.N_ROWS][i], columns[names.N_CHANNELS][i]
        count = windows_in_block(n_rows, window)
        if count == 0:
            continue
        asset = columns[names.ASSET][i]
        values = np.frombuffer(columns[names.VALUES][i], dtype=np.float32).reshape(n_rows, n_ch)
        if transform is not None:
            values = np.asarray(transform(values, columns[names.STATS_ID][i], asset), dtype=np.float32)
        raw_labels = columns[names.LABELS][i]
        labels = (np.frombuffer(raw_labels, dtype=np.int8) if raw_labels is not None
                  else np.full(n_rows, -1, dtype=np.int8))
        local = np.arange(count, dtype=np.int64)
        if max_masked_share < 1.0 and names.MASK in columns:
            share = masked_share_of_windows(unpack_mask(columns[names.MASK][i], n_rows, n_ch), window)
            local = local[share <= max_masked_share + 1e-12]
            skipped += count - local.size
        if asset not in assets:
            assets.append(asset)
        parts.append(values)
        starts.append(offset + local)
        step_us = columns[names.STEP_S][i] * MICROS
        end_us.append(columns[names.BLOCK_START][i] + (local + window - 1) * step_us)
        asset_idx.append(np.full(local.size, assets.index(asset), dtype=np.int64))
        label_last.append(labels[local + window - 1])
        positive = np.concatenate([[0], np.cumsum(labels == 1)])
        label_any.append(((positive[local + window] - positive[local]) > 0).astype(np.int8))
        raw_states = columns.get(names.STATES, [None] * blocks.num_rows)[i]
        state_last.append(np.zeros(local.size, np.int8) if raw_states is None
                          else window_states(np.frombuffer(raw_states, dtype=np.int8), local + window - 1, state_rows))
        offset += n_rows
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        n_ch = columns[names.N_CHANNELS][0] if blocks.num_rows else 0
        return Windows(torch.zeros((0, n_ch)), empty, window, empty, empty, assets,
                       np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int8), skipped)
    return Windows(torch.from_numpy(np.concatenate(parts)), np.concatenate(starts), window,
                   np.concatenate(end_us), np.concatenate(asset_idx), assets,
                   np.concatenate(label_last), np.concatenate(label_any), skipped, np.concatenate(state_last))


def block_rows_of(blocks: pa.Table, own_only: bool = True) -> np.ndarray:
    """The rows of all blocks stacked into (R, C) float32; with own_only the history rows are skipped."""
    columns = blocks.select([names.N_ROWS, names.N_HISTORY, names.N_CHANNELS, names.VALUES]).to_pydict()
    out = []
    for n_rows, n_hist, n_ch, raw in zip(*columns.values()):
        values = np.frombuffer(raw, dtype=np.float32).reshape(n_rows, n_ch)
        out.append(values[n_hist:] if own_only else values)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
