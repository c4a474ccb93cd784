"""What the benchmarks share: the detector line-up, data location, and the JSON / Markdown / PNG report."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lstmad.detectors import (
    IAELSTMKLDetector,
    IsolationForestDetector,
    LSTMAutoencoderDetector,
    LSTMForecasterDetector,
    PCAT2QDetector,
)
from lstmad.detectors.iae_lstm_kl import VARIANTS

DetectorFactory = Callable[[], object]


class DataMissingError(FileNotFoundError):
    """A benchmark's data set is not where the configuration says."""


PROFILE_MODELS = ("small", "tuned", "authors_small")  # lstmad.detectors.variants.PROFILES


MEAN_STEPS = 13  # residual_steps of the *_mean forecasters: half of the benchmarks' 26-row windows


def deep_detectors(profile: str = "small", epochs: int = 10, seed: int = 0, device: str = "auto",
                   variants: Optional[list[str]] = None) -> dict[str, DetectorFactory]:
    """IAE-LSTM-KL and its ablations, plus the LSTM forecaster and LSTM-AE, as fresh-detector factories."""
    factories: dict[str, DetectorFactory] = {}
    for name in variants or list(VARIANTS):
        factories[name] = (lambda n=name: IAELSTMKLDetector.variant(
            n, profile, epochs=epochs, pretrain_epochs=max(2, epochs // 2), seed=seed, device=device))
    # IAE-LSTM-KL under another profile than ``profile``, side by side: "iae_lstm_kl_soft@authors_small"
    for other in PROFILE_MODELS:
        for name in ("iae_lstm_kl_soft", "iae_lstm_kl_hard"):
            factories[f"{name}@{other}"] = (lambda n=name, o=other: IAELSTMKLDetector.variant(
                n, o, epochs=epochs, pretrain_epochs=max(2, epochs // 2), seed=seed, device=device))
    factories["lstm_forecaster"] = lambda: LSTMForecasterDetector(epochs=epochs, seed=seed, device=device)
    factories["lstm_forecaster_mahalanobis"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, error_model="mahalanobis")
    # scored by the mean residual of the last half of their (26-row) windows' rows
    factories["lstm_forecaster_mean"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, residual_steps=MEAN_STEPS)
    factories["lstm_forecaster_mahalanobis_mean"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, error_model="mahalanobis", residual_steps=MEAN_STEPS)
    # the same, a window scoring at least what its stillest channel's stillness is worth (model.frozen_channels)
    factories["lstm_forecaster_mahalanobis_mean_frozen"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, error_model="mahalanobis", residual_steps=MEAN_STEPS,
        frozen_channels=True)
    # the same with each channel's root-mean-square residual beside the mean (model.residual_spread)
    factories["lstm_forecaster_mahalanobis_mean_frozen_spread"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, error_model="mahalanobis", residual_steps=MEAN_STEPS,
        frozen_channels=True, residual_spread=True)
    # the same with one error Gaussian per operating regime (model.error_regimes)
    factories["lstm_forecaster_mahalanobis_mean_regimes"] = lambda: LSTMForecasterDetector(
        epochs=epochs, seed=seed, device=device, error_model="mahalanobis", residual_steps=MEAN_STEPS,
        error_regimes=10)
    factories["lstm_ae"] = lambda: LSTMAutoencoderDetector(epochs=epochs, seed=seed, device=device)
    return factories


def calibrated_on(cross_fit_folds: int, otherwise: str) -> str:
    """What a benchmark's threshold was calibrated on: out-of-fold scores (threshold.cross_fit_folds), else
    ``otherwise``."""
    return f"out-of-fold scores ({cross_fit_folds} folds)" if cross_fit_folds else otherwise


def classical_detectors(seed: int = 0) -> dict[str, DetectorFactory]:
    # validation_share 0: the protocols fit the baselines on all of their training rows
    return {"pca_t2q": lambda: PCAT2QDetector(validation_share=0.0),
            "isolation_forest": lambda: IsolationForestDetector(seed=seed, validation_share=0.0)}


def operator_metrics(timestamps_us: np.ndarray, assets: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                     threshold: float, rules, criticality_steps: int) -> dict[str, float]:
    """What an operator receives beside AUROC/F1, for any benchmark: VUS-ROC and VUS-PR of the scores, the
    intervals the alarm ``rules`` form above ``threshold`` judged against the labelled events (events found,
    alarms on an event, false intervals per asset-week, delay) and CARE; inputs (n,), labels in {0, 1}."""
    from lstmad.evaluation.care import care_score
    from lstmad.evaluation.metrics import alarm_event_metrics
    from lstmad.evaluation.vus import vus_metrics

    order = np.lexsort((timestamps_us, assets))
    timestamps_us, assets = np.asarray(timestamps_us)[order], np.asarray(assets, dtype=object)[order]
    labels, scores = np.asarray(labels)[order], np.asarray(scores, dtype=np.float64)[order]
    events = alarm_event_metrics(timestamps_us, assets, labels, scores, threshold, rules)
    care = care_score(timestamps_us, assets, labels, scores > threshold, criticality_steps)
    finite = np.isfinite(scores)
    return {**vus_metrics(labels[finite], scores[finite]),
            **{k: events[k] for k in ("interval_recall", "interval_precision", "false_intervals_per_asset_week",
                                      "detection_delay_min")}, "care": care["care"]}


def by_asset(assets: np.ndarray, flags: np.ndarray, normal: np.ndarray, spans: dict, events: dict,
             weeks_per_asset: float) -> dict:
    """{asset: {"far", "false_intervals_per_asset_week"}}: the realized false-alarm rate of each asset's (n,)
    ``flags`` on its ``normal`` rows and its false intervals per week, for fleets whose assets may differ
    (``threshold.per_asset``); ``spans`` and ``events`` are {asset: [(start_us, end_us), ...]}."""
    from lstmad.evaluation.metrics import judge_intervals

    out = {}
    for asset in sorted(set(np.asarray(assets).tolist())):
        mine = (assets == asset) & normal
        judged = judge_intervals({asset: spans.get(asset, [])}, {asset: events.get(asset, [])}, weeks_per_asset)
        out[str(asset)] = {"far": float(flags[mine].mean()) if mine.any() else math.nan,
                           "false_intervals_per_asset_week": judged["false_intervals_per_asset_week"]}
    return out


def low_high(per_asset: dict, key: str, scale: float = 1.0, unit: str = "") -> str:
    """"lowest–highest" of ``key`` over the assets of a by_asset result (× ``scale``; NaN left out)."""
    values = [scale * v[key] for v in per_asset.values() if v[key] == v[key]]
    return f"{min(values):.2f}–{max(values):.2f}{unit}" if values else "–"


def stored_results(lake: Path, version: str):
    """What the pipeline wrote for model ``version``: (its anomaly_scores rows sorted by asset and time, its
    anomaly_intervals as {asset: [(start_us, end_us), ...]}), for benchmarks that judge the tables."""
    import pyarrow.compute as pc

    from lstmad import names
    from lstmad.io import lakehouse

    scores = lakehouse.read_table(lake, names.ANOMALY_SCORES)
    scores = scores.filter(pc.equal(scores.column(names.MODEL_VERSION), version)) \
        .sort_by([(names.ASSET, "ascending"), (names.TIMESTAMP, "ascending")])
    intervals = lakehouse.read_table(lake, names.ANOMALY_INTERVALS)
    intervals = intervals.filter(pc.equal(intervals.column(names.MODEL_VERSION), version))
    spans: dict = {}
    for asset, start, end in zip(intervals.column(names.ASSET).to_pylist(),
                                 intervals.column("start").cast("int64").to_pylist(),
                                 intervals.column("end").cast("int64").to_pylist()):
        spans.setdefault(asset, []).append((start, end))
    return scores, spans


class WorkerFailed(RuntimeError):
    """A measured worker exited with an error; ``peak_rss_mb`` is what it reached, ``reason`` its last line."""

    def __init__(self, worker: str, stderr: str, peak_rss_mb: float):
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        self.reason = lines[-1] if lines else "no error output"
        self.peak_rss_mb = peak_rss_mb
        super().__init__(f"bench worker {worker} failed:\n{stderr[-3000:]}")


# How often the process tree's memory is sampled. Every 50 ms slowed a 1,000-asset night from 65 s to 115 s
# (each sample walks /proc for the tree and reads every process's memory, JVM and Python workers included).
SAMPLE_S = 0.5


PROCESS_ROLES = ("driver", "jvm", "python_workers")


def process_role(process, root_pid: int) -> str:
    """What a process of a measured tree is: "driver" (the worker run by measured_subprocess), "jvm" (Spark's
    JVM and anything else Java), or "python_workers" (PySpark's daemon and workers, and other children)."""
    if process.pid == root_pid:
        return "driver"
    name = process.name().lower()
    return "jvm" if name.startswith("java") else "python_workers"


def tree_memory(root) -> tuple[int, dict[str, int]]:
    """(summed RSS, summed PSS by process_role) in bytes of ``root`` (a psutil.Process) and its descendants.
    PSS (proportional set size) counts a page shared by k processes as 1/k in each — PySpark's workers are
    forked from one daemon and share its pages, which a sum of RSS counts once per worker; where PSS cannot
    be read (no /proc/PID/smaps), RSS stands in."""
    import psutil

    rss, pss = 0, {}
    for process in [root, *root.children(recursive=True)]:
        try:
            resident = process.memory_info().rss
            try:
                proportional = process.memory_full_info().pss
            except (AttributeError, psutil.AccessDenied):
                proportional = resident
            role = process_role(process, root.pid)
        except psutil.Error:  # ended between the listing and the reading
            continue
        rss += resident
        pss[role] = pss.get(role, 0) + proportional
    return rss, pss


def measured_subprocess(module: str, worker: str, *args: str) -> dict:
    """Run ``python -m module worker args…`` in a fresh process and parse the JSON line it prints last; adds
    the peak memory of its whole process tree (JVM and Python workers included), sampled every SAMPLE_S
    seconds: ``peak_rss_mb`` (resident sets summed: pages shared by forked workers counted in each),
    ``peak_pss_mb`` (proportional sets summed: each page once — what the tree occupies),
    ``peak_pss_by_process_mb``, that peak's split over driver, JVM and Python workers (tree_memory), and
    ``own_peak_pss_by_process_mb``, each of the three's own peak (reached at different times)."""
    import subprocess
    import sys
    import threading
    import time

    import psutil

    process = subprocess.Popen([sys.executable, "-m", module, worker, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    peak_rss, peak_pss, peak_split, own_peaks = 0, 0, {}, {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_rss, peak_pss, peak_split
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                rss, pss = tree_memory(root)
            except psutil.Error:
                rss, pss = 0, {}
            peak_rss, total = max(peak_rss, rss), sum(pss.values())
            if total > peak_pss:
                peak_pss, peak_split = total, pss
            for role, size in pss.items():
                own_peaks[role] = max(own_peaks.get(role, 0), size)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise WorkerFailed(worker, err, round(peak_rss / 2**20, 1))
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak_rss / 2**20, 1)
    result["peak_pss_mb"] = round(peak_pss / 2**20, 1)
    result["peak_pss_by_process_mb"] = {role: round(peak_split.get(role, 0) / 2**20, 1) for role in PROCESS_ROLES}
    result["own_peak_pss_by_process_mb"] = {role: round(own_peaks.get(role, 0) / 2**20, 1)
                                            for role in PROCESS_ROLES}
    return result


def machine() -> dict:
    """Where a benchmark ran. ``torch_threads`` belongs to it: convolutions and the SVDD family's reductions
    sum in another order with another thread count, so their figures reproduce to the digit only with the same
    count (docs/benchmarks.md, SKAB)."""
    import torch

    return {"date": dt.date.today().isoformat(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def finish_json(result: dict, json_path: Optional[Path]) -> dict:
    """Add the machine to a speed bench's result and write it to ``json_path`` when one is given."""
    result["machine"] = machine()
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2, default=str))
    return result


def write_report(name: str, result: dict, json_path: Path, markdown: str, figures: dict[str, Callable]) -> dict:
    """Write ``json_path``, a Markdown table beside it (.md) and one PNG per figure (name → draw(ax))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    result = {**result, "benchmark": name, "machine": machine()}
    json_path.write_text(json.dumps(result, indent=2, default=_jsonable))
    json_path.with_suffix(".md").write_text(markdown)
    written = {"json": str(json_path), "markdown": str(json_path.with_suffix(".md"))}
    for figure_name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(8, 4.5))
        draw(ax)
        fig.tight_layout()
        path = json_path.with_name(f"{json_path.stem}_{figure_name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[figure_name] = str(path)
    result["files"] = written
    return result


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return str(value)


def fmt(value: Optional[float], digits: int = 3, percent: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.{digits}f}"
