"""The one place that creates a Spark session and sets Spark configuration."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
from typing import Mapping

from lstmad.config import SparkConfig

log = logging.getLogger(__name__)

JAVA_OPTIONS = "spark.driver.extraJavaOptions"  # the driver JVM's options (this module's and the class archive's)


class JavaMissingError(RuntimeError):
    """No Java runtime: Spark cannot start."""


def java_executable(environ=os.environ) -> str | None:
    """The java Spark's launcher runs: JAVA_HOME's, else the one on the PATH (None: no Java)."""
    if environ.get("JAVA_HOME"):
        return os.path.join(environ["JAVA_HOME"], "bin", "java")
    return shutil.which("java")


def require_java() -> None:
    """Fail with one clear line when no Java runtime is installed (Spark needs Java 17+)."""
    if java_executable():
        return
    raise JavaMissingError("Spark needs a Java 17+ runtime and none was found: install one "
                           "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME")


def get_session(config: SparkConfig, app_name: str = "lstmad", delta_spark: bool = False,
                warm_python_workers: bool = False):
    """The active Spark session, or a new one built from ``config``.

    spark-submit sets the master itself; in that case ``config.master`` is not applied. ``delta_spark``
    adds the Delta Lake extension and catalog (their jars must be on the classpath). ``warm_python_workers``:
    a new local session starts its Python worker daemon at once, in the background (warm_workers), for a caller
    whose first job will run Python tasks. A driver JVM launched here maps Spark's classes from the class
    archive (lstmad.spark.class_archive; ``config.class_archive``), or records it; one that cannot start
    with a damaged archive starts again without it.
    """
    require_java()
    from py4j.protocol import Py4JNetworkError
    from pyspark.sql import SparkSession

    try:
        active = SparkSession.getActiveSession()
    except (Py4JNetworkError, ConnectionError) as error:
        # The JVM behind this process's session is gone (killed, crashed): every later call on it would fail
        # the same way, so it is forgotten and a new one started. Only a JVM this process launched can be
        # replaced (under spark-submit the JVM is spark-submit's), and only when it has really exited (an
        # error from a live JVM must not leave it running beside a second one).
        if "PYSPARK_GATEWAY_PORT" in os.environ or not _launched_jvm_exited():
            raise
        log.warning("the Spark session's JVM is gone (%s); starting a new one", str(error).splitlines()[0][:200])
        forget_dead_session()
        active = None
    if active is not None:
        return active
    builder = SparkSession.builder
    # Under spark-submit the JVM already exists (PYSPARK_GATEWAY_PORT is set) and owns the master URL and the
    # application name (--name, which the Airflow operator sets per job).
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if not submitted:
        builder = builder.master(config.master).appName(app_name)
    local = not submitted and config.master.startswith("local")
    if local:
        # Local workers must run the driver's interpreter (the project virtualenv), not a system python;
        # on a cluster the executors' interpreter is the cluster's business (spark.pyspark.python).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        # Embedded sessions listen on loopback only.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.driver.memory": config.driver_memory,
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # pandas writes nanosecond timestamps, which Spark otherwise refuses (PARQUET_TYPE_ILLEGAL): read them
        # as longs, and lstmad.spark.prepare turns them into instants.
        "spark.sql.legacy.parquet.nanosAsLong": "true",
        # prepare's per-channel checks make whole-stage methods too large for the JVM to compile (HotSpot
        # leaves methods over 8,000 bytes of bytecode interpreted): above that, Spark falls back to its
        # expression-by-expression code, which compiles. Measured on a 26-channel night of 1,000 assets, the
        # checks took 28 s interpreted and 5.7 s compiled (docs/benchmarks.md, bench night).
        "spark.sql.codegen.hugeMethodLimit": "8000",
        # PySpark 4 records the Python call site of every Column and DataFrame call for error messages: five
        # more py4j round trips per call. Building prepare's checks for 26 channels took 3.9 s with it and
        # 1.8 s without (first build in a fresh session; 2.0 s and 0.8 s warmed). lstmad reports its errors
        # by file, column or key itself. PySpark reads the flag once per process, from the first session.
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    if local:
        settings.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                         # workers forked with lstmad's libraries already imported (spark/worker_daemon.py)
                         "spark.python.daemon.module": "lstmad.spark.worker_daemon"})
    if delta_spark:
        settings["spark.sql.extensions"] = "io.delta.sql.DeltaSparkSessionExtension"
        settings["spark.sql.catalog.spark_catalog"] = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    settings.update(config.conf)
    if local:
        collector = driver_collector(config.master, users_java_options(settings), usable_cores())
        if collector:
            settings[JAVA_OPTIONS] = f"{settings.get(JAVA_OPTIONS, '')} {collector}".strip()
    java_options = settings.get(JAVA_OPTIONS, "")  # the driver's options without the class archive's
    from pyspark import SparkContext

    # a driver JVM this process launches now maps Spark's classes from one archive (or records it)
    archived = not submitted and config.class_archive and SparkContext._gateway is None
    if archived:
        from lstmad.spark import class_archive

        options = class_archive.driver_java_options(settings)
        if options:
            settings[JAVA_OPTIONS] = options
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as error:
        # a damaged archive (a disk that filled, a file cut short) stops the JVM at start: without it, again
        condition = getattr(error, "getCondition", lambda: None)() or str(error)
        if not (archived and "JAVA_GATEWAY_EXITED" in condition
                and class_archive.discard(settings.get(JAVA_OPTIONS, ""))):
            raise
        builder = builder.config(JAVA_OPTIONS, java_options)
        session = builder.getOrCreate()
    if archived:
        class_archive.session_started()
    session.sparkContext.setLogLevel("ERROR")
    if local and warm_python_workers:
        warm_workers(session)
    return session


# A local session's JVM does the executors' work too. With G1 (the JVM's choice on any machine of 2 cores and
# 2 GB) its heap grew under load toward spark.driver.memory and its peak varied by hundreds of MB between runs
# of the same night: a 2-core night of 1,000 assets peaked at 1,047-1,246 MB and one of 3,000 at 1,273-1,411
# MB; with the serial collector, which grows the heap only when the live objects need it, at 772-802 and
# 785-786 MB, in the same time (bench night, alternated runs; docs/operations.md). It collects in one thread,
# so it is chosen only for a few task threads: more cores were not measured.
SERIAL_GC_MAX_THREADS = 4
_LOCAL_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:\s*,\s*\d+)?\])?")
_COLLECTOR = re.compile(r"-XX:[+-]Use\w+GC\b")  # a collector chosen, or one turned off


def users_java_options(settings: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """Every JVM option the user gives a driver this process launches: the session's settings
    (``spark.driver.extraJavaOptions``, ``spark.driver.defaultJavaOptions``) and the environment variables
    the JVM reads itself (JAVA_TOOL_OPTIONS, JDK_JAVA_OPTIONS, _JAVA_OPTIONS)."""
    return " ".join([settings.get(JAVA_OPTIONS, ""), settings.get("spark.driver.defaultJavaOptions", ""),
                     *(environ.get(name, "") for name in ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"))])


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; a container's cpuset), as local[*] counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_threads(master: str, cpus: int) -> int | None:
    """Task threads of a local master URL (``local``, ``local[n]``, ``local[*]``, with or without a number of
    task failures, ``local[n,f]``) on a machine of ``cpus`` cores; None for any other master."""
    match = _LOCAL_MASTER.fullmatch(master.strip())
    if match is None:
        return None
    return cpus if match.group(1) == "*" else int(match.group(1) or 1)


def driver_collector(master: str, java_options: str, cpus: int) -> str:
    """The garbage collector option for a driver JVM this process launches: ``-XX:+UseSerialGC`` for a local
    master of at most SERIAL_GC_MAX_THREADS task threads, unless ``java_options`` (users_java_options) choose
    or turn off a collector themselves (two collectors chosen stop the JVM); otherwise "" (the JVM's own
    choice)."""
    threads = local_threads(master, cpus)
    if threads is None or threads > SERIAL_GC_MAX_THREADS or _COLLECTOR.search(java_options):
        return ""
    return "-XX:+UseSerialGC"


def warm_workers(session) -> threading.Thread:
    """Start the session's Python worker daemon now, in a background thread, by a one-row Arrow job.

    Spark starts the daemon when the first Python task runs, and lstmad's daemon imports NumPy, pyarrow, torch
    and lstmad's code before it forks a worker (spark/worker_daemon.py): seconds of one core on the critical
    path of a night's first job, which here overlap with the driver building and planning that job
    (bench night, docs/benchmarks.md). A failure (the session stopped meanwhile) is left to the job that
    needs the workers to report.
    """
    from pyspark.sql import types as T

    def one_row(batches):
        yield from batches

    schema = T.StructType([T.StructField("id", T.LongType())])

    def run():
        try:
            session.range(1, numPartitions=1).mapInArrow(one_row, schema).collect()
        except Exception as error:  # noqa: BLE001 - best effort: the real job reports a real failure
            log.debug("warming the Python workers failed: %s", error)

    thread = threading.Thread(target=run, name="lstmad-warm-python-workers", daemon=True)
    thread.start()
    return thread


def _launched_jvm_exited() -> bool:
    """True when the JVM that PySpark launched for this process has exited."""
    from pyspark import SparkContext

    process = getattr(SparkContext._gateway, "proc", None)
    return process is not None and process.poll() is not None


def forget_dead_session() -> None:
    """Drop PySpark's references to a session and context whose JVM has gone, so that the next builder starts
    a new JVM instead of calling the dead one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql.context import SQLContext

    context = SparkContext._active_spark_context
    server = getattr(context, "_accumulatorServer", None)
    if server is not None:
        server.shutdown()  # the old context's accumulator socket server, a Python thread
    if SparkContext._gateway is not None:
        SparkContext._gateway.shutdown()  # its py4j client side; the JVM end has gone already
    SparkContext._active_spark_context = None
    SparkContext._gateway = None
    SparkContext._jvm = None
    SparkSession._instantiatedSession = None
    SparkSession._activeSession = None
    SQLContext._instantiatedContext = None


def require_utc(spark) -> None:
    """Dates and naive timestamps are read in the session time zone: lstmad's stages need it to be UTC, also
    in a session they were handed."""
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        spark.conf.set("spark.sql.session.timeZone", "UTC")
