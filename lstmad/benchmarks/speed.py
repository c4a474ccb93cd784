"""Scoring and training throughput: in-process loop, Spark, GPU, and PyOD's LSTMAD on the same series.

    lstmad bench score --json docs/benchmarks/score.json
    lstmad bench train --json docs/benchmarks/train.json

The archive is a synthetic multichannel series written as tensor blocks (one Parquet file per date, every
asset). Every measurement runs in a fresh process whose peak resident memory is sampled over its process
tree. lstmad streams the archive from Parquet one date file at a time; PyOD's LSTMAD takes the series as one
array and builds every window in memory (float64), so its memory grows with the archive.

Profiles: ``lstm_forecaster`` has PyOD LSTMAD's architecture (2 stacked LSTM layers of 64, next-step
prediction), so that comparison is like for like; ``lstm_autoencoder`` (EncDec-AD, 64) and
``iae_lstm_kl_small`` are lstmad's other deep detectors.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lstmad.benchmarks.common import WorkerFailed, finish_json, measured_subprocess

MODULE = "lstmad.benchmarks.speed"
WINDOW, CHANNELS, STEP_S = 26, 4, 600
ROWS_PER_DAY = 86_400 // STEP_S
PROFILES = ("lstm_forecaster", "lstm_autoencoder", "iae_lstm_kl_small")
# Peaks (TFLOP/s, dense) of the cards this project may be lent, from NVIDIA's data sheets: FP32 on CUDA cores,
# TF32 and BF16 on tensor cores. Scoring runs in fp32 (cuDNN may use TF32 tensor cores for the LSTM).
GPU_PEAKS_TFLOPS = {"H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
                    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
                    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0},
                    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}}


def gpu_peaks(name: str) -> Optional[dict]:
    """The peak table entry of a CUDA device name ("NVIDIA H100 80GB HBM3" is the SXM card)."""
    if "H200" in name:
        return GPU_PEAKS_TFLOPS["H200"]
    if "H100" in name:
        return GPU_PEAKS_TFLOPS["H100 PCIe" if "PCIe" in name else "H100 NVL" if "NVL" in name else "H100 SXM"]
    return None


def new_detector(profile: str, epochs: int = 1, batch_size: int = 256, device: str = "cpu"):
    from lstmad.detectors import IAELSTMKLDetector, LSTMAutoencoderDetector, LSTMForecasterDetector

    common = dict(epochs=epochs, batch_size=batch_size, patience=epochs + 1, seed=0, device=device)
    if profile == "lstm_forecaster":
        return LSTMForecasterDetector(hidden_sizes=(64, 64), dropout=0.0, **common)
    if profile == "lstm_autoencoder":
        return LSTMAutoencoderDetector(hidden=64, **common)
    if profile == "iae_lstm_kl_small":
        return IAELSTMKLDetector.variant("iae_lstm_kl_soft", "small", pretrain_epochs=epochs, **common)
    raise ValueError(f"unknown profile {profile!r}; known: {PROFILES}")


# ------------------------------------------------------------------------------------------------- archive


def bench_stats():
    """Identity z-score statistics: the series is generated at normalised scale."""
    from lstmad.transforms.series import NormalisationStats

    return NormalisationStats("zscore", tuple(f"c{i}" for i in range(CHANNELS)), (0.0,) * CHANNELS,
                              (1.0,) * CHANNELS, "bench")


def series(rows: int, assets: int, seed: int = 0) -> np.ndarray:
    """(assets, rows, C) float32: daily and slower cycles plus noise, normalised-scale values."""
    t = np.arange(rows, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((assets, rows, CHANNELS), dtype=np.float32)
    for a in range(assets):
        phase = rng.uniform(0, 2 * np.pi, CHANNELS)
        periods = np.array([ROWS_PER_DAY, ROWS_PER_DAY / 3, 7 * ROWS_PER_DAY, 97.0])
        out[a] = np.sin(2 * np.pi * t[:, None] / periods + phase) + 0.1 * rng.normal(size=(rows, CHANNELS))
    return out


def build_archive(windows: int, folder: Path, assets: int = 8) -> dict:
    """Tensor blocks of about ``windows`` windows (W=26, C=4, 10-minute steps): ``assets`` assets, as many
    days as needed, one file per date. Returns {"windows", "days", "assets"}; the asset-concatenated rows,
    PyOD's input, are saved beside them as series.npy."""
    from lstmad import names
    from lstmad.dates import DAY_US, MICROS
    from lstmad.transforms.blocks import BLOCK_SCHEMA, build_blocks, windows_in_block
    from lstmad.transforms.series import segment_ids

    days = max(2, int(np.ceil(windows / (assets * ROWS_PER_DAY))))
    rows = days * ROWS_PER_DAY
    values = series(rows, assets)
    start_us = 20454 * DAY_US  # 2026-01-01
    ts = start_us + np.arange(rows, dtype=np.int64) * STEP_S * MICROS
    per_day: dict[int, list[dict]] = {}
    for a in range(assets):
        for block in build_blocks(f"T{a:02d}", ts, values[a], segment_ids(ts, STEP_S), None, WINDOW, 4096, STEP_S,
                                  bench_stats().stats_id, int(ts[0]), int(ts[-1]) + 1):
            own = (block[names.BLOCK_START] + block[names.N_HISTORY] * STEP_S * MICROS) // DAY_US
            per_day.setdefault(int(own), []).append(block)
    total = 0
    for day, blocks in sorted(per_day.items()):
        date = np.datetime64(int(day), "D").astype(str)
        target = folder / "tensors" / f"{names.DATE}={date}"
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(blocks, schema=BLOCK_SCHEMA), target / "part-0.parquet")
        total += sum(windows_in_block(b[names.N_ROWS], WINDOW) for b in blocks)
    np.save(folder / "series.npy", values.reshape(-1, CHANNELS))
    info = {"windows": total, "days": days, "assets": assets}
    (folder / "archive.json").write_text(json.dumps(info))
    return info


