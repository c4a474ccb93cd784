"""The driver JVM's class-data archive: Spark's classes mapped from one file instead of loaded from its jars.

A fresh driver JVM spends seconds of every session start and first jobs reading, parsing and verifying the
classes of Spark's jars. HotSpot (JDK 13+) can write every class a JVM loaded into a dynamic class-data
sharing archive when it exits (``-XX:ArchiveClassesAtExit``) and map that file into later JVMs
(``-XX:SharedArchiveFile``). The first session lstmad starts on a machine records the archive (that session
is slower, and its process waits a few seconds at exit while the JVM writes the file); every later one maps
it. On a 10-asset night (bench night) the session started in 3.5–4.0 s instead of 6.3–8.2 s and the whole
night took 19–22 s instead of 27–33 s (docs/benchmarks.md).

The archive is keyed by the Java runtime, Spark's jars and any jars the configuration adds; a JVM that still
finds it does not match (it checks the class path itself) ignores it and loads from the jars as usual:
class-data sharing changes start-up time, never behaviour. ``spark.class_archive: false`` turns it off;
``LSTMAD_JVM_CACHE`` names the folder (default ``~/.cache/lstmad/jvm``, one file of ~150–200 MB per key).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional

log = logging.getLogger(__name__)

CACHE_ENV = "LSTMAD_JVM_CACHE"
JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# the dump warns about each class the archive cannot hold (on stdout, where a job's output goes)
QUIET = "-Xlog:cds*=off"
# options by which a user manages class-data sharing (or the JVM's start) themselves
USER_MANAGED = ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare", "AutoCreateSharedArchive")
STALE_PART_S = 6 * 3600  # a recording not published within six hours was cut off (its process killed)
UNUSED_ARCHIVE_S = 7 * 86400  # archives of other keys (an upgraded JDK or Spark) go after a week unused
WAIT_FOR_DUMP_S = 120
DYNAMIC_ARCHIVE_MAGIC = 0xF00BABA8  # HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC

# this process's recording: {"part", "archive", "marker": Path, "process": the JVM's Popen (once started),
# "pid": the recording process's}
_recording: Optional[dict] = None


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lstmad" / "jvm"


def java_executable(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The java Spark's launcher runs: JAVA_HOME's, else the one on the PATH."""
    if environ.get("JAVA_HOME"):
        return str(Path(environ["JAVA_HOME"]) / "bin" / "java")
    return shutil.which("java")


