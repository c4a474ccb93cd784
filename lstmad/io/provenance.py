"""Where a trained model's code came from: the git commit of lstmad's own checkout and the package version."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """The commit of the code that trained (with "+dirty" for uncommitted changes), or "unknown" outside a
    git checkout (an installed package, a cluster's zip)."""
    package = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        if Path(top).resolve() != package.parent:  # installed inside some other repository: not our commit
            return "unknown"
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=package,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def lstmad_version() -> str:
    from lstmad import __version__

    return __version__
