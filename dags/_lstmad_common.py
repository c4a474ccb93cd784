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
ON_MISSING_DATA = ("wait", "skip")


def _pipeline_yaml() -> dict:
    return yaml.safe_load(Path(CONF).read_text()) or {}


def _typed(key: str, value, hint):
    """A setting written as text (an environment variable, a quoted YAML value) as its field's type; a value
    that cannot be read so is refused by name."""
    import typing

    if not isinstance(value, str) or hint is str:
        return value
    text = value.strip()
    try:
        if hint is bool:
            if text.lower() in ("true", "yes", "1"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError(text)
        if hint in (int, float):
            return hint(text)
        if dt.date in typing.get_args(hint):  # Optional[date]: empty / none → None
            return None if text.lower() in ("", "none", "null") else dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{CONF}: airflow.{key} (or LSTMAD_AIRFLOW_{key.upper()}) is {value!r}, not a "
                         f"{getattr(hint, '__name__', 'date YYYY-MM-DD')}") from None
    return value


def airflow_settings(environ=os.environ) -> dict:
    """The config's ``airflow`` section (read with yaml only: the scheduler parses DAG files constantly) over
    lstmad.config.AirflowConfig's defaults, each key overridable by a deployment through
    LSTMAD_AIRFLOW_<KEY> (LSTMAD_AIRFLOW_RUNNER=spark_submit, LSTMAD_AIRFLOW_CATCHUP=true), so one pipeline
    config serves a laptop and a cluster. Values come typed as the dataclass fields are."""
    import dataclasses
    import typing

    from lstmad.config import AirflowConfig

    settings = dataclasses.asdict(AirflowConfig())
    settings.update(_pipeline_yaml().get("airflow") or {})
    for key in settings:
        if f"LSTMAD_AIRFLOW_{key.upper()}" in environ:
            settings[key] = environ[f"LSTMAD_AIRFLOW_{key.upper()}"]
    hints = typing.get_type_hints(AirflowConfig)
    settings = {key: _typed(key, value, hints.get(key, str)) for key, value in settings.items()}
    for key, allowed in (("runner", RUNNERS), ("on_missing_data", ON_MISSING_DATA)):
        if settings[key] not in allowed:
            raise ValueError(f"{CONF}: airflow.{key} (or LSTMAD_AIRFLOW_{key.upper()}) is {settings[key]!r}; "
                             f"expected one of {', '.join(allowed)}")
    return settings


def nightly_start_date(settings: dict, train_end=None, today=None) -> dt.date:
    """lstmad_nightly's first logical date (its run scores the day before): ``airflow.start_date``, else two
    days after ``train.end`` (the first night scored is then the first one after the training range), else
    ``today`` (UTC). With catch-up off only the latest night runs on unpausing, whatever this date."""
    if settings["start_date"] is not None:
        return settings["start_date"]
    if train_end:  # a date as YAML reads it, or its text
        end = train_end if isinstance(train_end, dt.date) else dt.date.fromisoformat(str(train_end))
        return end + dt.timedelta(days=2)
    return today or dt.datetime.now(dt.timezone.utc).date()


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
NIGHTLY_START = nightly_start_date(SETTINGS, (_pipeline_yaml().get("train") or {}).get("end"))
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


def missing_raw_data(day: str) -> str | None:
    """Whether the night ``day`` (YYYY-MM-DD) of raw data has landed (lstmad.io.landing.missing_night: folders,
    file sizes and statistics, no Spark): None when it has, else one line naming the path checked and what is
    missing there. A landing path that does not exist is a configuration error (the task fails)."""
    from lstmad.config import PipelineConfig, PrepareConfig, SourceConfig
    from lstmad.io.landing import missing_night
    from lstmad.layout import Paths

    # The source as lstmad.config reads it, from the YAML alone: load_config would import every detector
    # (torch) on each poke. The prepare task validates the whole config.
    raw = _pipeline_yaml()
    section = raw.get("source") or {}
    keys = ("path", "format", "partition_column", "timestamp_column", "timezone")
    source = SourceConfig(**{k: section[k] for k in keys if k in section})
    landing = Paths.of(PipelineConfig(pipeline=raw["pipeline"], home=raw.get("home") or "", source=source)).raw
    step_s = (raw.get("prepare") or {}).get("step_s", PrepareConfig.step_s)
    return missing_night(source, landing, day, int(step_s))
