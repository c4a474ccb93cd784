"""Runs inside a subprocess with a temporary AIRFLOW_HOME: the retraining simulation through the real DAGs.

dag.test() of lstmad_training (the first champion), then of lstmad_nightly for each night in turn (a
backfill); whenever a night's trigger_training task ran, dag.test() of lstmad_training with that run's conf
(the end date of its recent-data window), as the scheduler would run the triggered run.

Writes one JSON object to <result file>: per night the nightly tasks' states, whether training was
triggered, the training run's promote result, and the champion version after the night. Unless
--nightly-only: also the DAG integrity facts (dag_harness), the maintenance DAG run after the last night with
the score rows before and after it, and the training runs the nightly runs triggered, with their conf.
Usage: python tests/simulation_harness.py <dags folder> <first night> <last night> <result file> [--nightly-only]
With --nightly-only there is no first training (the registry has a champion already) and a triggered
training run is recorded but not run.
"""

import datetime as dt
import json
import sys
import time
from pathlib import Path


def _after_the_nights(bag, dags: Path, config) -> dict:
    """The DAG integrity facts, the maintenance DAG (its compaction must keep every score row) and the training
    runs the nightly DAG's TriggerDagRunOperator created."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from dag_harness import dag_facts, parse_facts

    from lstmad import names
    from lstmad.io import lakehouse
    from lstmad.layout import Paths

    lake = Paths.of(config).lake
    facts = {**dag_facts(bag), "parse": parse_facts(dags),
             "scores_before_maintenance": lakehouse.read_table(lake, names.ANOMALY_SCORES).num_rows}
    facts["maintenance_state"] = str(bag.dags["lstmad_maintenance"].test().state)
    facts["scores_after_maintenance"] = lakehouse.read_table(lake, names.ANOMALY_SCORES).num_rows
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "lstmad_training").all()
        facts["training_runs"] = [{"run_type": str(r.run_type), "state": str(r.state), "conf": r.conf}
                                  for r in runs]
    return facts


def main() -> None:
    dags, first, last = Path(sys.argv[1]), dt.date.fromisoformat(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
    sys.path.insert(0, str(dags))
    from _lstmad_common import CONF
    from airflow.dag_processing.dagbag import DagBag

    from lstmad.config import load_config
    from lstmad.io import tracking

    config = load_config(CONF)
    client = tracking.mlflow_client(config.tracking_uri)
    bag = DagBag(dag_folder=str(dags))
    nightly, training = bag.dags["lstmad_nightly"], bag.dags["lstmad_training"]
    nightly_only = "--nightly-only" in sys.argv[5:]
    started = time.time()
    result = {"first_training": None if nightly_only else str(training.test().state), "nights": []}
    night = first
    while night <= last:
        logical = dt.datetime.combine(night + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
        run = nightly.test(logical_date=logical)
        tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        record = {"night": night.isoformat(), "state": str(run.state), "tasks": tasks,
                  "triggered": tasks.get("trigger_training") == "success"}
        if record["triggered"] and not nightly_only:
            retrained = training.test(logical_date=logical, run_conf={"end": night.isoformat()})
            record["training_state"] = str(retrained.state)
            # the newest registered version is the one this run trained; its run carries the gate's decision
            newest = max(client.search_model_versions(f"name='{config.registered_model_name}'"),
                         key=lambda v: int(v.version))
            run_data = client.get_run(newest.run_id).data
            tags = run_data.tags
            record["trained_version"] = str(newest.version)
            record["train_range"] = run_data.params.get("train_range")
            record["promotion"] = {"decision": tags.get("promotion"), "reason": tags.get("promotion_reason")}
        record["champion"] = tracking.champion(config.tracking_uri, config.registered_model_name)["version"]
        result["nights"].append(record)
        night += dt.timedelta(days=1)
    if not nightly_only:
        result.update(_after_the_nights(bag, dags, config))
    result["elapsed_s"] = time.time() - started
    Path(sys.argv[4]).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
