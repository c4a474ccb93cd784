"""DAG integrity facts, gathered inside the Airflow subprocess of tests/simulation_harness.py (which has a temporary
AIRFLOW_HOME): what the DagBag says about each DAG and task, and each DAG file's parse time and heavy imports."""

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "pyspark", "mlflow", "deltalake", "sklearn", "duckdb", "lstmad.stages")


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


def dag_facts(bag) -> dict:
    """Import errors, and per DAG its tags, docs, schedule, params and per task its retries, downstream tasks,
    timeout, failure callback, pool and back-off."""
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
    return result
