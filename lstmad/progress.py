"""Progress of long steps: what is running, how far it is, how fast, how long to go.

Lines go to the ``lstmad.progress`` logger, at most one every ``LSTMAD_PROGRESS_S`` seconds (default 10) per
step plus its first and last: in a log file or an Airflow task log they are the periodic lines that say a
7-minute training is alive. The CLI shows them on the terminal; where stderr is a terminal it draws one
updating bar (rate, ETA) instead of a line every few seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

log = logging.getLogger("lstmad.progress")


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get("LSTMAD_PROGRESS_S", "10")))
    except ValueError:
        return 10.0


class _Bar:
    """Whether lines become one redrawn bar (set by the CLI when stderr is a terminal)."""

    enabled = False


def use_bar(enabled: bool) -> None:
    _Bar.enabled = enabled and sys.stderr.isatty()


def in_worker() -> None:
    """In a Spark Python worker (no logging set up): progress lines to its stderr, which the executor's log
    (and, in local mode, the driver's console or the Airflow task log) shows."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def step(message: str, *args) -> None:
    """One line saying what starts now (a phase without a known total)."""
    log.info(message, *args)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Counts ``unit`` done of ``total`` (None: unknown) for ``what``; ``advance(n)`` after each piece.

    Line: "<what>: 12,000/48,000 windows (25 %), 5,400 windows/s, ETA 0:07" (without a total: the count and
    the rate).
    """

    def __init__(self, what: str, total: Optional[int] = None, unit: str = "windows"):
        self.what, self.total, self.unit = what, total, unit
        self.done = 0
        self.started = self.last = time.perf_counter()
        self.every = interval_s()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text + f", {_duration(elapsed)} elapsed"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if _Bar.enabled:
            if now - self.last >= 0.2:
                self.last = now
                self._draw()
        elif now - self.last >= self.every:
            self.last = now
            log.info(self.line())

    def _draw(self) -> None:
        width = 24
        filled = int(width * min(1.0, self.done / self.total)) if self.total else 0
        bar = f"[{'#' * filled}{'.' * (width - filled)}] " if self.total else ""
        sys.stderr.write(f"\r{bar}{self.line()}\033[K")
        sys.stderr.flush()

    def finish(self, note: str = "", only_if_long: bool = False) -> None:
        """The closing line (``only_if_long``: only when the step lasted at least the line interval, so that
        many short steps, such as Spark tasks, stay quiet)."""
        if _Bar.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        if only_if_long and time.perf_counter() - self.started < self.every:
            return
        log.info(self.line() + (f"; {note}" if note else ""))
