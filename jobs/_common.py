"""Argument parsing shared by the spark-submit entry points in this folder."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Callable, Optional


def parser(description: str, dated: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--conf", required=True, help="pipeline YAML, e.g. conf/demo.yaml")
    if dated:
        p.add_argument("--date", type=dt.date.fromisoformat, help="date to process, YYYY-MM-DD")
    return p


def optional_date(text: str) -> Optional[dt.date]:
    """YYYY-MM-DD, or empty for none (an Airflow template that rendered an unset param)."""
    return dt.date.fromisoformat(text) if text else None


def log_to_stderr() -> None:
    """Logs to stderr, stdout only for the result line. Under spark-submit PySpark merges the Python driver's
    stderr into stdout (PythonRunner), so there the result line is simply the last line. Called by the
    scripts' __main__, not by main(), so a test calling main() keeps its own logging."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    # py4j says "Closing down clientserver connection" at exit, after the result line, through whatever
    # handler Spark's start-up attached: keep its chatter out
    logging.getLogger("py4j").setLevel(logging.WARNING)


def emit(summary: dict) -> None:
    """The job's result as one JSON line on stdout (what Airflow and wrappers read)."""
    print(json.dumps(summary, default=str))


def run_dated_step(step: Callable, description: str, argv: Optional[list[str]] = None) -> None:
    """Parse --conf and a required --date, run ``step(config, date)`` and emit its summary."""
    from lstmad.config import load_config

    p = parser(description)
    args = p.parse_args(argv)
    if args.date is None:
        p.error("--date is required")
    emit(step(load_config(args.conf), args.date))
