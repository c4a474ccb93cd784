"""Shared fixtures: one local Spark session per test session, tiny pipeline configs in temporary homes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_CONF = REPO / "conf" / "demo.yaml"


def tiny_config_dict(home: Path, **sections) -> dict:
    """The demo pipeline shrunk to seconds: 2 turbines × 8 days at 5-minute steps, small model."""
    raw = yaml.safe_load(DEMO_CONF.read_text())
    raw["pipeline"] = "tiny"
    raw["home"] = str(home)
    raw["synthetic"].update(turbines=2, days=8, step_s=300, seed=9, start=dt.date(2026, 1, 1))
    raw["prepare"].update(step_s=300, smoothing_half_width=2, window=12, block_rows=100)
    raw["model"].update(hidden_sizes=[16, 8], epochs=3, batch_size=64, patience=2)
    raw["train"].update(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 4), eval_start=dt.date(2026, 1, 5),
                        eval_end=dt.date(2026, 1, 6))
    raw["score"].update(min_interval_s=600, merge_gap_s=600)
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def spark():
    from lstmad.config import SparkConfig
    from lstmad.spark.session import get_session

    session = get_session(SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="1g"))
    yield session
    session.stop()
