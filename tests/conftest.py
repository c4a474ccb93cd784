"""Shared fixtures: one local Spark session per test session, tiny pipeline configs in temporary homes."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def cluster_env() -> dict:
    """Environment for Spark processes of the test cluster: this virtualenv's Python, loopback only."""
    return {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A Spark standalone master and one 2-core worker bound to 127.0.0.1, stopped at the end of the session:
    yields (master URL, log folder holding master.log and worker.log)."""
    logs = tmp_path_factory.mktemp("cluster")
    port = free_port()
    spark_class = str(spark_home() / "bin" / "spark-class")
    master_log, worker_log = open(logs / "master.log", "w"), open(logs / "worker.log", "w")
    master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port())], env=cluster_env(),
                              stdout=master_log, stderr=subprocess.STDOUT)
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                               "--cores", "2", "--memory", "4g", "--webui-port", str(free_port()),
                               "--work-dir", str(logs / "work")], env=cluster_env(),
                              stdout=worker_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while "Successfully registered with master" not in (logs / "worker.log").read_text():
            if time.time() > deadline or worker.poll() is not None or master.poll() is not None:
                pytest.fail(f"standalone cluster did not come up:\n{(logs / 'master.log').read_text()[-2000:]}\n"
                            f"{(logs / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, logs
    finally:
        for process in (worker, master):
            process.terminate()
        for process in (worker, master):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        master_log.close()
        worker_log.close()
