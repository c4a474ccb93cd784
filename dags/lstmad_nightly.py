"""Nightly scoring: prepare the day → score it with the champion → drift → trigger training when needed."""

from __future__ import annotations

import datetime as dt

import pendulum
from _lstmad_common import CONF, DEFAULT_ARGS, NIGHTLY_START, SETTINGS, json_safe, missing_raw_data, stage_task
from airflow.sdk import Param, dag, task

DOC = """
### lstmad nightly scoring
For the day before the logical date (or `params.date`): check that the night's raw partition has landed,
prepare it into tensor blocks, score them with the `champion` model, write scores and intervals to Delta,
compute drift, and trigger `lstmad_training` when the drift check says so. A night whose data has not landed
waits (`airflow.on_missing_data: wait`, up to `airflow.data_wait_timeout_minutes`) or not (`skip`), then is
skipped with its other tasks: no task fails. Every task replaces only its own date: re-running a night is
safe. Start date and catch-up: `airflow.start_date`, `airflow.catchup`. Runner: `airflow.runner` in the
pipeline config (`in_process` or `spark_submit`); both run the same tasks.
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


@task.sensor(task_id="raw_data_landed", soft_fail=True, poke_interval=SETTINGS["data_poke_interval_s"],
             timeout=SETTINGS["data_wait_timeout_minutes"] * 60, mode="reschedule")
def raw_data_landed(day: str) -> bool:
    """Poked until the night's raw partition has landed (_lstmad_common.missing_raw_data); each poke that
    finds nothing logs the path and what is missing. ``skip`` skips the night at once; ``wait`` gives up
    after the timeout, and soft_fail makes that a skip too, so the night's other tasks are skipped, not
    failed."""
    import logging

    from airflow.sdk.exceptions import AirflowSkipException

    missing = missing_raw_data(day)
    if missing is None:
        return True
    if SETTINGS["on_missing_data"] == "skip":
        raise AirflowSkipException(f"{missing}; night skipped (airflow.on_missing_data: skip)")
    logging.getLogger("lstmad").warning("%s; waiting (airflow.on_missing_data: wait, the night is skipped after "
                                        "%s minutes)", missing, SETTINGS["data_wait_timeout_minutes"])
    return False


START = pendulum.datetime(NIGHTLY_START.year, NIGHTLY_START.month, NIGHTLY_START.day, tz="UTC")


@dag(dag_id="lstmad_nightly", schedule="@daily", start_date=START, catchup=SETTINGS["catchup"], max_active_runs=1,
     default_args=DEFAULT_ARGS, tags=["lstmad", "scoring"], doc_md=DOC,
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
    steps = [raw_data_landed(date)]
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
