"""Settings shared by the lstmad DAG files: which pipeline config, how jobs run, retries. Light imports only."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = os.environ.get("LSTMAD_CONF", str(REPO / "conf" / "demo.yaml"))
JOBS = REPO / "jobs"


RUNNERS = ("in_process", "spark_submit")


def airflow_settings(environ=os.environ) -> dict:
    """The config's ``airflow`` section (read with yaml only: the scheduler parses DAG files constantly) over
    lstmad.config.AirflowConfig's defaults, each key overridable by a deployment through
    LSTMAD_AIRFLOW_<KEY> (LSTMAD_AIRFLOW_RUNNER=spark_submit), so one pipeline config serves a laptop and a
    cluster."""
    import dataclasses

    from lstmad.config import AirflowConfig

    raw = yaml.safe_load(Path(CONF).read_text()) or {}
    settings = dataclasses.asdict(AirflowConfig())
    settings.update(raw.get("airflow") or {})
    for key in settings:
        if f"LSTMAD_AIRFLOW_{key.upper()}" in environ:
            settings[key] = environ[f"LSTMAD_AIRFLOW_{key.upper()}"]
    if settings["runner"] not in RUNNERS:
        raise ValueError(f"{CONF}: airflow.runner (or LSTMAD_AIRFLOW_RUNNER) is {settings['runner']!r}; "
                         f"expected one of {', '.join(RUNNERS)}")
    return settings


def log_failure(context) -> None:
    """on_failure_callback: one line naming the DAG, task, logical date and error, for the alerting that
    scrapes task logs (replace with a Slack or e-mail notifier in a deployment)."""
    import logging

    ti = context.get("task_instance")
    logging.getLogger("lstmad").error("lstmad task failed: %s.%s (logical date %s, try %s): %s",
                                      getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"),
                                      context.get("logical_date"), getattr(ti, "try_number", "?"),
                                      context.get("exception"))


SETTINGS = airflow_settings()
DEFAULT_ARGS = {
    "owner": "lstmad",
    "retries": int(SETTINGS["retries"]),
    "retry_delay": dt.timedelta(seconds=int(SETTINGS["retry_delay_s"])),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(minutes=int(SETTINGS["execution_timeout_min"])),
    "on_failure_callback": log_failure,
}


def spark_conf_pairs(text: str) -> dict[str, str]:
    """airflow.spark_conf "key=value,key=value" → {key: value}; a pair without "=" is refused by name."""
    pairs = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{CONF}: airflow.spark_conf: {pair!r} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def spark_submit(task_id: str, job: str, args: list[str]):
    """A SparkSubmitOperator running jobs/<job>.py with the pipeline config (the cluster runner)."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    conf = spark_conf_pairs(SETTINGS["spark_conf"])
    return SparkSubmitOperator(task_id=task_id, application=str(JOBS / f"{job}.py"),
                               application_args=["--conf", CONF, *args], conn_id=SETTINGS["spark_conn_id"],
                               name=f"lstmad-{job}", conf=conf or None, packages=SETTINGS["spark_packages"] or None,
                               pool=SETTINGS["training_pool"] if job == "train" else None,
                               py_files=",".join([str(JOBS / "_common.py"),
                                                  *filter(None, SETTINGS["py_files"].split(","))]))


def stage_task(task_id: str, job: str, args: list[str], in_process, after=()):
    """One task of a DAG, the same for both runners (the runner changes how a task runs, not which tasks
    exist): ``in_process()`` makes the @task call the worker runs, or jobs/<job>.py runs through spark-submit
    with ``args`` (templated); either way after the tasks in ``after``."""
    made = spark_submit(task_id, job, args) if SETTINGS["runner"] == "spark_submit" else in_process()
    for before in after:
        before >> made
    return made


def json_safe(value):
    """A task result XCom can store: NaN and infinities (an AUROC on one class) become None."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