def archive_key(conf: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """16 hex digits naming the Java runtime, Spark's jars and the jars and class path ``conf`` adds."""
    import pyspark

    java = java_executable(environ)
    parts = [pyspark.__version__]
    if java and Path(java).exists():
        real = Path(java).resolve()
        parts += [str(real), str(real.stat().st_size), str(int(real.stat().st_mtime))]
    jars = Path(environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "jars"
    if jars.is_dir():
        parts += sorted(f"{f.name}:{f.stat().st_size}" for f in jars.glob("*.jar"))
    parts += sorted(f"{k}={v}" for k, v in conf.items() if "jar" in k.lower() or "classpath" in k.lower())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def driver_java_options(conf: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> str:
    """``spark.driver.extraJavaOptions`` for a driver JVM this process is about to launch: ``conf``'s own,
    then the archive's (map it when it exists; otherwise record it, once per process). ``conf``'s unchanged
    when it manages class-data sharing itself or the cache folder cannot be written."""
    global _recording
    own = conf.get(JAVA_OPTIONS, "")
    if any(option in own for option in USER_MANAGED):
        return own
    folder = cache_dir(environ)
    archive = folder / f"spark-{archive_key(conf, environ)}.jsa"
    if archive.is_file():
        try:
            os.utime(archive)  # in use: kept by the clean-up below
        except OSError:
            pass
        return f"{own} -XX:SharedArchiveFile={archive} {QUIET}".strip()
    if _recording is not None:  # this process records already (a replaced session): the first JVM dumps
        return own
    marker = folder / f".{archive.name}.recording"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        # one recorder per archive on this machine: the others start as they would without one
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return own
    except OSError as error:
        log.debug("no JVM class archive: %s is not writable (%s)", folder, error)
        return own
    part = folder / f".{archive.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    _recording = {"part": part, "archive": archive, "marker": marker, "process": None, "pid": os.getpid()}
    atexit.register(_publish)
    return f"{own} -XX:ArchiveClassesAtExit={part} {QUIET}".strip()


def session_started() -> None:
    """Note the JVM that records (PySpark's launched process) right after the session started."""
    if _recording is not None and _recording["process"] is None:
        from pyspark import SparkContext

        _recording["process"] = getattr(SparkContext._gateway, "proc", None)


def _publish() -> None:
    """At exit: end the recording JVM (its stdin closed, as PySpark's own exit does), wait for its dump and
    publish the archive by an atomic rename, so no JVM ever maps half a file."""
    recording = _recording
    if recording is None or recording["pid"] != os.getpid():  # a forked child's exit: not its JVM
        return
    part, archive, process = recording["part"], recording["archive"], recording["process"]
    if process is None:  # no JVM was launched after all
        recording["marker"].unlink(missing_ok=True)
        return
    try:
        if process.poll() is None:
            from pyspark import SparkContext

            context = SparkContext._active_spark_context
            if context is not None and getattr(SparkContext._gateway, "proc", None) is process:
                context.stop()  # first its Python side (the accumulator server would report the JVM gone)
            if process.stdin is not None:
                process.stdin.close()  # the gateway exits on end of input (System.exit(0)), then dumps
            process.wait(timeout=WAIT_FOR_DUMP_S)
        if process.returncode == 0 and _is_archive(part):
            os.replace(part, archive)
    except Exception as error:  # noqa: BLE001 - at exit, best effort: the next session records again
        log.debug("JVM class archive not published: %s", error)
    finally:
        part.unlink(missing_ok=True)
        recording["marker"].unlink(missing_ok=True)


def _is_archive(file: Path) -> bool:
    """Whether ``file`` is a whole dynamic archive a JVM can map: its magic number, and a JVM that maps it
    starts (a truncated archive kills the JVM that maps it with SIGBUS; one it cannot use it ignores)."""
    import subprocess
    import tempfile

    try:
        with open(file, "rb") as handle:
            if int.from_bytes(handle.read(4), sys.byteorder) != DYNAMIC_ARCHIVE_MAGIC:
                return False
        java = java_executable()
        if java is None:
            return False
        with tempfile.TemporaryDirectory() as scratch:  # where a crashing JVM would leave its report
            done = subprocess.run([java, f"-XX:SharedArchiveFile={file}", QUIET, "-XX:-CreateCoredumpOnCrash",
                                   "-version"], cwd=scratch, capture_output=True, timeout=60)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def discard(options: str) -> bool:
    """After a driver JVM started with ``options`` failed to start: remove the archive they map (a damaged
    file would stop every later session too). True when they mapped one."""
    mapped = [o.split("=", 1)[1] for o in options.split() if o.startswith("-XX:SharedArchiveFile=")]
    for archive in mapped:
        if Path(archive).parent == cache_dir():  # only lstmad's own, never one the user named
            log.warning("the driver JVM did not start with the class archive %s; it is removed", archive)
            Path(archive).unlink(missing_ok=True)
            return True
    return False


def _remove_stale(folder: Path) -> None:
    now = time.time()
    for pattern, age in ((".spark-*.part", STALE_PART_S), (".spark-*.recording", STALE_PART_S),
                         ("spark-*.jsa", UNUSED_ARCHIVE_S)):
        for file in folder.glob(pattern):
            try:
                if now - file.stat().st_mtime > age:
                    file.unlink()
            except OSError:  # another process removed or replaced it meanwhile
                pass
