"""Generic, seeded fault injectors for (n, C) sensor series and long multi-asset tables: a fault-injection study
on normal data (to choose a detector without labels) and benchmarks on real SCADA with known injected events.

Magnitudes are in units of the channel's scale (``robust_scales``), so they are unit-free; ``lag`` counts rows.
NaN stays NaN (nothing is injected into a missing value) and rows outside an event are never changed.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

FAULT_CLASSES = ("stuck", "drift", "offset", "gain", "noise_burst", "spike", "lag", "decoupling")
# Large enough for a good detector to see, small enough that a marginal threshold alone misses some of them.
DEFAULT_MAGNITUDES = {"stuck": 0.0, "drift": 4.0, "offset": 3.0, "gain": 1.0, "noise_burst": 2.0, "spike": 8.0,
                      "lag": 3.0, "decoupling": 0.0}
EVENT_COLUMNS = ("event", "asset", "fault", "channel", "start", "end", "length", "magnitude")


@dataclasses.dataclass(frozen=True)
class Injection:
    """One fault event on one channel: rows ``start … start+length−1``; magnitude in channel scales (lag: rows)."""
    fault: str
    channel: int
    start: int
    length: int
    magnitude: float

    def __post_init__(self):
        if self.fault not in FAULT_CLASSES:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULT_CLASSES}")
        if self.length < 1 or self.start < 0:
            raise ValueError(f"an injection needs start >= 0 and length >= 1, got {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def robust_scales(values: np.ndarray) -> np.ndarray:
    """(n, C) → (C,): 1.4826·MAD per column ignoring NaN; the std where the MAD is 0 (a mostly constant
    channel), 1.0 where that is 0 or undefined too (so a magnitude is never multiplied by 0 or NaN)."""
    values = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns have no median
        mad = 1.4826 * np.nanmedian(np.abs(values - np.nanmedian(values, axis=0)), axis=0)
        std = np.nanstd(values, axis=0)
    scales = np.where(np.isfinite(mad) & (mad > 0), mad, std)
    return np.where(np.isfinite(scales) & (scales > 0), scales, 1.0)


def _free_starts(blocked: np.ndarray, length: int, lo: int, hi: int) -> np.ndarray:
    """Starts s in [lo, hi − length] whose rows s … s+length−1 are all unblocked."""
    blocked_before = np.concatenate([[0], np.cumsum(blocked)])
    starts = np.arange(lo, max(hi - length + 1, lo))
    return starts[blocked_before[starts + length] == blocked_before[starts]]


def inject(values: np.ndarray, injection: Injection, scales: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, C) → a new (n, C) array with the fault applied to one channel over the event's rows; the input is not
    modified. Only finite values inside the event change.

    - stuck: holds the last finite value before the start (the first finite one of the event if there is none).
    - drift: a ramp from 0 at the first row to magnitude·scale at the last (a 1-row event gets the full value).
    - gain: v' = m + (1 + magnitude)(v − m), m the mean of the event's finite values: the sensor's gain changes
      while its level is preserved, so the fault is in the variability, not a disguised offset.
    - spike: every event row offset by ±magnitude·scale, one random sign per row.
    - lag: v'[t] = v[t − lag] (lag = round(magnitude) rows; the last finite value where that is missing).
    - decoupling: the event's values are replaced by the channel's own values from a random stretch of the same
      length that does not overlap the event (a fully finite one when there is one).
    """
    out = np.array(values, dtype=np.promote_types(np.asarray(values).dtype, np.float32))
    n, c, start = out.shape[0], injection.channel, injection.start
    stop = start + injection.length
    if stop > n:
        raise ValueError(f"{injection} ends after the series' {n} rows")
    channel = out[:, c].copy()
    event = channel[start:stop]
    finite = np.isfinite(event)
    step = injection.magnitude * float(np.asarray(scales)[c])
    fault = injection.fault
    if fault == "stuck":
        before = channel[:start][np.isfinite(channel[:start])]
        held = before[-1] if before.size else (event[finite][0] if finite.any() else np.nan)
        new = np.full_like(event, held)
    elif fault == "drift":
        new = event + step * (np.linspace(0.0, 1.0, injection.length) if injection.length > 1 else 1.0)
    elif fault == "offset":
        new = event + step
    elif fault == "gain":
        mean = event[finite].mean() if finite.any() else 0.0
        new = mean + (1.0 + injection.magnitude) * (event - mean)
    elif fault == "noise_burst":
        new = event + rng.normal(0.0, abs(step), injection.length)
    elif fault == "spike":
        new = event + step * rng.choice([-1.0, 1.0], injection.length)
    elif fault == "lag":
        filled = pd.Series(channel).ffill().to_numpy()  # a delayed sensor repeats its last reading
        new = filled[np.clip(np.arange(start, stop) - round(injection.magnitude), 0, n - 1)]
    else:  # decoupling
        def sources(blocked):  # starts of stretches before or after the event, none of whose rows is blocked
            return np.concatenate([_free_starts(blocked, injection.length, 0, start),
                                   _free_starts(blocked, injection.length, stop, n)])
        anywhere, finite_only = sources(np.zeros(n, bool)), sources(~np.isfinite(channel))
        if anywhere.size == 0:
            raise ValueError(f"{injection}: no stretch of {injection.length} rows outside the event to copy from")
        source = int(rng.choice(finite_only if finite_only.size else anywhere))
        new = channel[source:source + injection.length]
    write = finite & np.isfinite(new)  # never into a missing value, never a new missing value
    out[start:stop, c] = np.where(write, new, event)
    return out


