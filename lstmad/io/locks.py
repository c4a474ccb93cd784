"""File locks under the pipeline home: one training per settings, one scoring job per night. They guard one
machine, or hosts sharing the pipeline home on a file system with POSIX locks; the OS releases them when
the process dies, so a killed run's successor gets them."""

from __future__ import annotations

import fcntl
from pathlib import Path


class TrainingLock:
    """An exclusive lock per training key: a second training with the same settings while the first is still
    alive would otherwise adopt its unfinished run and write the same checkpoint."""

    def __init__(self, folder: Path, key: str):
        path = folder / f"train-{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RuntimeError(f"a training with the same settings (key {key}) is running in another process "
                               f"(lock {path}); wait for it or change the settings") from None

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class ScoringLocks:
    """Exclusive locks on the dates a scoring job writes, taken in date order so two jobs never deadlock: a
    second job for a date waits for the first and then replaces its rows. Without them two jobs that both
    find a date unscored would both add its rows (a commit that adds files to a partition another commit
    also filled does not conflict in Delta)."""

    def __init__(self, folder: Path, dates: list[str]):
        folder.mkdir(parents=True, exist_ok=True)
        self._files = []
        for date in sorted(dates):
            handle = open(folder / f"score-{date}.lock", "w")
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._files.append(handle)

    def release(self) -> None:
        for handle in reversed(self._files):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
