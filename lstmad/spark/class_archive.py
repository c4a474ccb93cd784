"""The driver JVM's class-data archive: Spark's classes mapped from one file instead of loaded from its jars.

A fresh driver JVM spends seconds of every session start and first jobs reading, parsing and verifying the
classes of Spark's jars. HotSpot (JDK 13+) can write every class a JVM loaded into a dynamic class-data
sharing archive when it exits (``-XX:ArchiveClassesAtExit``) and map that file into later JVMs
(``-XX:SharedArchiveFile``). The first session lstmad starts on a machine records the archive (that session
is slower, and its process waits at exit while the JVM writes the file: about 5 s for 174 MB); every later
one maps it. On a 10-asset night (bench night) the session started in 3.5–4.0 s instead of 6.3–8.2 s and the
whole night took 19–22 s instead of 27–33 s (docs/benchmarks.md).

A recording is published by an atomic rename, and only once a JVM has mapped it: a truncated archive kills
the JVM that maps it (SIGBUS). A process that ends without its exit handlers (``os._exit``, as Airflow's
task runners do) leaves its JVM to write the file alone; the next session publishes that file once both
have gone. The archive is keyed by the Java runtime, Spark's jars and any jars the configuration adds; a
JVM that finds it does not match its class path ignores it.

``spark.class_archive: false`` turns it off; ``LSTMAD_JVM_CACHE`` names the folder (default
``~/.cache/lstmad/jvm``, one file of ~150–200 MB per key).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

from lstmad.spark.session import JAVA_OPTIONS, java_executable, users_java_options

log = logging.getLogger(__name__)

CACHE_ENV = "LSTMAD_JVM_CACHE"
# the dump warns about each class the archive cannot hold, on stdout (where a job's output goes)
CDS_LOG_OFF = "-Xlog:cds*=off"
# options by which a user manages class-data sharing themselves: lstmad then adds none
USER_CDS_OPTIONS = ("SharedArchiveFile", "ArchiveClassesAtExit", "AutoCreateSharedArchive", "-Xshare")
STALE_S = 6 * 3600  # a marker or part older than this is left from a recorder that never finished
UNUSED_ARCHIVE_S = 7 * 86400  # archives of other keys (an upgraded JDK or Spark) go after a week unused
WAIT_FOR_DUMP_S = 120
DYNAMIC_ARCHIVE_MAGIC = 0xF00BABA8  # HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC, the archive's first 4 bytes


@dataclasses.dataclass
class Recording:
    """This process's recording: the JVM dumps to ``part``; ``marker`` (one per archive on the machine)
    holds this process's pid and, once started, the JVM's."""

    part: Path
    archive: Path
    marker: Path
    pid: int
    process: Any = None  # the JVM's subprocess.Popen (PySpark's launched gateway)


_recording: Optional[Recording] = None


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the archives: LSTMAD_JVM_CACHE, else the user's cache folder."""
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lstmad" / "jvm"


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
    then the archive's (map it when it exists; otherwise record it, one recorder per archive on the
    machine). ``conf``'s own alone when the user manages class-data sharing, or the cache folder cannot be
    written or has whitespace in its path (Spark's launcher splits the options on it)."""
    global _recording
    own = conf.get(JAVA_OPTIONS, "")
    users = users_java_options(conf, environ)
    folder = cache_dir(environ)
    if any(option in users for option in USER_CDS_OPTIONS) or any(c.isspace() for c in str(folder)):
        return own
    archive = folder / f"spark-{archive_key(conf, environ)}.jsa"
    marker = folder / f".{archive.name}.recording"
    _adopt_orphan(marker, archive)
    if archive.is_file():
        return _mapping(own, archive)
    if _recording is not None:  # this process records already (a replaced session): its first JVM dumps
        return own
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # another process records: this one starts as it would without an archive
        return own
    except OSError as error:
        log.debug("no JVM class archive: %s is not writable (%s)", folder, error)
        return own
    with os.fdopen(handle, "w") as out:
        out.write(f"{os.getpid()} 0\n")
    if archive.is_file():  # published between the look above and the claim
        marker.unlink(missing_ok=True)
        return _mapping(own, archive)
    part = folder / f".{archive.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    _recording = Recording(part=part, archive=archive, marker=marker, pid=os.getpid())
    atexit.register(_publish)
    return f"{own} -XX:ArchiveClassesAtExit={part} {CDS_LOG_OFF}".strip()


def session_started() -> None:
    """Note the JVM that records (PySpark's launched process) right after the session started, also in the
    marker: a later process publishes its dump if this one ends without its exit handlers."""
    if _recording is None or _recording.process is not None:
        return
    from pyspark import SparkContext

    _recording.process = getattr(SparkContext._gateway, "proc", None)
    if _recording.process is not None:
        try:
            _recording.marker.write_text(f"{_recording.pid} {_recording.process.pid} {_recording.part.name}\n")
        except OSError:
            pass


def discard(options: str) -> bool:
    """After a driver JVM started with ``options`` failed to start: when the archive they map is damaged
    (a JVM that maps it does not start), remove it, so that the session can start without it. True when
    one was removed; a sound archive stays (the JVM failed for another reason)."""
    mapped = [o.split("=", 1)[1] for o in options.split() if o.startswith("-XX:SharedArchiveFile=")]
    for name in mapped:
        archive = Path(name)
        if archive.parent == cache_dir() and archive.is_file() and not mappable(archive):
            log.warning("the driver JVM did not start with the class archive %s, which is damaged; it is removed "
                        "and the session starts without it", archive)
            archive.unlink(missing_ok=True)
            return True
    return False


def mappable(file: Path) -> bool:
    """Whether ``file`` is a whole dynamic archive a JVM can map: its magic number, and a JVM that maps it
    starts (a truncated archive kills the JVM with SIGBUS; one that does not match, the JVM ignores)."""
    import tempfile

    try:
        with open(file, "rb") as handle:
            if int.from_bytes(handle.read(4), sys.byteorder) != DYNAMIC_ARCHIVE_MAGIC:
                return False
        java = java_executable()
        if java is None:
            return False
        with tempfile.TemporaryDirectory() as scratch:  # where a crashing JVM leaves its report
            done = subprocess.run([java, f"-XX:SharedArchiveFile={file}", CDS_LOG_OFF, "-XX:-CreateCoredumpOnCrash",
                                   "-version"], cwd=scratch, capture_output=True, timeout=60)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _mapping(own: str, archive: Path) -> str:
    try:
        os.utime(archive)  # in use: kept by _remove_stale
    except OSError:
        pass
    return f"{own} -XX:SharedArchiveFile={archive} {CDS_LOG_OFF}".strip()


def _publish() -> None:
    """At exit: end the recording JVM (its stdin closed, as PySpark's own exit does), wait for its dump and
    publish the archive."""
    recording = _recording
    if recording is None or recording.pid != os.getpid():  # a forked child's exit: not its JVM
        return
    process = recording.process
    try:
        if process is not None and process.poll() is None:
            from pyspark import SparkContext

            context = SparkContext._active_spark_context
            if context is not None and getattr(SparkContext._gateway, "proc", None) is process:
                context.stop()  # first its Python side (the accumulator server would report the JVM gone)
            if process.stdin is not None:
                process.stdin.close()  # the gateway exits on end of input (System.exit(0)), then dumps
            process.wait(timeout=WAIT_FOR_DUMP_S)
        if process is not None and process.returncode == 0 and mappable(recording.part):
            os.replace(recording.part, recording.archive)
    except BaseException as error:  # noqa: BLE001 - at exit (a second Ctrl-C too): the next session records
        log.debug("JVM class archive not published: %s", error)
    finally:
        recording.part.unlink(missing_ok=True)
        recording.marker.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _adopt_orphan(marker: Path, archive: Path) -> None:
    """A recorder that ended without its exit handlers left its marker: once it and its JVM have gone,
    publish the JVM's dump (when whole) and free the marker."""
    try:
        fields = marker.read_text().split()
        recorder, jvm = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return
    if _alive(recorder) or (jvm and _alive(jvm)):
        return
    part = marker.parent / fields[2] if len(fields) > 2 else None
    try:
        if part is not None and part.is_file() and not archive.is_file() and mappable(part):
            os.replace(part, archive)
    except OSError:
        pass
    if part is not None:
        part.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)


def _remove_stale(folder: Path) -> None:
    """Remove parts and markers a recorder left more than STALE_S ago, and archives unused for a week."""
    now = time.time()
    for pattern, age in ((".spark-*.part", STALE_S), (".spark-*.recording", STALE_S),
                         ("spark-*.jsa", UNUSED_ARCHIVE_S)):
        for file in folder.glob(pattern):
            try:
                if now - file.stat().st_mtime > age:
                    file.unlink()
            except OSError:  # another process removed or replaced it meanwhile
                pass
