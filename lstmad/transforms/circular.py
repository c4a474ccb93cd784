"""Circular channels (angles: wind direction, nacelle yaw, vane position): a channel with a ``period`` enters
the tensors as the sine and cosine of its phase, two tensor channels named ``<name>:sin`` and ``<name>:cos``.

Why: an angle read as a number jumps by a whole period where it wraps (359° → 1° is a step of −358°). Gap
filling and smoothing then invent values between the two (180°), the normalisation sees a spread that is not
there, and a model sees a jump no physics made; a wind direction wraps every hour or so in a westerly. The
sine and cosine are continuous across the wrap and carry the same information.

Everything before the tensors (range checks, sentinels, the quarantine, the row accounting) works on the
channels as the source has them; everything from the regular grid on (filling, smoothing, normalisation,
models, drift) works on the tensor channels; what an operator reads (channel shares in the scores and
intervals) is folded back onto the source channels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

SUFFIXES = (":sin", ":cos")


def tensor_names(names: Sequence[str], periods: Sequence[Optional[float]]) -> tuple[str, ...]:
    """The tensor channels of source channels ``names`` (C,) with ``periods`` (C,; None: not circular), in order."""
    out: list[str] = []
    for name, period in zip(names, periods, strict=True):
        out += [name + s for s in SUFFIXES] if period else [name]
    return tuple(out)


def source_index(periods: Sequence[Optional[float]]) -> np.ndarray:
    """(C',) position of each tensor channel's source channel, for source channels with ``periods`` (C,)."""
    return np.array([i for i, period in enumerate(periods) for _ in range(2 if period else 1)], dtype=np.int64)


def to_tensor_values(values: np.ndarray, periods: Sequence[Optional[float]]) -> np.ndarray:
    """(n, C) values as the source has them → (n, C') tensor values: a circular channel's value v becomes
    sin(2πv/period), cos(2πv/period); NaN (missing) stays NaN in both. Returns ``values`` itself when no
    channel is circular."""
    if not any(periods):
        return values
    columns = []
    for i, period in enumerate(periods):
        if period:
            phase = values[:, i] * (2.0 * np.pi / period)
            columns += [np.sin(phase), np.cos(phase)]
        else:
            columns.append(values[:, i])
    return np.column_stack(columns).astype(values.dtype, copy=False)


def source_bounds(tensor_bounds: np.ndarray, periods: Sequence[Optional[float]]) -> np.ndarray:
    """(C',) magnitudes per tensor channel at or beyond which a value may overflow once normalised → (C,) per
    source channel: a channel's own, infinite for a circular one (a sine or cosine is never large; the exact
    check on the tensor values still covers it)."""
    out = np.full(len(periods), np.inf)
    for j, i in enumerate(source_index(periods)):
        if not periods[i]:
            out[i] = tensor_bounds[j]
    return out


def source_of(tensor_name: str) -> str:
    """The source channel a tensor channel comes from (``Ya_avg:sin`` → ``Ya_avg``)."""
    for suffix in SUFFIXES:
        if tensor_name.endswith(suffix):
            return tensor_name[: -len(suffix)]
    return tensor_name


def source_names(tensor_channels: Sequence[str]) -> tuple[str, ...]:
    """The source channels of tensor channels, each once, in order."""
    return tuple(dict.fromkeys(source_of(name) for name in tensor_channels))


def fold_shares(shares: np.ndarray, tensor_channels: Sequence[str]) -> np.ndarray:
    """(N, C') shares over tensor channels → (N, C) over their source channels (source_names order): a
    circular channel's share is the sum of its sine's and cosine's. Returns ``shares`` itself when no tensor
    channel is a sine or cosine."""
    sources = [source_of(name) for name in tensor_channels]
    if sources == list(tensor_channels):
        return shares
    names = source_names(tensor_channels)
    folded = np.zeros((shares.shape[0], len(names)), dtype=np.float64)
    for j, source in enumerate(sources):
        folded[:, names.index(source)] += shares[:, j]
    return folded
