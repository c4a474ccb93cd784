"""Training and promotion: prepare the training range → train and evaluate → register → promote or not."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from _lstmad_common import CONF, DEFAULT_ARGS, SETTINGS, spark_submit

DOC = """
### lstmad training
Prepare the configured training and evaluation ranges (fitting the normalisation), train the detector,
evaluate it on the labelled range, log and register it in MLflow, then promote it to `champion` only if it
is not worse than the current champion on the same evaluation data (else it stays `challenger`).
Triggered by `lstmad_nightly` when drift is detected; can also be run by hand.
"""


@dag(dag_id="lstmad_training", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     max_active_runs=1, default_args=DEFAULT_ARGS, tags=["lstmad", "training"], doc_md=DOC)
def lstmad_training():
    if SETTINGS["runner"] == "spark_submit":
        spark_submit("prepare_training_range", "prepare", ["--training"]) >> spark_submit("train", "train", [])
        return

    @task
    def prepare_training_range() -> list:
        from lstmad import pipeline
        from lstmad.config import load_config

        return pipeline.prepare_training_data(load_config(CONF))

    @task
    def train() -> dict:
        from lstmad import pipeline
        from lstmad.config import load_config

        result = pipeline.train(load_config(CONF), promote=False)
        return {k: v for k, v in result.items() if k != "history"}

    @task
    def promote(trained: dict) -> dict:
        from lstmad import pipeline
        from lstmad.config import load_config

        return pipeline.promote_model(load_config(CONF), trained["run_id"], trained["model_version"])

    trained = train()
    prepare_training_range() >> trained
    promote(trained)


lstmad_training()
