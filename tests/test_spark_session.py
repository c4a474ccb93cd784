"""A Spark session whose JVM has gone (killed, crashed) is replaced by the next get_session, in a process of its
own (the suite's shared session is left alone)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    """The first session records the class archive and publishes it whole; later JVMs load Spark's classes from
    it (the JVM's own class-loading log says where each class came from). A damaged archive is removed and the
    session starts without it. A recorder that ends by os._exit (as Airflow's task runners do) leaves its JVM
    to write the file alone: the next session publishes it."""
    cache = tmp_path / "cache"

    def session_in_a_new_process(log: str, hard_exit: bool = False) -> subprocess.CompletedProcess:
        script = textwrap.dedent(f"""
            import os
            from lstmad.config import SparkConfig
            from lstmad.spark.session import get_session

            options = "-Xlog:class+load=info:file={tmp_path / log}"
            spark = get_session(SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="512m",
                                            conf={{"spark.driver.extraJavaOptions": options}}))
            print("sum", spark.range(1, 101).groupBy().sum("id").collect()[0][0], flush=True)
            if {hard_exit}:
                os._exit(0)
        """)
        # in tmp_path: the JVM that maps the damaged archive below leaves its crash report where it runs
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "LSTMAD_JVM_CACHE": str(cache), "PYTHONPATH": str(REPO)})
        assert done.returncode == 0 and "sum 5050" in done.stdout, done.stderr[-3000:]
        return done

    def where_loaded(log: str, name: str = "org.apache.spark.SparkContext") -> str:
        lines = [x for x in (tmp_path / log).read_text().splitlines() if f" {name} source: " in x]
        assert lines, f"{name} is not in the JVM's class-loading log {log}"
        return lines[0].split(" source: ", 1)[1]

    def archives() -> list[str]:
        return sorted(p.name for p in cache.iterdir() if p.suffix == ".jsa")

    first = session_in_a_new_process("first.log")
    assert "cds" not in first.stdout.lower()  # the dump's warnings stay off the job's output
    published = sorted(p.name for p in cache.iterdir())  # the archive alone: no part or marker left
    assert len(published) == 1 and published[0].startswith("spark-") and published[0].endswith(".jsa")
    assert where_loaded("first.log").endswith(".jar")

    second = session_in_a_new_process("second.log")
    assert "cds" not in second.stdout.lower()
    assert where_loaded("second.log") == "shared objects file (top)"
    assert archives() == published

    # an archive cut short (a full disk) would kill every JVM that maps it: removed, the session starts without
    archive = cache / published[0]
    whole = archive.read_bytes()
    archive.unlink()
    archive.write_bytes(whole[: len(whole) // 2])
    third = session_in_a_new_process("third.log")
    assert "damaged; it is removed" in third.stderr
    assert where_loaded("third.log").endswith(".jar") and archives() == []

    session_in_a_new_process("fourth.log", hard_exit=True)  # records, then ends without its exit handlers
    marker = next(cache.glob(".spark-*.recording"))
    jvm = int(marker.read_text().split()[1])
    waited = 0
    while Path(f"/proc/{jvm}").exists() and waited < 240:  # the orphaned JVM writes the archive, then exits
        time.sleep(1)
        waited += 1
    session_in_a_new_process("fifth.log")
    assert where_loaded("fifth.log") == "shared objects file (top)"
    assert sorted(p.name for p in cache.iterdir()) == published


def test_a_local_driver_of_few_task_threads_collects_with_the_serial_collector(spark):
    """The suite's local[2] session: its JVM reports the serial collector's two generations (HotSpot names
    them Copy and MarkSweepCompact; G1's would be "G1 Young Generation", …)."""
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert sorted(bean.getName() for bean in beans) == ["Copy", "MarkSweepCompact"]


def test_the_serial_collector_only_for_small_local_masters_whose_user_chose_none():
    from lstmad.spark.session import driver_collector, local_threads, users_java_options

    masters = ("local", "local[3]", "local[*]", "local[*,2]", "local[2 , 3]")
    assert [local_threads(m, 8) for m in masters] == [1, 3, 8, 8, 2]
    assert local_threads("spark://127.0.0.1:7077", 8) is None and local_threads("local-cluster[2,1,1024]", 8) is None
    assert driver_collector("local[*]", "", 2) == "-XX:+UseSerialGC"
    assert driver_collector("local[*]", "", 16) == ""  # more than 4 task threads: the JVM's own choice
    assert driver_collector("local[2]", "-Xlog:gc -XX:+UseParallelGC", 2) == ""  # the user's collector
    assert driver_collector("local[2]", "-XX:-UseSerialGC", 2) == ""  # the user's "not this one"
    assert driver_collector("local[2]", "-Xlog:gc", 2) == "-XX:+UseSerialGC"
    assert driver_collector("spark://127.0.0.1:7077", "", 2) == ""
    # a collector named in the environment counts too: the JVM refuses to start with two
    settings = {"spark.driver.extraJavaOptions": "-Xlog:gc", "spark.driver.defaultJavaOptions": "-Xss4m"}
    for variable in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"):
        options = users_java_options(settings, {variable: "-XX:+UseZGC"})
        assert "-Xlog:gc" in options and "-Xss4m" in options and driver_collector("local[2]", options, 2) == ""
    assert driver_collector("local[2]", users_java_options(settings, {}), 2) == "-XX:+UseSerialGC"
