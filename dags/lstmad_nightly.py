"""Nightly scoring: prepare the day → score it with the champion → drift → trigger training when needed."""

from __future__ import annotations

import datetime as dt

import pendulum
from _lstmad_common import CONF, DEFAULT_ARGS, json_safe, stage_task
from airflow.sdk import Param, dag, task

DOC = """
### lstmad nightly scoring
For the day before the logical date (or `params.date`): prepare that day's raw partitions into tensor
blocks, score them with the `champion` model, write scores and intervals to Delta, compute drift, and trigger
`lstmad_training` when the drift check says so. Every task replaces only its own date: re-running a night
is safe. Runner: `airflow.runner` in the pipeline config (`in_process` or `spark_submit`); both run the
same tasks.
"""

NIGHT = "{{ ti.xcom_pull(task_ids='target_date') }}"


@task
def run_stage(day: str, stage: str) -> dict:
    """The night's stage in the worker process (the in_process runner): prepare (the day alone), score or
    drift."""
    from lstmad import stages
    from lstmad.config import load_config

    config, night = load_config(CONF), dt.date.fromisoformat(day)
    if stage == "prepare":
        return json_safe(stages.prepare(config, night, night))
    return json_safe(getattr(stages, stage)(config, night))


@dag(dag_id="lstmad_nightly", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, default_args=DEFAULT_ARGS, tags=["lstmad", "scoring"], doc_md=DOC,
     params={"date": Param(None, type=["null", "string"], description="date to score (default: the day before "
                                                                       "the logical date)")})
def lstmad_nightly():
    @task
    def target_date(**context) -> str:
        explicit = context["params"].get("date")
        if explicit:
            return dt.date.fromisoformat(explicit).isoformat()
        return (context["logical_date"] - dt.timedelta(days=1)).date().isoformat()

    date = target_date()
    steps = []
    for stage in ("prepare", "score", "drift"):  # each after the night is known and the step before it
        steps.append(stage_task(stage, stage, ["--date", NIGHT],
                                lambda stage=stage: run_stage.override(task_id=stage)(date, stage),
                                after=[date, *steps[-1:]]))
    drifted = steps[-1]

    @task.short_circuit
    def retrain_needed(day: str) -> bool:
        from lstmad import stages
        from lstmad.config import load_config

        return stages.retrain_needed(load_config(CONF), dt.date.fromisoformat(day))

    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    needed = retrain_needed(date)
    # the training DAG retrains on the window of recent data ending at this night (train.window_days)
    drifted >> needed >> TriggerDagRunOperator(task_id="trigger_training", trigger_dag_id="lstmad_training",
                                               conf={"end": NIGHT}, wait_for_completion=False)


lstmad_nightly()
