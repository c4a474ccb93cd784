"""The cluster path for real, on a Spark standalone master and worker started on loopback, with lstmad shipped
as a --py-files zip:
- jobs/train.py through spark-submit (TorchDistributor, 2 processes as barrier tasks on the executor) gives the
  weights local mode gives;
- the nightly DAG with airflow.runner: spark_submit, through dag.test() and an Airflow connection pointing at
  the master (AIRFLOW_CONN_SPARK_DEFAULT): its prepare, score and drift tasks are SparkSubmitOperators running
  jobs/*.py, and the tables they write with the cluster-trained champion equal those the in-process runner's
  steps write from the same inputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lstmad import names, stages
from lstmad.config import load_config
from lstmad.io import lakehouse, model_store
from lstmad.io.tensor_store import content_version
from lstmad.layout import Paths
from lstmad.packaging import py_files_zip
from tests.conftest import REPO, cluster_env, spark_home, tiny_config_dict, write_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SCORED = dt.date(2026, 1, 7)
TABLES = (names.QUARANTINE, names.ANOMALY_SCORES, names.ANOMALY_INTERVALS, names.DRIFT_METRICS)
SUBMITTED = ("prepare", "score", "drift")  # the nightly tasks that become SparkSubmitOperators
KEYS = {names.QUARANTINE: [names.ASSET, names.TIMESTAMP, names.REASON, "channel"],
        names.ANOMALY_SCORES: [names.ASSET, names.TIMESTAMP], names.ANOMALY_INTERVALS: ["interval_id"],
        names.DRIFT_METRICS: [names.SCORED_DATE]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("cluster_home")
    package = py_files_zip(home / "dist")
    # the nightly DAG submits its steps to the cluster: the connection comes from AIRFLOW_CONN_SPARK_DEFAULT
    airflow = {"runner": "spark_submit", "spark_conn_id": "spark_default", "py_files": str(package),
               "spark_conf": f"spark.pyspark.python={sys.executable},spark.driver.host=127.0.0.1,"
                             "spark.executor.memory=1g,spark.task.cpus=1"}
    raw = tiny_config_dict(home, model={"epochs": 2, "batch_size": 64, "dropout": 0.0},
                           train={"distributed": {"processes": 2, "local_mode": False, "threads_per_process": 1}},
                           airflow=airflow)
    conf = write_config(home / "cluster.yaml", raw)
    config = load_config(conf)
    stages.generate(config)
    stages.prepare_training_data(config, spark=spark)
    return home, conf, config, package


def last_json_line(stdout: str):
    """The last JSON line of a script's stdout (py4j may log its shutdown after it)."""
    return json.loads([line for line in stdout.splitlines() if line.startswith(("{", "["))][-1])


def spark_submit(url: str, job: str, args: list[str], py_files: Path, logs: Path) -> dict:
    command = [str(spark_home() / "bin" / "spark-submit"), "--master", url, "--deploy-mode", "client",
               "--py-files", f"{py_files},{REPO / 'jobs' / '_common.py'}",
               "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.executor.memory=2g",
               "--conf", "spark.task.cpus=1", "--conf", "spark.driver.host=127.0.0.1",
               str(REPO / "jobs" / f"{job}.py"), *args]
    done = subprocess.run(command, env=cluster_env(), capture_output=True, text=True, timeout=600,
                          cwd=logs)
    (logs / f"{job}.stderr").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    (logs / f"{job}.stdout").write_text(done.stdout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])  # a job's stdout ends with its result line, whatever Spark logs