def archive_of(folder: Path, windows: int) -> tuple[Path, dict]:
    """The archive of about ``windows`` windows under ``folder`` (built once)."""
    target = folder / f"n{windows}"
    if not (target / "archive.json").exists():
        build_archive(windows, target)
    return target, json.loads((target / "archive.json").read_text())


def train_model(profile: str, folder: Path, device: str = "cpu") -> Path:
    """A model of ``profile`` fitted briefly on 4,096 windows (speed does not depend on the weights), saved as
    a bundle for the scoring workers."""
    from lstmad.serving.bundle import ModelBundle
    from lstmad.transforms.blocks import Windows

    values = series(4096 + WINDOW, 1, seed=1)[0]
    windows = Windows.from_array(np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0)
                                 .transpose(0, 2, 1)[:4096])
    detector = new_detector(profile, epochs=1, device=device).fit(windows).to("cpu")
    stats = bench_stats()
    bundle = ModelBundle(detector, stats.channels, WINDOW, STEP_S, stats, 1.0, "percentile", 0.05, {})
    return bundle.save(folder / "models" / profile)


def lstm_flops(module, inputs: tuple) -> int:
    """Multiply-add FLOPs (2 per MAC, biases included, gate nonlinearities not) of one nn.LSTM call: per
    time step and layer 2·4H·(I + H) + 2·4H, for the batch and sequence of ``inputs[0]``."""
    x = inputs[0]
    batch, steps = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
    hidden, directions = module.hidden_size, 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        width = module.input_size if layer == 0 else hidden * directions
        total += directions * (2 * 4 * hidden * (width + hidden) + 2 * 4 * hidden)
    return total * batch * steps


