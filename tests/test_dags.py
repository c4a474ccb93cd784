"""The DAG files' helpers and runners. Their integrity (imports, tags, retries, light parsing, task graph) and
full dag.test() runs are checked on the DAG runs of the retraining simulation (tests/test_retraining_simulation.py),
in that module so that one test worker runs the simulation once."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_spark_conf_pairs_are_parsed_and_a_malformed_one_is_named():
    sys.path.insert(0, str(REPO / "dags"))
    from _lstmad_common import spark_conf_pairs

    assert spark_conf_pairs(" spark.executor.memory=4g , spark.task.resource.gpu.amount=1,") == {
        "spark.executor.memory": "4g", "spark.task.resource.gpu.amount": "1"}
    assert spark_conf_pairs("") == {}
    with pytest.raises(ValueError, match="airflow.spark_conf: 'spark.executor.memory' is not key=value"):
        spark_conf_pairs("spark.executor.memory")


GRAPH = """
import json, sys
sys.path.insert(0, sys.argv[1])
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(json.dumps({d: {t.task_id: {"upstream": sorted(t.upstream_task_ids), "operator": type(t).__name__,
                                  "args": list(getattr(t, "application_args", None) or [])}
                      for t in dag.tasks} for d, dag in bag.dags.items()}))
"""


def dag_graphs(runner: str, home) -> dict:
    """Per DAG, per task: upstream task ids, operator class and spark-submit arguments, as the DagBag parses
    them with ``airflow.runner`` set to ``runner`` (a fresh interpreter: the DAG files read it at import)."""
    import json
    import os
    import subprocess

    env = {**os.environ, "AIRFLOW_HOME": str(home), "LSTMAD_AIRFLOW_RUNNER": runner}
    out = subprocess.run([sys.executable, "-c", GRAPH, str(REPO / "dags")], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_both_runners_give_the_same_tasks_and_dependencies(tmp_path):
    local, cluster = dag_graphs("in_process", tmp_path / "a"), dag_graphs("spark_submit", tmp_path / "b")
    edges = {runner: {dag: {task: facts["upstream"] for task, facts in tasks.items()} for dag, tasks in graph.items()}
             for runner, graph in (("local", local), ("cluster", cluster))}
    assert edges["local"] == edges["cluster"]
    assert edges["local"]["lstmad_training"] == {"prepare_training_range": [], "train": ["prepare_training_range"],
                                                 "promote": ["train"]}
    assert edges["local"]["lstmad_nightly"]["drift"] == ["score", "target_date"]
    assert edges["local"]["lstmad_nightly"]["prepare"] == ["raw_data_landed", "target_date"]
    # the night's data check is a sensor in the worker under either runner (it lists files, no Spark)
    assert local["lstmad_nightly"]["raw_data_landed"]["operator"] == "DecoratedSensorOperator"
    assert cluster["lstmad_nightly"]["raw_data_landed"]["operator"] == "DecoratedSensorOperator"
    # the runner changes how a stage runs: through spark-submit on the cluster, in the worker locally
    stages = {"prepare", "score", "drift", "prepare_training_range", "train", "promote", "compact_and_vacuum"}
    for dag, tasks in cluster.items():
        for task, facts in tasks.items():
            assert (facts["operator"] == "SparkSubmitOperator") == (task in stages), (dag, task)
            assert (local[dag][task]["operator"] == "SparkSubmitOperator") is False
    # the trained version reaches the promote job by the DAG run's name
    train_args, promote_args = cluster["lstmad_training"]["train"]["args"], cluster["lstmad_training"]["promote"]["args"]
    assert "--no-promote" in train_args
    assert train_args[train_args.index("--result-name") + 1] == promote_args[promote_args.index("--trained") + 1]
