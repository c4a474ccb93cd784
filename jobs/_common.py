"""What the spark-submit entry points in this folder share: each is `lstmad <command>` (same options, parsed
by lstmad.cli, the one argument layer) with its result as one JSON line on stdout."""

from __future__ import annotations

import logging
import sys
from typing import Optional


def log_to_stderr() -> None:
    """Logs to stderr, stdout only for the result line. Under spark-submit PySpark merges the Python driver's
    stderr into stdout (PythonRunner), so there the result line is simply the last line. Called by the
    scripts' __main__, not by main(), so a test calling main() keeps its own logging."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    # py4j says "Closing down clientserver connection" at exit, after the result line, through whatever
    # handler Spark's start-up attached: keep its chatter out
    logging.getLogger("py4j").setLevel(logging.WARNING)


def run(command: str, argv: Optional[list[str]] = None) -> None:
    """``lstmad <command> <argv>`` (argv: the script's own arguments when None), result as one JSON line."""
    from lstmad.cli import run_job

    run_job(command, argv)