def flops_per_window(profile: str, model_dir: Path) -> float:
    """FLOPs of one window's scoring forward pass, over a batch of 256: torch.utils.flop_counter for
    matrix products and convolutions, plus lstm_flops for nn.LSTM (its fused kernel is not counted there)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lstmad.serving.bundle import ModelBundle
    from lstmad.transforms.blocks import Windows

    detector = ModelBundle.load(model_dir).detector
    lstm_paths = [path for path, m in detector.network_.named_modules() if isinstance(m, torch.nn.LSTM)]
    counted = []
    hooks = [m.register_forward_hook(lambda m, i, o: counted.append(lstm_flops(m, i)))
             for m in detector.network_.modules() if isinstance(m, torch.nn.LSTM)]
    batch = Windows.from_array(series(256 + WINDOW, 1)[0][np.arange(256)[:, None] + np.arange(WINDOW)])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        detector.score(batch, 256)
    for hook in hooks:
        hook.remove()
    # where an LSTM runs as separate matrix products (no fused kernel), the counter saw them: count them once
    inside_lstms = sum(sum(ops.values()) for module, ops in counter.get_flop_counts().items()
                       if any(module.endswith("." + path) for path in lstm_paths))
    return (counter.get_total_flops() - inside_lstms + sum(counted)) / 256


# ------------------------------------------------------------------------------------------------- workers


def _dates(tensors: Path) -> list[str]:
    return sorted(p.name.split("=", 1)[1] for p in tensors.glob("date=*"))


def worker_score_inprocess(folder: str, profile: str, batch_size: str, device: str) -> dict:
    """Score the archive in this process, one date file at a time (score_blocks: what each Spark task runs)."""
    from lstmad.serving.bundle import ModelBundle
    from lstmad.serving.scoring import score_blocks

    bundle = ModelBundle.load(Path(folder) / "models" / profile)
    bundle.detector.to(device)
    stats = {bundle.stats.stats_id: bundle.stats}
    files = sorted((Path(folder) / "tensors").glob("date=*/*.parquet"))
    started = time.perf_counter()
    n = 0
    for file in files:
        n += score_blocks(bundle, pq.read_table(file), stats, int(batch_size)).num_rows
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"windows": n, "seconds": round(seconds, 3), "windows_per_s": round(n / seconds, 1)}


def worker_score_spark(folder: str, profile: str, batch_size: str, master: str) -> dict:
    """Score the archive through Spark (file_scores, as lstmad.stages.score; model broadcast once). The session's
    start-up and a one-date warm-up job (worker start, torch import, model load) are reported apart;
    cold_windows_per_s counts the warm-up in."""
    from lstmad.config import SparkConfig
    from lstmad.spark import score as transforms
    from lstmad.spark.session import get_session

    started = time.perf_counter()
    spark = get_session(SparkConfig(master=master, shuffle_partitions=2, driver_memory="2g"))
    session_s = time.perf_counter() - started
    from lstmad.serving.bundle import ModelBundle

    model_dir = Path(folder) / "models" / profile
    bundle_stats = ModelBundle.load(model_dir).stats
    stats = {bundle_stats.stats_id: bundle_stats.to_dict()}
    tensors = Path(folder) / "tensors"
    payload = spark.sparkContext.broadcast(transforms.model_payload(model_dir))
    files = [str(f) for f in sorted(tensors.glob("date=*/*.parquet"))]

    def job(some: list[str]) -> int:
        return transforms.file_scores(spark, some, profile, payload, stats, int(batch_size)).count()

    # Warm-up on one date: starts the Python workers, imports torch and loads the model in each, once per
    # session however large the archive; reported apart as the fixed cost.
    started = time.perf_counter()
    job(files[:1])
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    n = job(files)
    seconds = time.perf_counter() - started
    spark.stop()
    return {"windows": n, "seconds": round(seconds, 3), "windows_per_s": round(n / seconds, 1),
            "session_start_s": round(session_s, 3), "warmup_s": round(warmup_s, 3),
            "cold_windows_per_s": round(n / (seconds + warmup_s), 1)}


def worker_score_pyod(folder: str, windows: str, batch_size: str) -> dict:
    """PyOD's LSTMAD (same architecture as the lstm_forecaster profile): fit briefly, then time
    decision_function on the first ``windows`` windows of the asset-concatenated series."""
    from pyod.models.ts_lstm import LSTMAD

    values = np.load(Path(folder) / "series.npy", mmap_mode="r")
    window_size = WINDOW - 1  # PyOD's window is the context; lstmad's window includes the predicted row
    model = LSTMAD(window_size=window_size, hidden_size=64, n_layers=2, epochs=1, batch_size=int(batch_size))
    model.fit(np.asarray(values[:4096 + window_size]))
    target = np.asarray(values[:int(windows) + window_size], dtype=np.float64)
    started = time.perf_counter()
    # LSTMAD.decision_function has no batch size: it builds every window (float64) and runs one forward pass
    scores = model.decision_function(target)
    seconds = time.perf_counter() - started
    n = int(windows)
    assert scores.shape[0] == target.shape[0]
    return {"windows": n, "seconds": round(seconds, 3), "windows_per_s": round(n / seconds, 1)}


def worker_train_inprocess(folder: str, profile: str, epochs: str, batch_size: str, device: str) -> dict:
    """Fit ``profile`` on every window of the archive held in memory (the default train path)."""
    import torch

    from lstmad.io.tensor_store import read_blocks
    from lstmad.transforms.blocks import windows_from_blocks

    tensors = Path(folder) / "tensors"
    windows = windows_from_blocks(read_blocks(tensors, _dates(tensors)), WINDOW)
    detector = new_detector(profile, int(epochs), int(batch_size), device)
    started = time.perf_counter()
    detector.fit(windows)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return _rates(detector.history_, seconds)


def _rates(history: list[dict], seconds: float) -> dict:
    """Windows trained (every epoch, both phases for IAE) per second of the whole fit, and per second of the
    epochs alone (steady state: without start-up, counting and post-fit scoring)."""
    trained = sum(h["windows"] for h in history)
    in_epochs = sum(h["seconds"] for h in history)
    return {"windows": trained, "seconds": round(seconds, 3), "windows_per_s": round(trained / seconds, 1),
            "epoch_windows_per_s": round(trained / in_epochs, 1), "epochs": len(history)}


def worker_train_spark(folder: str, profile: str, epochs: str, batch_size: str, processes: str) -> dict:
    """Fit ``profile`` with TorchDistributor (local mode, ``processes`` CPU ranks, gloo), each rank streaming
    its shard of the block files."""
    from lstmad.config import SparkConfig
    from lstmad.io.tensor_store import block_files
    from lstmad.spark.session import get_session
    from lstmad.training.distributed import ShardedData, fit_distributed, split_by_date

    spark = get_session(SparkConfig(master=f"local[{processes}]", shuffle_partitions=2, driver_memory="1g"))
    tensors = Path(folder) / "tensors"
    train, validation = split_by_date(block_files(tensors, _dates(tensors)), 0.2)
    detector = new_detector(profile, int(epochs), int(batch_size))
    threads = max(1, (os.cpu_count() or 1) // int(processes))
    started = time.perf_counter()
    _, summary = fit_distributed(detector, ShardedData(tuple(train), tuple(validation), WINDOW), int(processes),
                                 threads=threads)
    seconds = time.perf_counter() - started
    spark.stop()
    return {**_rates(summary["history"], seconds), "processes": summary["world_size"]}


def worker_train_pyod(folder: str, windows: str, epochs: str, batch_size: str) -> dict:
    """PyOD LSTMAD.fit on the first ``windows`` windows of the series (it also scores them at the end, as
    fit does; that part is timed with it)."""
    from pyod.models.ts_lstm import LSTMAD

    values = np.load(Path(folder) / "series.npy", mmap_mode="r")
    window_size = WINDOW - 1
    target = np.asarray(values[:int(windows) + window_size], dtype=np.float64)
    model = LSTMAD(window_size=window_size, hidden_size=64, n_layers=2, epochs=int(epochs), batch_size=int(batch_size))
    started = time.perf_counter()
    model.fit(target)
    seconds = time.perf_counter() - started
    trained = int(windows) * int(epochs)
    return {"windows": trained, "seconds": round(seconds, 3), "windows_per_s": round(trained / seconds, 1)}


WORKERS: dict[str, Callable[..., dict]] = {
    "score_inprocess": worker_score_inprocess, "score_spark": worker_score_spark, "score_pyod": worker_score_pyod,
    "train_inprocess": worker_train_inprocess, "train_spark": worker_train_spark, "train_pyod": worker_train_pyod,
}


def measured(worker: str, *args) -> dict:
    return measured_subprocess(MODULE, worker, *map(str, args))


def measured_or_failure(worker: str, *args) -> dict:
    """measured(), or {"windows_per_s": None, "error", "peak_rss_mb"} when the worker fails (PyOD runs out
    of memory on large archives: that is a result, not a crash of the bench)."""
    try:
        return measured(worker, *args)
    except WorkerFailed as failure:
        return {"windows_per_s": None, "error": failure.reason[:300], "peak_rss_mb": failure.peak_rss_mb}


# ------------------------------------------------------------------------------------------------- runs


def _gpu() -> Optional[dict]:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return {"name": name, "peaks_tflops": gpu_peaks(name)}


def _headline(result: dict, profile: str) -> None:
    """The issue's top-level keys, from the profile PyOD is compared with."""
    p = result["profiles"][profile]
    # the largest archive PyOD could score (it builds every window in memory and may not manage the largest)
    completed = [g for g in result["pyod_growth"] if g["pyod_windows_per_s"] is not None]
    largest = completed[-1] if completed else {}
    failed = [g for g in result["pyod_growth"] if g["pyod_windows_per_s"] is None]
    result.update({
        "comparison_windows": largest.get("windows"),
        "pyod_failed_at_windows": failed[0]["windows"] if failed else None,
        "inprocess_windows_per_s": p["inprocess"]["windows_per_s"],
        "spark_windows_per_s": (p.get("spark") or {}).get("windows_per_s"),
        "gpu_windows_per_s": (p.get("gpu") or {}).get("windows_per_s"),
        "peak_rss_mb": largest.get("lstmad_peak_rss_mb", p["inprocess"]["peak_rss_mb"]),
        "peak_rss_mb_at_largest": (result["pyod_growth"][-1]["lstmad_peak_rss_mb"] if result["pyod_growth"]
                                   else None),
        "pyod_windows_per_s": largest.get("pyod_windows_per_s"),
        "pyod_peak_rss_mb": largest.get("pyod_peak_rss_mb"),
    })


