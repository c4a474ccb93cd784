"""Weekly upkeep of the Delta tables: compaction and vacuum (query results unchanged)."""

from __future__ import annotations

import pendulum
from _lstmad_common import CONF, DEFAULT_ARGS, json_safe, stage_task
from airflow.sdk import dag, task

DOC = """
### lstmad maintenance
Compacts the small files the nightly runs leave in each Delta table (a data-neutral commit: every query
returns what it returned before) and vacuums files that no version younger than `delta.retention_hours`
(default a week) refers to, so time travel reaches back that far and no further.
"""


@task
def compact_and_vacuum() -> dict:
    from lstmad import stages
    from lstmad.config import load_config

    return json_safe(stages.maintain(load_config(CONF)))


@dag(dag_id="lstmad_maintenance", schedule="@weekly", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, default_args=DEFAULT_ARGS, tags=["lstmad", "maintenance"], doc_md=DOC)
def lstmad_maintenance():
    stage_task("compact_and_vacuum", "maintain", [], compact_and_vacuum)


lstmad_maintenance()