def plan_injections(n_rows: int, n_channels: int, *, faults: Sequence[str] = FAULT_CLASSES, per_fault: int,
                    seed: int, min_length: int, max_length: int, magnitudes: Mapping[str, float] | None = None,
                    channels: Sequence[int] | None = None, gap: int = 0,
                    eligible: np.ndarray | None = None) -> list[Injection]:
    """``per_fault`` events of each class, sorted by start, deterministic given ``seed``.

    The series is cut into one slot per event and the classes are shuffled over the slots, so events spread over
    the series and no class sits only at its start; an event that finds no room in its slot goes anywhere free.
    Events never overlap, are at least ``gap`` rows apart (rows strictly between them), and lie where every row
    is ``eligible`` ((n_rows,) bool, e.g. normal operation without NaN). Lengths are uniform in
    [min_length, max_length], except spikes, which are one row. Magnitudes default to ``DEFAULT_MAGNITUDES``.
    """
    unknown = set(faults) - set(FAULT_CLASSES)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; expected some of {FAULT_CLASSES}")
    magnitudes = {**DEFAULT_MAGNITUDES, **(magnitudes or {})}
    channels = list(range(n_channels)) if channels is None else list(channels)
    rng = np.random.default_rng(seed)
    classes = [faults[i] for i in rng.permutation(np.repeat(np.arange(len(faults)), per_fault))]
    blocked = np.zeros(n_rows, bool) if eligible is None else ~np.asarray(eligible, bool)
    lengths = [1 if f == "spike" else int(rng.integers(min_length, max_length + 1)) for f in classes]
    bounds = np.linspace(0, n_rows, len(classes) + 1).astype(int)
    starts: dict[int, int] = {}
    for anywhere in (False, True):
        for k in (k for k in range(len(classes)) if k not in starts):
            lo, hi = (0, n_rows) if anywhere else (bounds[k], bounds[k + 1])
            free = _free_starts(blocked, lengths[k], lo, hi)
            if free.size:
                starts[k] = int(rng.choice(free))
                blocked[max(starts[k] - gap, 0):starts[k] + lengths[k] + gap] = True
    if len(starts) < len(classes):
        raise ValueError(f"room for only {len(starts)} of {len(classes)} events in {n_rows} rows "
                         f"(lengths {min_length}–{max_length}, gap {gap}, {int(np.sum(blocked))} rows blocked)")
    plan = [Injection(classes[k], int(rng.choice(channels)), starts[k], lengths[k], float(magnitudes[classes[k]]))
            for k in range(len(classes))]
    return sorted(plan, key=lambda injection: injection.start)


