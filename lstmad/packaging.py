"""The lstmad package as one zip for ``spark-submit --py-files``: how a cluster's executors get lstmad
without installing it (their Python must already have lstmad's dependencies: torch, pyarrow, numpy …)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import lstmad


def py_files_zip(folder: str | Path) -> Path:
    """Write ``lstmad-<version>.zip`` (the ``lstmad/`` package, sources only) into ``folder``; returns its path."""
    package = Path(lstmad.__file__).resolve().parent
    target = Path(folder) / f"lstmad-{getattr(lstmad, '__version__', '0')}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(package.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix not in (".pyc", ".pyo"):
                archive.write(file, Path("lstmad") / file.relative_to(package))
    tmp.replace(target)
    return target
