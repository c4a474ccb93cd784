"""The DAGs: integrity (imports, tags, retries, light parsing, task graph) and full dag.test() runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from lstmad import lakehouse, names
from lstmad.config import load_config
from lstmad.pipeline import Paths, generate
from tests.conftest import REPO, tiny_config_dict, write_config

pytestmark = pytest.mark.slow

SCORED = dt.date(2026, 1, 7)


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow")
    # Drift thresholds that every night crosses, so that the run exercises the training trigger.
    conf = write_config(root / "tiny.yaml", tiny_config_dict(root / "home", drift={"psi_threshold": -1.0,
                                                                                    "drifted_channel_share": 0.0}))
    config = load_config(conf)
    generate(config)
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow_home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "LSTMAD_CONF": str(conf),
           "PYTHONPATH": str(REPO)}
    bin_dir = os.path.dirname(sys.executable)
    subprocess.run([os.path.join(bin_dir, "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "dag_harness.py"), str(REPO / "dags"),
                           SCORED.isoformat(), str(root / "result.json")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((root / "result.json").read_text()), config


def test_dags_import_without_errors_with_tags_docs_and_retries(dag_run):
    result, _ = dag_run
    assert result["import_errors"] == {}
    assert set(result["dags"]) == {"lstmad_nightly", "lstmad_training", "lstmad_maintenance"}
    assert result["dags"]["lstmad_maintenance"]["schedule"] != result["dags"]["lstmad_training"]["schedule"]
    for dag in result["dags"].values():
        assert "lstmad" in dag["tags"] and dag["doc_md"]
        assert all(task["retries"] >= 2 and task["backoff"] for task in dag["tasks"].values())
        assert all(task["timeout_s"] == 180 * 60 and task["on_failure"] for task in dag["tasks"].values())
    assert result["dags"]["lstmad_training"]["tasks"]["train"]["pool"] == "default_pool"
    assert result["dags"]["lstmad_training"]["params"] == ["end"]  # the recent-data window's last date
    assert result["dags"]["lstmad_nightly"]["params"] == ["date"]  # backfills: any night by hand


def test_task_graphs(dag_run):
    nightly = dag_run[0]["dags"]["lstmad_nightly"]["tasks"]
    assert nightly["target_date"]["downstream"] == ["drift", "prepare", "retrain_needed", "score"]
    assert nightly["prepare"]["downstream"] == ["score"]
    assert nightly["score"]["downstream"] == ["drift"]
    assert nightly["drift"]["downstream"] == ["retrain_needed"]
    assert nightly["retrain_needed"]["downstream"] == ["trigger_training"]
    training = dag_run[0]["dags"]["lstmad_training"]["tasks"]
    assert training["prepare_training_range"]["downstream"] == ["train"]
    assert training["train"]["downstream"] == ["promote"]


def test_dag_files_parse_fast_without_heavy_imports(dag_run):
    for facts in dag_run[0]["parse"].values():
        assert facts["heavy"] == []
        assert facts["parse_s"] < 1.0


def test_training_then_nightly_run_end_to_end(dag_run):
    result, config = dag_run
    assert result["training_state"] == "success", result["training_tasks"]
    assert result["nightly_state"] == "success", result["nightly_tasks"]
    paths = Paths.of(config)
    scores = lakehouse.read_table(paths.lake, names.ANOMALY_SCORES).to_pandas()
    assert set(scores.scored_date) == {SCORED.isoformat()} and len(scores) == 2 * 288
    drift = lakehouse.read_table(paths.lake, names.DRIFT_METRICS).to_pandas()
    assert drift.scored_date.tolist() == [SCORED.isoformat()]
    assert bool(drift.retrain.iloc[0])
    assert result["nightly_tasks"]["trigger_training"] == "success"
    assert result["maintenance_state"] == "success"  # after the nightly run: its scores survive compaction
    assert len(lakehouse.read_table(paths.lake, names.ANOMALY_SCORES)) == 2 * 288
    triggered = [r for r in result["training_runs"] if r["run_type"] == "operator_triggered"]
    assert len(triggered) == 1
    assert triggered[0]["conf"] == {"end": SCORED.isoformat()}  # the window of recent data ends at that night


def test_spark_conf_pairs_are_parsed_and_a_malformed_one_is_named():
    sys.path.insert(0, str(REPO / "dags"))
    from _lstmad_common import spark_conf_pairs

    assert spark_conf_pairs(" spark.executor.memory=4g , spark.task.resource.gpu.amount=1,") == {
        "spark.executor.memory": "4g", "spark.task.resource.gpu.amount": "1"}
    assert spark_conf_pairs("") == {}
    with pytest.raises(ValueError, match="airflow.spark_conf: 'spark.executor.memory' is not key=value"):
        spark_conf_pairs("spark.executor.memory")
