"""``lstmad bench night``: one night of a synthetic fleet through the nightly path, as the DAG runs it.

Per fleet size N: a synthetic farm of N turbines × 3 days at 1-minute steps (lstmad.data.synthetic) is landed,
day 1 is prepared and a small forecaster trained on it (setup, not timed), then one fresh process runs the
night of day 3 (day 2 its history) as the nightly DAG does, in one Spark session: prepare → score (flags,
attribution, intervals, commits) → drift. Reported: per-stage wall seconds, the night's wall seconds from
process start, values of the night (N × channels × 1,440) per second per core, and the peak memory of
the process tree (PSS, by process), with its growth per asset beside the night's own data. A line through
the sizes separates the fixed cost of a night from its cost per asset. On a cluster the fixed cost is the
cluster's own (executors start with the application): one small night there measures it, and the
per-asset cost measured here, spread over the cluster's cores, is added.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lstmad.benchmarks.common import finish_json, measured_subprocess

MODULE = "lstmad.benchmarks.night"
FIRST = dt.date(2026, 1, 1)
NIGHT = FIRST + dt.timedelta(days=2)
ROWS_PER_NIGHT = 1440
# the forecaster scores 25 consecutive windows per pass over their rows (model.scoring_chunk): the same AUROC and
# alarm rates as scoring each window alone on SKAB, the synthetic farm and La Haute Borne (docs/training.md)
SCORING_CHUNK = 25


def fleet_config(home: Path, assets: int, channels: int) -> Path:
    """A pipeline config for ``assets`` synthetic turbines and the first ``channels`` of its 26 channels."""
    import yaml

    from lstmad.data.synthetic import CHANNELS

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "demo.yaml").read_text())
    raw.update(pipeline=f"night_{assets}", home=str(home))
    raw["source"]["channels"] = list(CHANNELS[:channels])
    raw["synthetic"].update(turbines=assets, days=3, step_s=60, start=FIRST,
                            icing_episodes_per_turbine=0.15)  # the demo's icing per day (1.5 in 30 days)
    raw["model"].update(detector="lstm_forecaster", hidden_sizes=[32, 16], epochs=2, batch_size=512, patience=1,
                        max_train_windows=20_000, candidates=[], scoring_chunk=SCORING_CHUNK)
    raw["train"].update(start=FIRST, end=FIRST + dt.timedelta(days=1), eval_start=None, eval_end=None, window_days=0, eval_days=0)
    raw["threshold"].update(rule="percentile", percentile=99.0, calibration_share=0.0)
    raw["spark"].update(master="local[*]")
    file = home / f"night_{assets}.yaml"
    home.mkdir(parents=True, exist_ok=True)
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return file


def worker_setup(conf: str) -> dict:
    """Land the farm, prepare day 1 (fitting the normalisation) and train the champion."""
    from lstmad import stages
    from lstmad.config import load_config

    config = load_config(conf)
    started = time.perf_counter()
    stages.generate(config)
    stages.prepare_training_data(config)
    trained = stages.train(config)
    return {"seconds": round(time.perf_counter() - started, 1), "model_version": trained["model_version"]}


def worker_night(conf: str, process_started: str, master: str = "") -> dict:
    """The night of day 3 in this process, one Spark session (on ``master`` when given, a standalone
    cluster's URL): per-stage seconds."""
    from lstmad import stages
    from lstmad.config import load_config
    from lstmad.spark.session import get_session

    cluster = None
    if master:
        from lstmad.packaging import py_files_zip

        # executors import lstmad from the zip Spark ships them, as spark-submit --py-files does, and run this
        # interpreter (the loopback cluster is this machine): PySpark names it to them from PYSPARK_PYTHON
        package = py_files_zip(Path(conf).parent / "dist")
        os.environ["PYSPARK_PYTHON"] = sys.executable
        cluster = {"spark.master": master,
                   "spark.conf": {"spark.driver.host": "127.0.0.1", "spark.executor.memory": "3g",
                                  "spark.submit.pyFiles": str(package)}}
    config = load_config(conf, cluster)
    stage_s: dict[str, float] = {}
    began = time.perf_counter()
    spark = get_session(config.spark, warm_python_workers=True)
    stage_s["spark_session"] = time.perf_counter() - began
    began = time.perf_counter()
    prepared = stages.prepare(config, NIGHT, NIGHT, spark=spark)
    stage_s["prepare"] = time.perf_counter() - began
    began = time.perf_counter()
    scored = stages.score(config, NIGHT, spark=spark)
    stage_s["score_intervals_commit"] = time.perf_counter() - began
    began = time.perf_counter()
    stages.drift(config, NIGHT)
    stage_s["drift"] = time.perf_counter() - began
    return {"stage_seconds": {k: round(v, 2) for k, v in stage_s.items()},
            "night_seconds": round(time.time() - float(process_started), 2),
            "rows_read": prepared["rows_read"], "n_scores": scored["n_scores"], "n_intervals": scored["n_intervals"]}


def sizing(results: list[dict], cores: int) -> dict:
    """Night seconds = fixed + per_asset × N, fitted by least squares over the sizes; what it predicts for
    10,000 and 100,000 assets on this many cores, and the cores a 60-minute night would need (the per-asset
    part spread over the cores, the fixed part not)."""
    n = np.array([r["assets"] for r in results], dtype=float)
    seconds = np.array([r["night_seconds"] for r in results], dtype=float)
    if n.size < 2:
        return {}
    per_asset, fixed = np.polyfit(n, seconds, 1)
    model = {"fixed_s": round(float(fixed), 2), "per_asset_s": round(float(per_asset), 5), "cores": cores}
    if per_asset <= 0 or fixed < 0:
        return {**model, "note": "the sizes are too close for a per-asset cost to show (the fixed cost dominates)"}
    for fleet in (10_000, 100_000):
        model[f"predicted_minutes_{fleet}_assets_here"] = round((fixed + per_asset * fleet) / 60, 1)
        work = per_asset * fleet * cores  # core-seconds of the per-asset part
        model[f"cores_for_a_60_minute_night_{fleet}_assets"] = int(np.ceil(work / max(1.0, 3600 - fixed)))
    return model


def memory_growth(results: list[dict], channels: int) -> dict:
    """How the night's peak memory (PSS of the process tree) grows with the fleet, against the night's own
    data: its values as the source holds them (N × channels × ROWS_PER_NIGHT doubles). The growth per asset
    is taken between the two largest sizes — below some hundreds of assets the fixed parts (a Parquet row
    group, a scoring piece, the JVM's heap) are still filling up to their bounds — in all and for each
    process's own peak (driver, JVM, Python workers). One night per size, so a comparison of two sizes is
    indicative: with the serial collector lstmad gives a small local JVM its peak stayed within 30 MB from
    run to run, with G1 it varied by hundreds of MB (lstmad.spark.session.driver_collector)."""
    sizes = sorted((r for r in results if r.get("peak_pss_mb")), key=lambda r: r["assets"])
    night_mb_per_asset = channels * ROWS_PER_NIGHT * 8 / 2**20
    out = {"night_data_mb_per_asset": round(night_mb_per_asset, 4),
           "peak_pss_mb": {str(r["assets"]): r["peak_pss_mb"] for r in sizes}}
    if len(sizes) < 2:
        return out
    small, large = sizes[-2], sizes[-1]
    extra = large["assets"] - small["assets"]
    per_asset = (large["peak_pss_mb"] - small["peak_pss_mb"]) / extra
    out.update({"between_assets": [small["assets"], large["assets"]],
                "growth_mb_per_asset": round(per_asset, 4),
                "within_the_night_data": per_asset <= night_mb_per_asset,
                "own_peak_growth_mb_per_asset_by_process": {
                    role: round((peak - small["own_peak_pss_by_process_mb"][role]) / extra, 4)
                    for role, peak in large["own_peak_pss_by_process_mb"].items()}})
    return out


def cluster_check(measured: dict, model: dict, local_cores: int, cluster_cores: int,
                  probe: Optional[dict] = None) -> dict:
    """The sizing model's prediction for a night of ``measured["assets"]`` on ``cluster_cores`` cores against
    the night measured on the cluster.

    The per-asset part of the model is spread over the cluster's cores. Its fixed part is the deployment's
    own: with ``probe`` (a night of few assets measured on the same cluster), the probe's night plus the
    per-asset work of the assets it lacks; without one, the fixed cost measured here (which leaves out what
    only a cluster pays: executor JVMs and Python workers started with the application)."""
    n = measured["assets"]
    spread = model["per_asset_s"] * local_cores / cluster_cores  # seconds per asset on the cluster
    local_fixed = model["fixed_s"] + spread * n
    predicted = local_fixed if probe is None else probe["night_seconds"] + spread * (n - probe["assets"])
    check = {**measured, "cluster_cores": cluster_cores, "predicted_night_seconds": round(predicted, 2),
             "measured_over_predicted": round(measured["night_seconds"] / predicted, 3),
             "within_30_percent": abs(measured["night_seconds"] / predicted - 1) <= 0.30,
             "predicted_with_the_local_fixed_cost": round(local_fixed, 2),
             "note": "the cluster's executors start their own JVMs and Python workers without lstmad's preloading "
                     "daemon (local sessions only), and share this machine's cores with the driver; its peak memory "
                     "is the driver's process tree only (the executors are children of the cluster's workers)"}
    if probe is None:
        check["note"] += ("; no smaller size ran on the cluster, so the fixed cost is this machine's, which "
                          "leaves out what only a cluster pays")
    else:
        check["fixed_cost_probe"] = {"assets": probe["assets"], "night_seconds": probe["night_seconds"],
                                     "stage_seconds": probe.get("stage_seconds")}
    return check


def run(json_path: Optional[Path] = None, assets: tuple[int, ...] = (10, 100, 1000), channels: int = 26,
        workdir: Optional[Path] = None, progress: Callable[[str], None] = print,
        cluster_assets: Optional[int] = None, cluster_workers: int = 2) -> dict:
    """Nights of the ``assets`` fleet sizes in fresh processes, the sizing model through them and, with
    ``cluster_assets`` (one of the sizes), that night once more on a loopback standalone cluster of
    ``cluster_workers`` workers sharing this machine's cores, beside what the sizing model predicts for it."""
    cores = os.cpu_count() or 1
    per_worker = max(1, cores // cluster_workers)  # never more cores than the machine has, if it can
    results, on_cluster = [], {}
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        for n in assets:
            conf = fleet_config(Path(scratch) / f"n{n}", n, channels)
            progress(f"bench night: {n} assets: landing 3 days, preparing day 1, training …")
            setup = measured_subprocess(MODULE, "setup", str(conf))
            # the setup's files written back to disk first: a real night's data landed long before it (the
            # kernel writes dirty pages back within about 30 s), and measured right after the setup, a
            # 1,000-asset night spent seconds waiting on that writeback (79 s against 60-67 s after a pause)
            os.sync()
            progress(f"bench night: {n} assets: the night of {NIGHT} …")
            night = measured_subprocess(MODULE, "night", str(conf), repr(time.time()))
            values = n * channels * ROWS_PER_NIGHT
            entry = {"assets": n, "channels": channels, "values": values, "setup_seconds": setup["seconds"],
                     **night, "values_per_s_per_core": round(values / (night["night_seconds"] * cores), 1)}
            results.append(entry)
            progress(f"bench night: {n} assets: {night['night_seconds']} s, "
                     f"{entry['values_per_s_per_core']:,.0f} values/s/core, peak {night['peak_pss_mb']} MB (PSS)")
            # on the cluster: the checked size, and the smallest as the probe of the cluster's fixed cost
            if cluster_assets is not None and n in (cluster_assets, min(assets)):
                from lstmad.spark.loopback_cluster import loopback_cluster

                progress(f"bench night: {n} assets on a loopback cluster of {cluster_workers} workers × "
                         f"{per_worker} cores …")
                with loopback_cluster(Path(scratch) / "cluster", cluster_workers, per_worker) as master:
                    again = measured_subprocess(MODULE, "night", str(conf), repr(time.time()), master)
                on_cluster[n] = {"assets": n, **again}
    largest = max(results, key=lambda r: r["assets"])
    result = {"values_per_s_per_core": largest["values_per_s_per_core"], "assets": largest["assets"],
              "definition": "assets × channels × rows of the night ÷ (wall seconds of the night's process × cores)",
              "sizes": results, "sizing": sizing(results, cores), "memory": memory_growth(results, channels)}
    if cluster_assets in on_cluster and "per_asset_s" in result["sizing"]:
        probe = on_cluster.get(min(assets)) if min(assets) != cluster_assets else None
        result["cluster_check"] = cluster_check(on_cluster[cluster_assets], result["sizing"], cores,
                                                per_worker * cluster_workers, probe)
    elif cluster_assets in on_cluster:
        result["cluster_check"] = {**on_cluster[cluster_assets], "note": "no sizing model to check (one size only)"}
    return finish_json(result, json_path)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    print(json.dumps({"setup": worker_setup, "night": worker_night}[command](*arguments)))
