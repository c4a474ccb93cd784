"""Argument parsing shared by the spark-submit entry points in this folder."""

from __future__ import annotations

import argparse
import datetime as dt
import json


def parser(description: str, dated: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--conf", required=True, help="pipeline YAML, e.g. conf/demo.yaml")
    if dated:
        p.add_argument("--date", type=dt.date.fromisoformat, help="date to process, YYYY-MM-DD")
    return p


def emit(summary: dict) -> None:
    """The job's result as one JSON line on stdout (what Airflow and wrappers read)."""
    print(json.dumps(summary, default=str))
