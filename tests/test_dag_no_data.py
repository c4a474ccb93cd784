"""lstmad_nightly on a night whose raw data has not landed: its data check (the raw_data_landed sensor) waits or
skips and no task fails, through dag.test() in subprocesses with their own AIRFLOW_HOME; a night with data goes
past the check; what counts as landed; the DAG's start date and catch-up from the config."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_config_dict, write_config

DOWNSTREAM = ("prepare", "score", "drift", "retrain_needed", "trigger_training")
STAGES = "|".join(DOWNSTREAM)


def land(partition: Path) -> None:
    """What a landing job leaves: one Parquet file in the night's partition folder (the check reads no rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partition.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"value": [1.0]}), partition / "part-0.parquet")


def harness(argv: list[str]) -> None:
    """Runs in the subprocess (AIRFLOW_HOME and LSTMAD_CONF set): ``<dags> <result file> <case>...``, each case
    ``<name>:<night>[:<seconds>]``, one dag.test() of lstmad_nightly for that night; with seconds, a timer lands
    the night's partition that long after the run starts. Where the sensor may let the night through (its
    partition exists or will), the tasks after it are marked success instead of run: this tests the check, not
    the stages; elsewhere they would run, and fail, if the check let them. Writes the DAG's start date,
    catch-up and first scheduled run, and per case the run's state, task states and sensor reschedules."""
    import threading

    from sqlalchemy import func, select

    dags, out = Path(argv[0]), Path(argv[1])
    sys.path.insert(0, str(dags))
    from _lstmad_common import CONF
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session

    from lstmad.config import load_config
    from lstmad.layout import Paths

    config = load_config(CONF)
    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors, bag.import_errors
    nightly = bag.dags["lstmad_nightly"]
    scheduled = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(nightly))
    first = scheduled.next_dagrun_info(last_automated_run_info=None)  # what unpausing it would create first
    result = {"start_date": nightly.start_date.isoformat(), "catchup": nightly.catchup,
              "first_run": first.run_after.isoformat(), "now": dt.datetime.now(dt.timezone.utc).isoformat(),
              "cases": {}}
    for case in argv[2:]:
        name, night, *later = case.split(":")
        partition = Paths.of(config).raw / f"{config.source.partition_column}={night}"
        timer = threading.Timer(float(later[0]), land, [partition]) if later else None
        stages = STAGES if partition.exists() or timer else None
        logical = dt.datetime.combine(dt.date.fromisoformat(night) + dt.timedelta(days=1), dt.time(),
                                      tzinfo=dt.timezone.utc)
        if timer:
            timer.start()
        run = nightly.test(logical_date=logical, mark_success_pattern=stages)
        if timer:
            timer.join()
        instances = run.get_task_instances()
        sensor = next(ti for ti in instances if ti.task_id == "raw_data_landed")
        with create_session() as session:
            reschedules = session.scalar(select(func.count()).select_from(TaskReschedule)
                                         .where(TaskReschedule.ti_id == sensor.id))
        result["cases"][name] = {"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in instances},
                                 "reschedules": reschedules}
    out.write_text(json.dumps(result))


