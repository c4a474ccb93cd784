"""A Spark session whose JVM has gone (killed, crashed) is replaced by the next get_session, in a process of its
own (the suite's shared session is left alone)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.spark


def test_a_session_whose_jvm_was_killed_is_replaced_and_runs_jobs():
    script = textwrap.dedent("""
        import os, signal, time
        from pyspark import SparkContext
        from lstmad.config import SparkConfig
        from lstmad.spark.session import get_session

        config = SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="512m")
        first = get_session(config)
        assert first.range(10).count() == 10
        jvm = SparkContext._gateway.proc
        os.kill(jvm.pid, signal.SIGKILL)
        jvm.wait(timeout=60)
        second = get_session(config)
        assert second is not first and SparkContext._gateway.proc.pid != jvm.pid
        print("sum", second.range(1, 101).groupBy().sum("id").collect()[0][0])
        second.stop()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sum 5050" in done.stdout  # 1 + … + 100
    assert "the Spark session's JVM is gone" in done.stderr