def apply_plan(values: np.ndarray, plan: Sequence[Injection], scales: np.ndarray,
               seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) → (injected (n, C), event per row (n,) int: −1 normal, k inside plan[k]).

    Each event is computed on the original values with its own generator (seed, k), so an event's result does
    not depend on the others (a stuck value or a decoupling source is never taken from another fault)."""
    values = np.asarray(values)
    out = np.array(values, dtype=np.promote_types(values.dtype, np.float32))
    event_of_row = np.full(values.shape[0], -1, dtype=int)
    for k, injection in enumerate(plan):
        rows = slice(injection.start, injection.start + injection.length)
        if (event_of_row[rows] >= 0).any():
            raise ValueError(f"plan[{k}] overlaps an earlier event: {injection}")
        rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), k])
        out[rows, injection.channel] = inject(values, injection, scales, rng)[rows, injection.channel]
        event_of_row[rows] = k
    return out, event_of_row


def inject_frame(frame: pd.DataFrame, asset_column: str, time_column: str, channels: Sequence[str],
                 plan_per_asset: Mapping[object, Sequence[Injection]],
                 scales: np.ndarray | Mapping[object, np.ndarray] | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inject into a long table of several assets. A plan's rows are positions in that asset's rows ordered by
    time; an Injection's channel indexes ``channels``. ``scales``: one (C,) for all assets, a mapping asset →
    (C,), or None for each asset's ``robust_scales``. Returns (an injected copy in the input's row order, an
    events table with ``EVENT_COLUMNS``: event number, asset, fault, channel name, start and end time (of the
    first and last row, inclusive), length in rows, magnitude)."""
    out = frame.copy()
    values = frame[list(channels)].to_numpy(dtype=float, copy=True)
    assets, times = frame[asset_column].to_numpy(), frame[time_column]
    events = []
    for asset, plan in plan_per_asset.items():
        positions = np.flatnonzero(assets == asset)
        # pandas sorts tz-aware times natively; through numpy they would be slow Python objects
        positions = positions[times.iloc[positions].reset_index(drop=True).sort_values(kind="stable").index]
        own = values[positions]
        asset_scales = robust_scales(own) if scales is None else (
            scales[asset] if isinstance(scales, Mapping) else scales)
        # A seed per asset from its name, so adding or reordering assets leaves the others' injections alone.
        values[positions], _ = apply_plan(own, plan, asset_scales, (seed, zlib.crc32(str(asset).encode())))
        for injection in plan:
            events.append({"event": len(events), "asset": asset, "fault": injection.fault,
                           "channel": channels[injection.channel],
                           "start": times.iloc[positions[injection.start]],
                           "end": times.iloc[positions[injection.start + injection.length - 1]],
                           "length": injection.length, "magnitude": injection.magnitude})
    for j, name in enumerate(channels):
        column = values[:, j]
        out[name] = column.astype(frame[name].dtype) if pd.api.types.is_float_dtype(frame[name]) else column
    return out, pd.DataFrame(events, columns=list(EVENT_COLUMNS))


def event_labels(assets, timestamps, events: pd.DataFrame) -> np.ndarray:
    """(n,) assets and (n,) timestamps of any table → (n,) int: the ``event`` number of the events-table row whose
    asset matches and whose [start, end] (inclusive) holds the timestamp, −1 outside every event."""
    assets, timestamps = np.asarray(assets), pd.Series(timestamps).reset_index(drop=True)
    labels = np.full(len(assets), -1, dtype=int)
    for asset, of_asset in events.groupby("asset", sort=False):
        rows = np.flatnonzero(assets == asset)
        times = timestamps.iloc[rows]
        for event in of_asset.itertuples(index=False):
            labels[rows[((times >= event.start) & (times <= event.end)).to_numpy()]] = event.event
    return labels
