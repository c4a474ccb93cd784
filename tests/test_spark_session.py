"""A Spark session whose JVM has gone (killed, crashed) is replaced by the next get_session, in a process of its
own (the suite's shared session is left alone)."""

from __future__ import annotations

import os
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


def test_the_second_driver_jvm_maps_sparks_classes_from_the_archive_the_first_recorded(tmp_path):
    """The first session records the class archive at exit and publishes it whole; the next JVM loads Spark's
    classes from it (the JVM's own class-loading log says where each class came from)."""
    def session_in_a_new_process(log: str) -> subprocess.CompletedProcess:
        script = textwrap.dedent(f"""
            from lstmad.config import SparkConfig
            from lstmad.spark.session import get_session

            options = "-Xlog:class+load=info:file={tmp_path / log}"
            spark = get_session(SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="512m",
                                            conf={{"spark.driver.extraJavaOptions": options}}))
            print("sum", spark.range(1, 101).groupBy().sum("id").collect()[0][0])
        """)
        # in tmp_path: the JVM that maps a damaged archive below leaves its crash report where it runs
        return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "LSTMAD_JVM_CACHE": str(tmp_path / "cache"),
                                                "PYTHONPATH": str(REPO)})

    def where_loaded(log: str, name: str) -> str:
        line = next(x for x in (tmp_path / log).read_text().splitlines() if f" {name} source: " in x)
        return line.split(" source: ", 1)[1]

    first = session_in_a_new_process("first.log")
    assert first.returncode == 0 and "sum 5050" in first.stdout, first.stderr[-3000:]
    assert "cds" not in first.stdout.lower()  # the dump's warnings stay off the job's output
    published = sorted(p.name for p in (tmp_path / "cache").iterdir())  # whole: nothing half-written beside it
    assert len(published) == 1 and published[0].startswith("spark-") and published[0].endswith(".jsa")
    assert where_loaded("first.log", "org.apache.spark.SparkContext").endswith(".jar")

    second = session_in_a_new_process("second.log")
    assert second.returncode == 0 and "sum 5050" in second.stdout, second.stderr[-3000:]
    assert where_loaded("second.log", "org.apache.spark.SparkContext") == "shared objects file (top)"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == published

    # an archive cut short (a full disk) would kill every JVM that maps it: the session starts without it
    archive = tmp_path / "cache" / published[0]
    whole = archive.read_bytes()
    archive.unlink()
    archive.write_bytes(whole[: len(whole) // 2])
    third = session_in_a_new_process("third.log")
    assert third.returncode == 0 and "sum 5050" in third.stdout, third.stderr[-3000:]
    assert "did not start with the class archive" in third.stderr
    assert where_loaded("third.log", "org.apache.spark.SparkContext").endswith(".jar")
