"""The nightly DAG's spark-submit runner for real: a Spark standalone master and worker on loopback, an Airflow
connection pointing at the master (AIRFLOW_CONN_SPARK_DEFAULT), and one nightly run through dag.test() with
airflow.runner: spark_submit; its prepare, score and drift tasks are SparkSubmitOperators running jobs/*.py
through spark-submit with lstmad shipped as a --py-files zip. The tables it writes equal those the in-process
runner's steps write from the same inputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from lstmad import lakehouse, names, pipeline
from lstmad.config import load_config
from lstmad.packaging import py_files_zip
from lstmad.tensors import content_version
from tests.conftest import REPO, cluster_env, tiny_config_dict, write_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SCORED = dt.date(2026, 1, 7)
TABLES = (names.QUARANTINE, names.ANOMALY_SCORES, names.ANOMALY_INTERVALS, names.DRIFT_METRICS)
SUBMITTED = ("prepare", "score", "drift")  # the nightly tasks that become SparkSubmitOperators
KEYS = {names.QUARANTINE: [names.ASSET, names.TIMESTAMP, names.REASON, "channel"],
        names.ANOMALY_SCORES: [names.ASSET, names.TIMESTAMP], names.ANOMALY_INTERVALS: ["interval_id"],
        names.DRIFT_METRICS: [names.SCORED_DATE]}


def night_tables(config) -> dict[str, pd.DataFrame]:
    """The scored night's rows of every table the nightly DAG writes, in a stable row order."""
    lake = pipeline.Paths.of(config).lake
    frames = {}
    for table in TABLES:
        frame = lakehouse.read_table(lake, table).to_pandas()
        frame = frame[frame[lakehouse.DATE_COLUMN[table]] == SCORED.isoformat()]
        # a prepare run's own id differs between any two runs; channel shares compare as channels + numbers
        frame = frame.drop(columns=["run_id"], errors="ignore")
        if names.CHANNEL_SHARES in frame:
            shares = frame.pop(names.CHANNEL_SHARES)
            frame["share_channels"] = [None if s is None else ",".join(e["channel"] for e in s) for s in shares]
            frame["share_sum_sq"] = [None if s is None else sum(e["share"] ** 2 for e in s) for s in shares]
        frames[table] = frame.sort_values(KEYS[table]).reset_index(drop=True)
    return frames


def nightly_run(root, conf, name: str, **env_extra) -> dict:
    """One dag.test() of lstmad_nightly for SCORED, in its own AIRFLOW_HOME; the harness's record of it."""
    bin_dir = os.path.dirname(sys.executable)
    env = {**cluster_env(), "AIRFLOW_HOME": str(root / f"airflow_{name}"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "LSTMAD_CONF": str(conf), "PYTHONPATH": str(REPO),
           # the Spark provider runs the spark-submit it finds on PATH (pyspark's, in this virtualenv)
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **env_extra}
    subprocess.run([os.path.join(bin_dir, "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    result = root / f"{name}.json"
    done = subprocess.run([sys.executable, str(REPO / "tests" / "simulation_harness.py"), str(REPO / "dags"),
                           SCORED.isoformat(), SCORED.isoformat(), str(result), "--nightly-only"], env=env,
                          capture_output=True, text=True, timeout=900, cwd=root)
    (root / f"{name}.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(result.read_text())["nights"][0]


@pytest.fixture(scope="module")
def both_runners(tmp_path_factory, standalone_cluster, spark):
    url, cluster_logs = standalone_cluster
    root = tmp_path_factory.mktemp("cluster_dag")
    package = py_files_zip(root / "dist")
    raw = tiny_config_dict(root / "home", model={"epochs": 2},
                           airflow={"runner": "spark_submit", "spark_conn_id": "spark_default", "py_files": str(package),
                                    "spark_conf": f"spark.pyspark.python={sys.executable},spark.driver.host=127.0.0.1,"
                                                  "spark.executor.memory=1g,spark.task.cpus=1"})
    conf = write_config(root / "spark_submit.yaml", raw)
    config = load_config(conf)
    paths = pipeline.Paths.of(config)
    pipeline.generate(config)
    pipeline.prepare_training_data(config, spark=spark)
    pipeline.train(config, spark=spark)  # the champion both runners score with

    night = nightly_run(root, conf, "spark_submit", AIRFLOW_CONN_SPARK_DEFAULT=url)
    got, got_version = night_tables(config), content_version(paths.tensors, SCORED.isoformat())

    # The in-process runner's steps (what its DAG tasks call) on the same inputs, after removing everything
    # the cluster wrote, so that every row compared below is that runner's own.
    for table in TABLES:
        shutil.rmtree(lakehouse.table_path(paths.lake, table))
    shutil.rmtree(paths.tensors / f"{names.DATE}={SCORED.isoformat()}")
    pipeline.prepare(config, SCORED, SCORED, spark=spark)
    pipeline.score(config, SCORED, spark=spark)
    pipeline.drift(config, SCORED)
    return dict(night=night, got=got, got_version=got_version, expected=night_tables(config),
                expected_version=content_version(paths.tensors, SCORED.isoformat()), cluster_logs=cluster_logs)


def test_the_spark_submit_runner_runs_each_step_as_an_application_on_the_cluster(both_runners):
    night = both_runners["night"]
    assert night["state"] == "success", night["tasks"]
    assert {task: night["tasks"][task] for task in SUBMITTED} == {task: "success" for task in SUBMITTED}
    master_log = (both_runners["cluster_logs"] / "master.log").read_text()
    # SparkSubmitOperator(name=f"lstmad-{job}") registered with the master; drift reads Delta tables on the
    # driver and starts no Spark application
    for job in ("prepare", "score"):
        assert f"Registering app lstmad-{job}" in master_log, job


def test_the_spark_submit_runner_writes_the_same_tables_as_the_in_process_runner(both_runners):
    expected, got = both_runners["expected"], both_runners["got"]
    # the cluster's prepare wrote byte-identical tensor blocks
    assert both_runners["got_version"] == both_runners["expected_version"]
    assert len(expected[names.ANOMALY_SCORES]) > 500 and len(expected[names.DRIFT_METRICS]) == 1
    for table in TABLES:
        assert list(got[table].columns) == list(expected[table].columns), table
        assert len(got[table]) == len(expected[table]), table
        pd.testing.assert_frame_equal(got[table], expected[table], check_exact=False, rtol=1e-6, atol=1e-9,
                                      obj=table)