@pytest.fixture(scope="module")
def cluster_trained(standalone_cluster, prepared):
    """jobs/train.py through spark-submit: the first registered version, so the champion."""
    url, logs = standalone_cluster
    home, conf, config, package = prepared
    # the executors import lstmad from the shipped zip (py-files come before site-packages on their path)
    probe = home / "where.py"
    probe.write_text("import json\nfrom pyspark.sql import SparkSession\n"
                     "spark = SparkSession.builder.getOrCreate()\n"
                     "def where(_):\n    import lstmad\n    yield lstmad.__file__\n"
                     "print(json.dumps(spark.sparkContext.parallelize([0, 1], 2).mapPartitions(where).collect()))\n")
    imported = subprocess.run([str(spark_home() / "bin" / "spark-submit"), "--master", url, "--py-files",
                               str(package), "--conf", f"spark.pyspark.python={sys.executable}", str(probe)],
                              env=cluster_env(), capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert all(package.name in f for f in last_json_line(imported.stdout))
    return spark_submit(url, "train", ["--conf", str(conf)], package, logs)


def test_training_through_spark_submit_on_a_standalone_cluster_equals_local_mode(cluster_trained, prepared, spark):
    home, conf, config, _ = prepared
    assert cluster_trained["metrics"]["processes"] == 2  # two DDP ranks ran as barrier tasks on the executor
    cluster_model = Paths.of(config).models / f"v{cluster_trained['model_version']}"
    # Local mode: the same training (TorchDistributor on the driver) gives the same weights
    local_config = load_config(conf, {"train.distributed.local_mode": True})
    assert local_config.train.distributed.local_mode
    local = stages.train(local_config, spark=spark, promote=False)
    local_model = Paths.of(config).models / f"v{local['model_version']}"
    from lstmad.serving.bundle import ModelBundle

    cluster_weights = ModelBundle.load(cluster_model).detector.network_.state_dict()
    for name, value in ModelBundle.load(local_model).detector.network_.state_dict().items():
        torch.testing.assert_close(cluster_weights[name], value, rtol=1e-5, atol=1e-6)


def night_tables(config) -> dict[str, pd.DataFrame]:
    """The scored night's rows of every table the nightly DAG writes, in a stable row order."""
    lake = Paths.of(config).lake
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
    # its own process group: on a timeout the spark-submits it started go too, not only the harness
    harness = subprocess.Popen([sys.executable, str(REPO / "tests" / "simulation_harness.py"), str(REPO / "dags"),
                                SCORED.isoformat(), SCORED.isoformat(), str(result), "--nightly-only"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root,
                               start_new_session=True)
    try:
        output, _ = harness.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(harness.pid, signal.SIGKILL)
        output, _ = harness.communicate()
    (root / f"{name}.log").write_text(output)
    assert harness.returncode == 0, output[-4000:]
    return json.loads(result.read_text())["nights"][0]


@pytest.fixture(scope="module")
def both_runners(tmp_path_factory, standalone_cluster, prepared, cluster_trained, spark):
    url, cluster_logs = standalone_cluster
    home, conf, config, _ = prepared
    paths = Paths.of(config)
    champion = model_store.champion_bundle(config)[0]["version"]
    assert champion == cluster_trained["model_version"]  # the local-mode comparison was not promoted
    root = tmp_path_factory.mktemp("cluster_dag")
    night = nightly_run(root, conf, "spark_submit", AIRFLOW_CONN_SPARK_DEFAULT=url)
    got, got_version = night_tables(config), content_version(paths.tensors, SCORED.isoformat())

    # The in-process runner's steps (what its DAG tasks call) on the same inputs, after removing everything
    # the cluster wrote, so that every row compared below is that runner's own.
    for table in TABLES:
        shutil.rmtree(lakehouse.table_path(paths.lake, table))
    shutil.rmtree(paths.tensors / f"{names.DATE}={SCORED.isoformat()}")
    stages.prepare(config, SCORED, SCORED, spark=spark)
    stages.score(config, SCORED, spark=spark)
    stages.drift(config, SCORED)
    return dict(night=night, got=got, got_version=got_version, expected=night_tables(config), champion=champion,
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
    assert set(got[names.ANOMALY_SCORES][names.MODEL_VERSION]) == {both_runners["champion"]}
    # the cluster's prepare wrote byte-identical tensor blocks
    assert both_runners["got_version"] == both_runners["expected_version"]
    assert len(expected[names.ANOMALY_SCORES]) > 500 and len(expected[names.DRIFT_METRICS]) == 1
    for table in TABLES:
        assert list(got[table].columns) == list(expected[table].columns), table
        assert len(got[table]) == len(expected[table]), table
        pd.testing.assert_frame_equal(got[table], expected[table], check_exact=False, rtol=1e-6, atol=1e-9,
                                      obj=table)