def nightly_runs(root: Path, conf: Path, name: str, cases: list[str], **env_extra) -> tuple[dict, str]:
    """The harness in a fresh interpreter (the DAG files read their settings at import), with the AIRFLOW_HOME of
    ``root`` (created on first use): its result and its output (the task logs)."""
    bin_dir = os.path.dirname(sys.executable)
    home = root / "airflow_home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LSTMAD_AIRFLOW_")},
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "LSTMAD_CONF": str(conf), "PYTHONPATH": str(REPO),
           **env_extra}
    if not home.exists():
        subprocess.run([os.path.join(bin_dir, "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    out = root / f"{name}.json"
    done = subprocess.run([sys.executable, "-c", "import sys; from tests.test_dag_no_data import harness; "
                           "harness(sys.argv[1:])", str(REPO / "dags"), str(out), *cases],
                          env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    (root / f"{name}.log").write_text(output)
    assert done.returncode == 0, output[-4000:]
    return json.loads(out.read_text()), output


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Two harness runs on the tiny pipeline (train.end 2026-01-04), whose landing folder holds only 2026-01-05:
    ``wait`` (the config: start_date 2026-01-02, catch-up on, a 6-second wait poking every second) for a night
    without data, the landed night, and a night that lands 3 seconds into the wait; ``skip`` (environment
    overrides: on_missing_data skip, start_date and catch-up back to their defaults) for a night without data."""
    root = tmp_path_factory.mktemp("no_data")
    raw = tiny_config_dict(root / "home", airflow={"start_date": dt.date(2026, 1, 2), "catchup": True,
                                                  "data_wait_timeout_minutes": 0.1, "data_poke_interval_s": 1})
    conf = write_config(root / "tiny.yaml", raw)
    land(root / "home" / "tiny" / "raw" / "date=2026-01-05")
    wait = nightly_runs(root, conf, "wait", ["missing:2026-01-20", "landed:2026-01-05", "late:2026-01-21:3"])
    skip = nightly_runs(root, conf, "skip", ["missing:2026-01-22"], LSTMAD_AIRFLOW_ON_MISSING_DATA="skip",
                        LSTMAD_AIRFLOW_START_DATE="", LSTMAD_AIRFLOW_CATCHUP="false")
    return {"wait": wait, "skip": skip, "raw": root / "home" / "tiny" / "raw"}


def assert_skipped_without_failure(case: dict) -> None:
    assert case["state"] == "success"  # a run whose tasks all succeeded or were skipped
    assert "failed" not in case["tasks"].values() and "up_for_retry" not in case["tasks"].values()
    assert case["tasks"]["target_date"] == "success"
    assert case["tasks"]["raw_data_landed"] == "skipped"
    assert {case["tasks"][task] for task in DOWNSTREAM} == {"skipped"}


@pytest.mark.slow
def test_a_night_without_data_waits_then_is_skipped_without_a_failed_task(nights):
    (result, log), partition = nights["wait"], nights["raw"] / "date=2026-01-20"
    missing = result["cases"]["missing"]
    assert_skipped_without_failure(missing)
    assert missing["reschedules"] >= 2  # it waited (reschedule mode) before giving up after 6 seconds
    assert (f"raw data for 2026-01-20 has not landed: {partition}: no such folder; waiting "
            "(airflow.on_missing_data: wait, the night is skipped after 0.1 minutes)") in log
    assert "Sensor has timed out" in log


@pytest.mark.slow
def test_with_on_missing_data_skip_a_night_without_data_is_skipped_at_once(nights):
    (result, log), partition = nights["skip"], nights["raw"] / "date=2026-01-22"
    missing = result["cases"]["missing"]
    assert_skipped_without_failure(missing)
    assert missing["reschedules"] == 0
    assert (f"raw data for 2026-01-22 has not landed: {partition}: no such folder; night skipped "
            "(airflow.on_missing_data: skip)") in log


@pytest.mark.slow
def test_a_night_with_data_goes_past_the_check_and_a_late_one_once_it_lands(nights):
    cases = nights["wait"][0]["cases"]
    assert cases["landed"]["tasks"]["raw_data_landed"] == "success" and cases["landed"]["reschedules"] == 0
    assert cases["late"]["tasks"]["raw_data_landed"] == "success" and cases["late"]["reschedules"] >= 1
    for case in (cases["landed"], cases["late"]):
        assert case["state"] == "success" and {case["tasks"][task] for task in DOWNSTREAM} == {"success"}


@pytest.mark.slow
def test_start_date_and_catch_up_follow_the_config(nights):
    configured, defaults = nights["wait"][0], nights["skip"][0]
    # airflow.start_date and catchup: true (opted in): unpausing starts from the start date, night by night
    assert configured["start_date"] == configured["first_run"] == "2026-01-02T00:00:00+00:00"
    assert configured["catchup"] is True
    # the defaults: two days after train.end (the first night after the training range), no catch-up: unpausing
    # creates one run, for the latest midnight (it scores the day before), not one per night since the start date
    assert defaults["start_date"] == "2026-01-06T00:00:00+00:00" and defaults["catchup"] is False
    today = dt.datetime.fromisoformat(defaults["now"]).date()
    assert defaults["first_run"] == f"{today.isoformat()}T00:00:00+00:00"


# What counts as landed, and the settings: the DAG files' helpers, in this process.

@pytest.fixture
def common(tmp_path, monkeypatch):
    """A fresh copy of dags/_lstmad_common.py for the tiny pipeline in tmp_path (its landing folder created),
    without any LSTMAD_AIRFLOW_* of the developer's environment; ``common.write(**sections)`` rewrites the config."""
    for key in [k for k in os.environ if k.startswith("LSTMAD_AIRFLOW_")]:
        monkeypatch.delenv(key)
    conf = tmp_path / "tiny.yaml"

    def write(**sections):
        write_config(conf, tiny_config_dict(tmp_path / "home", **sections))

    write()
    monkeypatch.setenv("LSTMAD_CONF", str(conf))
    spec = importlib.util.spec_from_file_location("lstmad_common_no_data", REPO / "dags" / "_lstmad_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write, module.landing = write, tmp_path / "home" / "tiny" / "raw"
    module.landing.mkdir(parents=True)
    return module


def test_a_partition_has_landed_once_its_folder_holds_a_data_file(common):
    partition = common.landing / "date=2026-01-20"
    assert common.missing_raw_data("2026-01-20") == (f"raw data for 2026-01-20 has not landed: {partition}: "
                                                     "no such folder")
    partition.mkdir()
    (partition / "_SUCCESS").touch()  # markers and files being written are not data
    (partition / ".part-0.parquet.tmp").touch()
    assert common.missing_raw_data("2026-01-20") == (f"raw data for 2026-01-20 has not landed: {partition}: "
                                                     "no *.parquet data file in it")
    land(partition)
    assert common.missing_raw_data("2026-01-20") is None
    assert common.missing_raw_data("2026-01-21") is not None  # another night's folder is not this one's


def test_unpartitioned_and_delta_sources_are_checked_and_a_missing_landing_path_is_an_error(common):
    # (tests/test_landing.py: statistics of unpartitioned Parquet and Delta sources)
    common.write(source={"partition_column": None})
    assert common.missing_raw_data("2026-01-20") == (f"raw data for 2026-01-20 has not landed: {common.landing}: "
                                                     "no *.parquet file with rows")
    common.write(source={"format": "delta"})
    with pytest.raises(FileNotFoundError, match="raw: not a Delta table"):
        common.missing_raw_data("2026-01-20")
    common.write(source={"path": "elsewhere"})
    with pytest.raises(FileNotFoundError, match="elsewhere: the raw landing path \\(source.path\\) does not exist"):
        common.missing_raw_data("2026-01-20")


def test_airflow_settings_are_typed_from_yaml_and_environment_and_a_wrong_one_is_named(common):
    defaults = common.airflow_settings({})
    assert (defaults["on_missing_data"], defaults["data_wait_timeout_minutes"], defaults["data_poke_interval_s"],
            defaults["start_date"], defaults["catchup"]) == ("wait", 360.0, 600, None, False)
    common.write(airflow={"start_date": "2026-03-01", "catchup": True, "on_missing_data": "skip"})
    assert common.airflow_settings({}) == {**defaults, "start_date": dt.date(2026, 3, 1), "catchup": True,
                                          "on_missing_data": "skip"}
    overridden = common.airflow_settings({"LSTMAD_AIRFLOW_CATCHUP": "false", "LSTMAD_AIRFLOW_START_DATE": "",
                                          "LSTMAD_AIRFLOW_DATA_WAIT_TIMEOUT_MINUTES": "0.5",
                                          "LSTMAD_AIRFLOW_DATA_POKE_INTERVAL_S": "30"})
    assert (overridden["catchup"], overridden["start_date"], overridden["data_wait_timeout_minutes"],
            overridden["data_poke_interval_s"]) == (False, None, 0.5, 30)
    with pytest.raises(ValueError, match="airflow.on_missing_data .*'fail'; expected one of wait, skip"):
        common.airflow_settings({"LSTMAD_AIRFLOW_ON_MISSING_DATA": "fail"})
    with pytest.raises(ValueError, match="airflow.catchup \\(or LSTMAD_AIRFLOW_CATCHUP\\) is 'sometimes', not a bool"):
        common.airflow_settings({"LSTMAD_AIRFLOW_CATCHUP": "sometimes"})


def test_the_nightly_start_date_is_configured_else_after_the_training_range_else_today(common):
    settings = common.airflow_settings({})
    configured = {**settings, "start_date": dt.date(2026, 3, 1)}
    assert common.nightly_start_date(configured, "2026-01-14") == dt.date(2026, 3, 1)
    assert common.nightly_start_date(settings, dt.date(2026, 1, 14)) == dt.date(2026, 1, 16)
    assert common.nightly_start_date(settings, "2026-01-14") == dt.date(2026, 1, 16)
    assert common.nightly_start_date(settings, None, today=dt.date(2026, 5, 5)) == dt.date(2026, 5, 5)
