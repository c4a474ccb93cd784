"""Shared fixtures: one local Spark session per test session, tiny pipeline configs in temporary homes."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lstmad.spark.loopback_cluster import cluster_env, loopback_cluster

__all__ = ["cluster_env"]  # the environment of the test cluster's processes, for tests that start Spark ones

REPO = Path(__file__).resolve().parents[1]
DEMO_CONF = REPO / "conf" / "demo.yaml"


def tiny_config_dict(home: Path, **sections) -> dict:
    """The demo pipeline shrunk to seconds: 2 turbines × 8 days at 5-minute steps, small model."""
    raw = yaml.safe_load(DEMO_CONF.read_text())
    raw["pipeline"] = "tiny"
    raw["home"] = str(home)
    raw["synthetic"].update(turbines=2, days=8, step_s=300, seed=9, start=dt.date(2026, 1, 1))
    raw["prepare"].update(step_s=300, smoothing_half_width=2, window=12, block_rows=100)
    # the forecaster these tests were written for (the demo's own default may differ)
    raw["model"].update(detector="lstm_forecaster", hidden_sizes=[16, 8], epochs=3, batch_size=64, patience=2)
    raw["train"].update(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 4), eval_start=dt.date(2026, 1, 5),
                        eval_end=dt.date(2026, 1, 6))
    raw["score"].update(min_interval_s=600, merge_gap_s=600)
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return raw


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


SIMULATION_FIRST, SIMULATION_LAST = dt.date(2026, 1, 11), dt.date(2026, 1, 29)
SIMULATION_CHANGE = dt.date(2026, 1, 16)  # the recalibration: day index 15 of a farm starting on the 1st
SIMULATION_RECALIBRATED = ["pitch1_moto_tmp", "pitch2_moto_tmp", "pitch3_moto_tmp", "int_tmp", "pitch1_ng5_tmp",
                           "pitch2_ng5_tmp", "pitch3_ng5_tmp", "acc_x"]


@pytest.fixture(scope="session")
def retraining_simulation(tmp_path_factory):
    """The DAGs through dag.test() (tests/simulation_harness.py): the training DAG (first champion), the nightly
    DAG backfilled night by night over SIMULATION_FIRST..SIMULATION_LAST on a farm recalibrated on
    SIMULATION_CHANGE with each triggered training run after its night, then the maintenance DAG; with the DAG
    integrity facts. Used by tests/test_retraining_simulation.py alone: the suite's workers each take whole
    modules (make test: --dist loadfile), so one worker runs it once."""
    from lstmad import names, stages
    from lstmad.config import load_config
    from lstmad.io import lakehouse
    from lstmad.layout import Paths

    root = tmp_path_factory.mktemp("simulation")
    raw = tiny_config_dict(
        root / "home",
        synthetic={"days": 30, "change_day": (SIMULATION_CHANGE - dt.date(2026, 1, 1)).days,
                   "recalibrated_channels": SIMULATION_RECALIBRATED, "recalibration_offset_sd": 4.0},
        train={"start": dt.date(2026, 1, 1), "end": dt.date(2026, 1, 8), "eval_start": dt.date(2026, 1, 9),
               "eval_end": dt.date(2026, 1, 10), "window_days": 8, "eval_days": 1, "exclude_severity": 3.0},
        drift={"alarm_rate_factor": 4.0})
    conf = write_config(root / "tiny.yaml", raw)
    config = load_config(conf)
    stages.generate(config)
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow_home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "LSTMAD_CONF": str(conf), "PYTHONPATH": str(REPO)}
    bin_dir = os.path.dirname(sys.executable)
    subprocess.run([os.path.join(bin_dir, "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "simulation_harness.py"), str(REPO / "dags"),
                           SIMULATION_FIRST.isoformat(), SIMULATION_LAST.isoformat(), str(root / "result.json")],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((root / "result.json").read_text())
    paths = Paths.of(config)
    scores = lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.SCORED_DATE, names.FLAG, names.LABEL,
                                                               names.MODEL_VERSION]).to_pandas()
    drift = lakehouse.read_table(paths.lake, names.DRIFT_METRICS).to_pandas().set_index(names.SCORED_DATE)
    return dict(result=result, config=config, paths=paths, scores=scores, drift=drift)


@pytest.fixture(scope="session")
def spark():
    from lstmad.config import SparkConfig
    from lstmad.spark.session import get_session

    session = get_session(SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="1g"))
    yield session
    session.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and one 2-core worker bound to 127.0.0.1, stopped at the end of the session:
    yields (master URL, log folder holding master.log and worker0.log)."""
    logs = tmp_path_factory.mktemp("cluster")
    try:
        with loopback_cluster(logs, workers=1, cores=2, memory="4g", timeout_s=90) as url:
            yield url, logs
    except RuntimeError as error:
        if "did not come up" not in str(error):
            raise
        pytest.fail(f"{error}:\n{(logs / 'master.log').read_text()[-2000:]}\n{(logs / 'worker0.log').read_text()[-2000:]}")
