"""Runs inside a subprocess with a temporary AIRFLOW_HOME: DAG integrity facts and dag.test() of both DAGs.

Writes one JSON object to <result file>. Usage: python tests/dag_harness.py <dags folder> <scored date> <result file>
"""

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "pyspark", "mlflow", "deltalake", "sklearn", "duckdb", "lstmad.pipeline")


def parse_facts(dags: Path) -> dict:
    """Per DAG file: parse seconds and heavy modules imported, each in a fresh interpreter."""
    facts = {}
    for file in sorted(dags.glob("lstmad_*.py")):
        # Airflow itself is already imported in the DAG processor: only the file's own cost is timed.
        code = (f"import sys, time, json, runpy; import airflow.sdk; sys.path.insert(0, {str(dags)!r}); "
                f"t = time.time(); runpy.run_path({str(file)!r}); "
                f"print(json.dumps({{'parse_s': time.time() - t, "
                f"'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        facts[file.name] = json.loads(out.strip().splitlines()[-1])
    return facts


def main() -> None:
    dags, scored = Path(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
    sys.path.insert(0, str(dags))
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=str(dags))
    result = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        result["dags"][dag_id] = {
            "tags": sorted(dag.tags), "doc_md": bool(dag.doc_md), "schedule": type(dag.timetable).__name__,
            "tasks": {t.task_id: {"retries": t.retries, "downstream": sorted(t.downstream_task_ids),
                                  "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                                  "on_failure": bool(t.on_failure_callback), "pool": t.pool,
                                  "backoff": bool(t.retry_exponential_backoff)}
                      for t in dag.tasks},
            "params": sorted(dag.params.keys()),
        }
    result["parse"] = parse_facts(dags)
    started = time.time()
    training = bag.dags["lstmad_training"].test()
    result["training_state"] = str(training.state)
    result["training_tasks"] = {ti.task_id: str(ti.state) for ti in training.get_task_instances()}
    logical = dt.datetime.combine(scored + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    nightly = bag.dags["lstmad_nightly"].test(logical_date=logical)
    result["nightly_state"] = str(nightly.state)
    result["nightly_tasks"] = {ti.task_id: str(ti.state) for ti in nightly.get_task_instances()}
    maintenance = bag.dags["lstmad_maintenance"].test()
    result["maintenance_state"] = str(maintenance.state)
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "lstmad_training").all()
        result["training_runs"] = [{"run_type": str(r.run_type), "state": str(r.state), "conf": r.conf}
                                   for r in runs]
    result["elapsed_s"] = time.time() - started
    Path(sys.argv[3]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
