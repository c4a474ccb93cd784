"""The cluster path for real: a Spark standalone master and worker on loopback, jobs/train.py (TorchDistributor,
2 processes as barrier tasks on the executor) and jobs/score.py through spark-submit with lstmad shipped as a
--py-files zip; the results equal local mode's."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from lstmad import lakehouse, names, pipeline
from lstmad.config import load_config
from lstmad.packaging import py_files_zip
from tests.conftest import REPO, cluster_env, spark_home, tiny_config_dict, write_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]

SCORED = dt.date(2026, 1, 7)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("cluster_home")
    raw = tiny_config_dict(home, model={"epochs": 2, "batch_size": 64, "dropout": 0.0},
                           train={"distributed": {"processes": 2, "local_mode": False, "threads_per_process": 1}})
    conf = write_config(home / "cluster.yaml", raw)
    config = load_config(conf)
    pipeline.generate(config)
    pipeline.prepare_training_data(config, spark=spark)
    pipeline.prepare(config, SCORED, SCORED, spark=spark)
    return home, conf, config


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


def test_train_and_score_through_spark_submit_on_a_standalone_cluster_equal_local_mode(standalone_cluster, prepared,
                                                                                      spark):
    url, logs = standalone_cluster
    home, conf, config = prepared
    package = py_files_zip(home / "dist")

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

    trained = spark_submit(url, "train", ["--conf", str(conf)], package, logs)
    assert trained["metrics"]["processes"] == 2  # two DDP ranks ran as barrier tasks on the executor
    cluster_model = pipeline.Paths.of(config).models / f"v{trained['model_version']}"

    scored = spark_submit(url, "score", ["--conf", str(conf), "--date", SCORED.isoformat()], package, logs)
    lake = pipeline.Paths.of(config).lake
    table = lakehouse.read_table(lake, names.ANOMALY_SCORES)
    table = table.filter(pc.equal(table.column(names.SCORED_DATE), SCORED.isoformat()))
    assert table.num_rows == scored["n_scores"] > 0
    cluster_scores = table.sort_by([(names.ASSET, "ascending"), (names.TIMESTAMP, "ascending")])

    # Local mode: the same training (TorchDistributor on the driver) gives the same weights ...
    local_config = load_config(conf, {"train.distributed.local_mode": True})
    assert local_config.train.distributed.local_mode
    local = pipeline.train(local_config, spark=spark)
    local_model = pipeline.Paths.of(config).models / f"v{local['model_version']}"
    from lstmad.bundle import ModelBundle

    cluster_weights = ModelBundle.load(cluster_model).detector.network_.state_dict()
    for name, value in ModelBundle.load(local_model).detector.network_.state_dict().items():
        torch.testing.assert_close(cluster_weights[name], value, rtol=1e-5, atol=1e-6)
    # ... and the cluster's model scored in local mode gives the cluster's scores.
    client_version = trained["model_version"]
    from lstmad import tracking

    tracking.set_alias(config.tracking_uri, config.registered_model_name, tracking.CHAMPION, client_version,
                       "cluster model, rescored in local mode")
    pipeline.score(config, SCORED, spark=spark)
    table = lakehouse.read_table(lake, names.ANOMALY_SCORES)
    local_scores = table.filter(pc.equal(table.column(names.SCORED_DATE), SCORED.isoformat())) \
        .sort_by([(names.ASSET, "ascending"), (names.TIMESTAMP, "ascending")])
    assert local_scores.column(names.TIMESTAMP).to_pylist() == cluster_scores.column(names.TIMESTAMP).to_pylist()
    np.testing.assert_allclose(local_scores.column(names.SCORE).to_numpy(),
                               cluster_scores.column(names.SCORE).to_numpy(), rtol=1e-6, atol=1e-9)
