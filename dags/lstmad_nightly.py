"""Nightly scoring: prepare the day → score it with the champion → drift → trigger training when needed."""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, task

from _lstmad_common import CONF, DEFAULT_ARGS, SETTINGS, json_safe, spark_submit

DOC = """
### lstmad nightly scoring
For the day before the logical date (or `params.date`): prepare that day's raw partitions into tensor
blocks, score them with the `champion` model, write scores and intervals to Delta, compute drift, and trigger
`lstmad_training` when the drift check says so. Every task replaces only its own date: re-running a night
is safe. Runner: `airflow.runner` in the pipeline config (`in_process` or `spark_submit`).
"""


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

    if SETTINGS["runner"] == "spark_submit":
        date_arg = ["--date", "{{ ti.xcom_pull(task_ids='target_date') }}"]
        steps = [spark_submit("prepare", "prepare", date_arg), spark_submit("score", "score", date_arg),
                 spark_submit("drift", "drift", date_arg)]
        date >> steps[0] >> steps[1] >> steps[2]
        last = steps[2]
    else:
        @task
        def prepare(day: str) -> dict:
            from lstmad import pipeline
            from lstmad.config import load_config

            d = dt.date.fromisoformat(day)
            return json_safe(pipeline.prepare(load_config(CONF), d, d))

        @task
        def score(day: str) -> dict:
            from lstmad import pipeline
            from lstmad.config import load_config

            return json_safe(pipeline.score(load_config(CONF), dt.date.fromisoformat(day)))

        @task
        def drift(day: str) -> dict:
            from lstmad import pipeline
            from lstmad.config import load_config

            return json_safe(pipeline.drift(load_config(CONF), dt.date.fromisoformat(day)))

        prepared, scored, drifted = prepare(date), score(date), drift(date)
        prepared >> scored >> drifted
        last = drifted

    @task.short_circuit
    def retrain_needed(day: str) -> bool:
        from lstmad import pipeline
        from lstmad.config import load_config

        return pipeline.retrain_needed(load_config(CONF), dt.date.fromisoformat(day))

    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    needed = retrain_needed(date)
    # the training DAG retrains on the window of recent data ending at this night (train.window_days)
    last >> needed >> TriggerDagRunOperator(task_id="trigger_training", trigger_dag_id="lstmad_training",
                                            conf={"end": "{{ ti.xcom_pull(task_ids='target_date') }}"},
                                            wait_for_completion=False)


lstmad_nightly()
