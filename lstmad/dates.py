"""The time axis every stage shares: microseconds since the epoch (UTC), and the nights (UTC dates) that
partition the results."""

from __future__ import annotations

import datetime as dt

MICROS = 1_000_000
DAY_US = 86_400 * MICROS


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end``, both included."""
    if end < start:
        raise ValueError(f"date range ends ({end}) before it starts ({start})")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def iso_dates(start: dt.date, end: dt.date) -> list[str]:
    """date_range as YYYY-MM-DD strings (the partition values of every dated table)."""
    return [d.isoformat() for d in date_range(start, end)]


def day_start_us(day: dt.date) -> int:
    """Midnight (UTC) at the start of ``day``, in microseconds since the epoch."""
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp()) * MICROS


def utc_date(micros: int) -> str:
    """The UTC date (YYYY-MM-DD) of a timestamp in microseconds since the epoch: the night it belongs to."""
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(micros))).date().isoformat()
