"""Training and promotion: prepare the training range → train and evaluate → register → promote or not."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from _lstmad_common import CONF, DEFAULT_ARGS, SETTINGS, json_safe, spark_submit

DOC = """
### lstmad training
Prepare the configured training and evaluation ranges (fitting the normalisation), train the detector,
evaluate it on the labelled range, log and register it in MLflow, then promote it to `champion` only if it
is not worse than the current champion on the same evaluation data (else it stays `challenger`).
Triggered by `lstmad_nightly` when drift is detected, with `params.end` the drifted night: with
`train.window_days` set, the challenger trains on the window of recent data ending there (the last
`train.eval_days` evaluate it), leaving out windows inside intervals of severity >= `train.exclude_severity`.
Can also be run by hand.
"""


def _config(context):
    """The pipeline config, its training ranges slid to end at params.end when given."""
    import datetime as dt

    from lstmad import pipeline
    from lstmad.config import load_config

    config = load_config(CONF)
    end = context["params"].get("end")
    if end and config.train.window_days > 0:
        config = pipeline.training_window(config, dt.date.fromisoformat(end))
    return config


@dag(dag_id="lstmad_training", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, tags=["lstmad", "training"], doc_md=DOC,
     params={"end": Param(None, type=["null", "string"], description="last date of the recent-data window "
                                                                      "(train.window_days); none: the fixed ranges")})
def lstmad_training():
    if SETTINGS["runner"] == "spark_submit":
        window = ["--window-end", "{{ params.end or '' }}"]  # empty: the fixed ranges
        spark_submit("prepare_training_range", "prepare", ["--training", *window]) \
            >> spark_submit("train", "train", window)
        return

    @task
    def prepare_training_range(**context) -> list:
        from lstmad import pipeline

        return pipeline.prepare_training_data(_config(context))

    @task(pool=SETTINGS["training_pool"])
    def train(**context) -> dict:
        from lstmad import pipeline

        result = pipeline.train(_config(context), promote=False)
        return json_safe({k: v for k, v in result.items() if k != "history"})

    @task
    def promote(trained: dict, **context) -> dict:
        from lstmad import pipeline

        return json_safe(pipeline.promote_model(_config(context), trained["run_id"], trained["model_version"]))

    trained = train()
    prepare_training_range() >> trained
    promote(trained)


lstmad_training()
