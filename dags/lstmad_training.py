"""Training and promotion: prepare the training range → train and evaluate → register → promote or not."""

from __future__ import annotations

import pendulum
from _lstmad_common import CONF, DEFAULT_ARGS, SETTINGS, json_safe, stage_task
from airflow.sdk import Param, dag, task

DOC = """
### lstmad training
Prepare the configured training and evaluation ranges (fitting the normalisation), train the detector,
evaluate it on the labelled range, log and register it in MLflow, then promote it to `champion` only if it
is not worse than the current champion on the same evaluation data (else it stays `challenger`).
Triggered by `lstmad_nightly` when drift is detected, with `params.end` the drifted night: with
`train.window_days` set, the challenger trains on the window of recent data ending there (the last
`train.eval_days` evaluate it), leaving out windows inside intervals of severity >= `train.exclude_severity`.
Can also be run by hand. Both runners run the same three tasks; under spark-submit the trained version
reaches the promote task through `<pipeline home>/results/<run id>.json`.
"""

WINDOW = ["--window-end", "{{ params.end or '' }}"]  # empty: the fixed ranges
RESULT = "{{ run_id }}"


def _config(context):
    """The pipeline config, its training ranges slid to end at params.end when given."""
    import datetime as dt

    from lstmad import stages
    from lstmad.config import load_config

    config = load_config(CONF)
    end = context["params"].get("end")
    if end and config.train.window_days > 0:
        config = stages.training_window(config, dt.date.fromisoformat(end))
    return config


@task
def prepare_training_range(**context) -> list:
    from lstmad import stages

    return json_safe(stages.prepare_training_data(_config(context)))


@task(pool=SETTINGS["training_pool"])
def train(**context) -> dict:
    from lstmad import stages

    result = stages.train(_config(context), promote=False)
    return json_safe({k: v for k, v in result.items() if k != "history"})


@task
def promote(trained: dict, **context) -> dict:
    from lstmad import stages

    return json_safe(stages.promote_model(_config(context), trained["run_id"], trained["model_version"]))


@dag(dag_id="lstmad_training", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, tags=["lstmad", "training"], doc_md=DOC,
     params={"end": Param(None, type=["null", "string"], description="last date of the recent-data window "
                                                                      "(train.window_days); none: the fixed ranges")})
def lstmad_training():
    prepared = stage_task("prepare_training_range", "prepare", ["--training", *WINDOW], prepare_training_range)
    trained = stage_task("train", "train", ["--no-promote", "--result-name", RESULT, *WINDOW], train,
                         after=[prepared])
    stage_task("promote", "promote", ["--trained", RESULT, *WINDOW], lambda: promote(trained), after=[trained])


lstmad_training()