def run_score(json_path: Optional[Path] = None, windows: int = 100_000, pyod_sizes: tuple[int, ...] = (
        100_000, 300_000, 1_000_000), profiles: tuple[str, ...] = PROFILES, batch_size: int = 4096,
        workdir: Optional[Path] = None, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Scoring windows/s per profile (in-process, Spark local[*], GPU), and lstmad against PyOD's LSTMAD as
    the archive grows through ``pyod_sizes``."""
    gpu = _gpu()
    folder = Path(workdir or tempfile.mkdtemp(prefix="lstmad-bench-speed-"))
    progress(f"archive: {windows:,} windows of {WINDOW}×{CHANNELS} ...")
    main, archive = archive_of(folder, windows)
    result: dict = {"bench": "score", "window": WINDOW, "channels": CHANNELS, "batch_size": batch_size,
                    "device": gpu["name"] if gpu else "cpu", "cpus": os.cpu_count(), "archive": archive,
                    "profiles": {}, "pyod_growth": []}
    for profile in profiles:
        progress(f"{profile}: model, FLOPs, in-process and Spark scoring of {archive['windows']:,} windows ...")
        model_dir = train_model(profile, main)
        entry: dict = {"flops_per_window": round(flops_per_window(profile, model_dir))}
        entry["inprocess"] = measured("score_inprocess", main, profile, batch_size, "cpu")
        entry["spark"] = measured("score_spark", main, profile, batch_size, f"local[{os.cpu_count()}]")
        entry["spark_overhead"] = round(1 - entry["spark"]["windows_per_s"] / entry["inprocess"]["windows_per_s"], 3)
        entry["cpu_achieved_gflops"] = round(entry["inprocess"]["windows_per_s"] * entry["flops_per_window"] / 1e9, 2)
        entry["gpu"] = None
        if gpu:
            entry["gpu"] = {**measured("score_inprocess", main, profile, 65536, "cuda"), "batch_size": 65536}
            achieved = entry["gpu"]["windows_per_s"] * entry["flops_per_window"] / 1e12
            entry["gpu"]["achieved_tflops"] = round(achieved, 3)
            for kind, peak in (gpu["peaks_tflops"] or {}).items():
                entry["gpu"][f"share_of_{kind}_peak"] = round(achieved / peak, 5)
        result["profiles"][profile] = entry
    forecaster_dir = main / "models" / "lstm_forecaster"
    if not forecaster_dir.exists():
        train_model("lstm_forecaster", main)
    for size in pyod_sizes:
        progress(f"growth: lstmad and PyOD LSTMAD scoring {size:,} windows ...")
        sized, _ = archive_of(folder, size)
        (sized / "models").mkdir(exist_ok=True)
        if not (sized / "models" / "lstm_forecaster").exists():
            os.symlink(forecaster_dir, sized / "models" / "lstm_forecaster")
        ours = measured("score_inprocess", sized, "lstm_forecaster", batch_size, "cpu")
        theirs = measured_or_failure("score_pyod", sized, ours["windows"], 256)
        result["pyod_growth"].append({"windows": ours["windows"], "lstmad_windows_per_s": ours["windows_per_s"],
                                      "lstmad_peak_rss_mb": ours["peak_rss_mb"],
                                      "pyod_windows_per_s": theirs["windows_per_s"],
                                      "pyod_peak_rss_mb": theirs["peak_rss_mb"], "pyod_error": theirs.get("error")})
    _headline(result, "lstm_forecaster" if "lstm_forecaster" in profiles else profiles[0])
    return finish_json(result, json_path)


def run_train(json_path: Optional[Path] = None, windows: int = 100_000, pyod_sizes: tuple[int, ...] = (100_000,),
              profiles: tuple[str, ...] = PROFILES, epochs: int = 1, batch_size: int = 256, processes: int = 2,
              workdir: Optional[Path] = None, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Training windows/s per profile: in memory in one process, TorchDistributor with ``processes`` CPU
    ranks streaming shards (distributable profiles), GPU where present; PyOD LSTMAD.fit at ``pyod_sizes``."""
    from lstmad.training.distributed import DISTRIBUTABLE

    gpu = _gpu()
    root = Path(workdir or tempfile.mkdtemp(prefix="lstmad-bench-speed-"))
    progress(f"archive: {windows:,} windows of {WINDOW}×{CHANNELS} ...")
    folder, archive = archive_of(root, windows)
    result: dict = {"bench": "train", "window": WINDOW, "channels": CHANNELS, "batch_size": batch_size,
                    "epochs": epochs, "device": gpu["name"] if gpu else "cpu", "cpus": os.cpu_count(),
                    "profiles": {}, "pyod_growth": []}
    for profile in profiles:
        progress(f"{profile}: training on {archive['windows']:,} windows in process and on {processes} ranks ...")
        entry: dict = {"inprocess": measured("train_inprocess", folder, profile, epochs, batch_size, "cpu")}
        entry["spark"] = (measured("train_spark", folder, profile, epochs, batch_size, processes)
                          if profile.split("_small")[0] in DISTRIBUTABLE else None)
        if entry["spark"]:
            for rate in ("windows_per_s", "epoch_windows_per_s"):
                entry[f"spark_vs_inprocess_{rate}"] = round(entry["spark"][rate] / entry["inprocess"][rate], 3)
        entry["gpu"] = ({**measured("train_inprocess", folder, profile, epochs, 4096, "cuda"), "batch_size": 4096}
                        if gpu else None)
        result["profiles"][profile] = entry
    for size in pyod_sizes:
        progress(f"growth: PyOD LSTMAD fitting {size:,} windows ...")
        sized, _ = archive_of(root, size)
        theirs = measured_or_failure("train_pyod", sized, size, epochs, batch_size)
        result["pyod_growth"].append({"windows": size, "pyod_windows_per_s": theirs["windows_per_s"],
                                      "pyod_peak_rss_mb": theirs["peak_rss_mb"], "pyod_error": theirs.get("error")})
    first = "lstm_forecaster" if "lstm_forecaster" in profiles else profiles[0]
    p = result["profiles"][first]
    result.update({"inprocess_windows_per_s": p["inprocess"]["windows_per_s"],
                   "spark_windows_per_s": (p["spark"] or {}).get("windows_per_s"),
                   "inprocess_epoch_windows_per_s": p["inprocess"]["epoch_windows_per_s"],
                   "spark_epoch_windows_per_s": (p["spark"] or {}).get("epoch_windows_per_s"),
                   "gpu_windows_per_s": (p["gpu"] or {}).get("windows_per_s"),
                   "peak_rss_mb": p["inprocess"]["peak_rss_mb"],
                   "spark_peak_rss_mb": (p["spark"] or {}).get("peak_rss_mb"),
                   "pyod_windows_per_s": result["pyod_growth"][0]["pyod_windows_per_s"] if pyod_sizes else None,
                   "pyod_peak_rss_mb": result["pyod_growth"][0]["pyod_peak_rss_mb"] if pyod_sizes else None,
                   "archive": archive})
    return finish_json(result, json_path)


if __name__ == "__main__":
    print(json.dumps(WORKERS[sys.argv[1]](*sys.argv[2:]), default=str))
