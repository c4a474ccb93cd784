"""The local scheduler recipe of docs/operations.md ("Trying the DAGs" and "A local scheduler"), followed as written:
its commands are read from the two bash blocks (and the unpause command from the paragraph after them), not
retyped, with only what a test must change substituted: a temporary AIRFLOW_HOME, a free port instead of 8080 (the
API server's and the execution API URL's), the tiny pipeline whose landing folder holds no partition for
yesterday as LSTMAD_CONF, ``LSTMAD_AIRFLOW_ON_MISSING_DATA=skip`` (the docs' way to skip at once), no example DAGs,
and this virtualenv's airflow for ``.venv/bin/airflow``. The API server, scheduler and DAG processor run bound to
127.0.0.1, each in its own process group, stopped in the end whatever happens. Unpausing lstmad_nightly must
create one run (catch-up off), for the latest midnight (it scores yesterday), whose data check skips the night
and every task after it: the run ends successful with no task failed or up for retry, and none of the servers
listens on all interfaces.

The waits read the scheduler's SQLite database directly (cheap: an ``airflow`` command costs an interpreter and
Airflow's imports, on a machine the servers already load); the final states come from the CLI's JSON
(``dags list-runs``, ``tasks states-for-dag-run``). Everything is bounded: the servers not answering in time (a
machine too loaded to start them) skips the test with the reason; a server that exits, or a run that does not
finish in time, fails it with the servers' log tails."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, tiny_config_dict, write_config

pytestmark = pytest.mark.slow

DOCS = REPO / "docs" / "operations.md"
DOC_AIRFLOW = ".venv/bin/airflow"
DOC_PORT = "8080"
DOWNSTREAM = ("prepare", "score", "drift", "retrain_needed", "trigger_training")
START_S, RUN_S, CLI_S, STOP_S = 150, 240, 90, 30  # bounds: servers answering, the run finished, one CLI call, stop


def recipe() -> dict:
    """The recipe's parts as docs/operations.md gives them: the environment (the exports of both blocks, ``$PWD``
    as the repository root), the database migration of "Trying the DAGs" (its ``dags test`` lines run the DAGs
    without a scheduler: not this recipe), the three background servers of "A local scheduler", and the unpause
    command of the paragraph after it. Each command as a word list, ``&`` dropped."""
    section = DOCS.read_text().split("\n## Airflow\n", 1)[1].split("\n## ", 1)[0]

    def block(lead: str) -> list[list[str]]:
        paragraph = section.split(f"**{lead}**", 1)[1]
        lines = paragraph.split("```bash\n", 1)[1].split("\n```", 1)[0].splitlines()
        return [words for words in (shlex.split(line, comments=True) for line in lines) if words]

    env, commands = {}, []
    for words in block("Trying the DAGs") + block("A local scheduler"):
        if words[0] == "export":
            for assignment in words[1:]:
                key, _, value = assignment.partition("=")
                env[key] = value.replace("$PWD", str(REPO))
                assert "$" not in env[key], f"{assignment}: only $PWD is expanded here"
        else:
            commands.append(words)
    migrate = [c for c in commands if c[1:3] == ["db", "migrate"]]
    servers = [c[:-1] for c in commands if c[-1] == "&"]
    unpause = re.search(r"Unpausing `lstmad_nightly` there \(`([^`]+)`\)", section)
    assert len(migrate) == 1 and len(servers) == 3 and unpause, "the recipe's commands moved in docs/operations.md"
    return {"env": env, "migrate": migrate[0], "servers": servers, "unpause": shlex.split(unpause.group(1))}


def substituted(words: list[str], airflow: str, port: int) -> list[str]:
    """A recipe command as the test runs it: this virtualenv's airflow, the free port instead of 8080."""
    assert words[0] == DOC_AIRFLOW, words
    out = [airflow, *words[1:]]
    if "--port" in out:
        at = out.index("--port") + 1
        assert out[at] == DOC_PORT, words
        out[at] = str(port)
    return out


def query(db: Path, sql: str, *args) -> list[tuple]:
    """Rows from the scheduler's database, read-only; [] while it is busy or not there yet."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def airflow_json(command: list[str], env: dict) -> list[dict]:
    """An ``airflow ... -o json`` command's JSON (its stdout may hold warnings before it)."""
    done = subprocess.run([*command, "-o", "json"], env=env, capture_output=True, text=True, timeout=CLI_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("["):
            return json.loads(line)
    raise AssertionError(f"no JSON in the output of {command}: {done.stdout[-2000:]}")


def group_pids(leaders: list[int]) -> set[int]:
    """The live processes of the servers' process groups (their workers and task processes included)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in leaders and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            pids.add(int(stat.parent.name))
    return pids


def listening(pids: set[int]) -> set[str]:
    """The TCP addresses (hex address:port, as /proc/net/tcp* writes them) these processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1])
    return found


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each server's process group, SIGKILL to what is left of them after STOP_S seconds."""
    leaders = [p.pid for p in processes]
    for pid in leaders:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + STOP_S
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            pass
    while group_pids(leaders) and time.time() < deadline:
        time.sleep(0.5)
    for pid in leaders:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for process in processes:
        process.wait(timeout=STOP_S)


