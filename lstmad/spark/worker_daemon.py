"""Spark's Python worker daemon with lstmad's libraries imported before it forks the workers.

Spark starts its Python workers by forking this daemon (``spark.python.daemon.module``). PySpark's own
daemon imports almost nothing, so every worker imported NumPy, pandas, pyarrow, torch and lstmad's prepare
and scoring code anew when it unpickled its first task: on a 1,000-asset night that was about 12 s of CPU
across the workers (docs/benchmarks.md, bench night). Forked from here they start with them loaded.

Set only for local masters (lstmad.spark.session), where the workers run the driver's interpreter and
lstmad is importable by construction; on a cluster it is the cluster's choice (``spark.conf``).
"""

from __future__ import annotations


def preload() -> None:
    """Import what prepare and scoring tasks use; a library that is missing is left to fail where used."""
    import importlib

    for module in ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "pyarrow.compute", "torch",
                   "lstmad.spark.prepare", "lstmad.spark.score", "lstmad.serving.bundle", "lstmad.serving.scoring",
                   "lstmad.detectors", "lstmad.io.lakehouse"):
        try:
            importlib.import_module(module)
        except Exception:  # pragma: no cover - absent or broken (torch's CUDA libraries): the task says so
            pass


if __name__ == "__main__":
    preload()
    from pyspark.daemon import manager

    manager()
