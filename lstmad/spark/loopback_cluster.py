"""A Spark standalone cluster on this machine's loopback interface: one master and ``workers`` workers, each
with ``cores`` cores, for checks that must run on a real cluster (executors in their own JVMs, tasks shipped
over the network) without leaving the machine. Everything binds to 127.0.0.1 and is stopped on exit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cluster_env() -> dict:
    """The environment of the cluster's processes: this interpreter for the Python workers, loopback only."""
    import pyspark

    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


@contextlib.contextmanager
def loopback_cluster(folder: Path, workers: int = 2, cores: int = 1, memory: str = "4g",
                     timeout_s: float = 120) -> Iterator[str]:
    """Start the master and the workers (logs in ``folder``), wait until every worker has registered, yield
    the master URL (spark://127.0.0.1:PORT), stop them all afterwards. Fails with one line naming the log
    when the cluster does not come up."""
    import pyspark

    folder.mkdir(parents=True, exist_ok=True)
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    env, port = cluster_env(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    logs, processes = [], []
    try:
        log = open(folder / "master.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host",
                                           "127.0.0.1", "--port", str(port), "--webui-port", str(_free_port())],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
        for k in range(workers):
            log = open(folder / f"worker{k}.log", "w")
            logs.append(log)
            processes.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores",
                 str(cores), "--memory", memory, "--webui-port", str(_free_port()), "--work-dir",
                 str(folder / f"work{k}")], env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.time() + timeout_s
        for k in range(workers):
            log_file = folder / f"worker{k}.log"
            while "Successfully registered with master" not in log_file.read_text(errors="replace"):
                if time.time() > deadline or any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"the loopback Spark cluster did not come up: see {log_file} and "
                                       f"{folder / 'master.log'}")
                time.sleep(0.5)
        yield url
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