def test_the_docs_local_scheduler_skips_a_night_without_data_in_one_successful_run(tmp_path):
    steps = recipe()
    latest_midnight = dt.datetime.now(dt.timezone.utc).date()  # catch-up off: the one run is this midnight's
    airflow, port = os.path.join(os.path.dirname(sys.executable), "airflow"), free_port()
    conf = write_config(tmp_path / "tiny.yaml", tiny_config_dict(tmp_path / "home"))
    (tmp_path / "home" / "tiny" / "raw").mkdir(parents=True)  # the landing folder, without yesterday's partition
    home = tmp_path / "airflow_home"
    doc_env = steps["env"]
    assert {"AIRFLOW_HOME", "LSTMAD_CONF", "AIRFLOW__CORE__DAGS_FOLDER",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"} <= doc_env.keys()
    assert doc_env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert f"127.0.0.1:{DOC_PORT}" in doc_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LSTMAD_AIRFLOW_"))},
           **doc_env, "AIRFLOW_HOME": str(home), "LSTMAD_CONF": str(conf), "LSTMAD_AIRFLOW_ON_MISSING_DATA": "skip",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL":
               doc_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].replace(f":{DOC_PORT}/", f":{port}/")}
    db = home / "airflow.db"

    migrated = subprocess.run(substituted(steps["migrate"], airflow, port), env=env, capture_output=True, text=True,
                              timeout=RUN_S)
    assert migrated.returncode == 0, migrated.stderr[-4000:]

    processes, logs = [], []
    try:
        for words in steps["servers"]:
            assert "--host" not in words or words[words.index("--host") + 1] == "127.0.0.1", words
            log = tmp_path / f"{words[1]}.log"
            logs.append(log)
            with open(log, "w") as out:  # each in its own process group, as `&` in an interactive shell
                processes.append(subprocess.Popen(substituted(words, airflow, port), env=env, stdout=out,
                                                  stderr=subprocess.STDOUT, start_new_session=True))

        def tails() -> str:
            return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)

        def alive() -> None:
            for words, process in zip(steps["servers"], processes):
                if process.poll() is not None:
                    text = tails()
                    if "address already in use" in text.lower():
                        pytest.skip(f"port {port} was taken before the API server bound it")
                    pytest.fail(f"`airflow {words[1]}` exited ({process.returncode}):\n{text}")

        started = time.time()
        while True:  # the API server answers and the DAG processor has stored lstmad_nightly, paused
            alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
                    up = answer.status == 200
            except OSError:
                up = False
            errors = query(db, "select filename, stacktrace from import_error")
            assert not errors, errors
            if up and query(db, "select is_paused from dag where dag_id = 'lstmad_nightly'") == [(1,)]:
                break
            if time.time() - started > START_S:
                pytest.skip(f"the local Airflow servers did not come up in {START_S} s (a machine too loaded?):\n"
                            f"{tails()}")
            time.sleep(1)

        unpaused = subprocess.run(substituted(steps["unpause"], airflow, port), env=env, capture_output=True,
                                  text=True, timeout=CLI_S)
        assert unpaused.returncode == 0 and "lstmad_nightly" in unpaused.stdout, unpaused.stdout + unpaused.stderr

        unpaused_at = time.time()
        while not (runs := query(db, "select state from dag_run where dag_id = 'lstmad_nightly'")) or \
                any(state not in ("success", "failed") for (state,) in runs):
            alive()
            if time.time() - unpaused_at > RUN_S:
                pytest.fail(f"lstmad_nightly's run not finished {RUN_S} s after unpausing: {runs}\n{tails()}")
            time.sleep(2)
        if dt.datetime.now(dt.timezone.utc).date() != latest_midnight:
            pytest.skip("midnight (UTC) passed during the test: the scheduler may rightly create a second run")

        ports = listening(group_pids([p.pid for p in processes]))
        runs = airflow_json([airflow, "dags", "list-runs", "lstmad_nightly"], env)
        assert len(runs) == 1, runs  # catch-up off: one run, not one per night since the start date
        run = runs[0]
        assert run["state"] == "success", run
        assert dt.datetime.fromisoformat(run["logical_date"]) == dt.datetime.combine(
            latest_midnight, dt.time(), tzinfo=dt.timezone.utc), run
        tasks = {t["task_id"]: t["state"]
                 for t in airflow_json([airflow, "tasks", "states-for-dag-run", "lstmad_nightly", run["run_id"]], env)}
        assert tasks["target_date"] == "success", tasks
        assert tasks["raw_data_landed"] == "skipped", tasks
        assert {task: tasks[task] for task in DOWNSTREAM} == dict.fromkeys(DOWNSTREAM, "skipped"), tasks
        assert not {"failed", "up_for_retry", "upstream_failed"} & set(tasks.values()), tasks
        night = (latest_midnight - dt.timedelta(days=1)).isoformat()
        logged = "\n".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*")
                           if p.is_file() and "task_id=raw_data_landed" in p.parts[-2])
        assert (f"raw data for {night} has not landed: {tmp_path / 'home' / 'tiny' / 'raw'}/date={night}: no such "
                "folder; night skipped (airflow.on_missing_data: skip)") in logged, logged[-3000:]

        # the API server on 127.0.0.1 only, and no log server (--skip-serve-logs) nor anything else on all interfaces
        assert ports, "the servers' listening sockets were not found"
        loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
        exposed = sorted(int(a.split(":")[1], 16) for a in ports if a.split(":")[0] not in loopback)
        assert not exposed, f"the servers listen on all (or non-loopback) interfaces on ports {exposed}: {ports}"
        assert f"0100007F:{port:04X}" in ports, ports
    finally:
        stop(processes)
