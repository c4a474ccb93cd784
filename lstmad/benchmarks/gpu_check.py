"""The GPU check: every GPU measurement in one script that runs on a bare GPU image (Python with torch, numpy,
pandas, pyarrow, pyyaml, scipy, scikit-learn and typer; no Spark, MLflow, Delta or pytest), from the
repository root:

    PYTHONPATH=. python -m lstmad.benchmarks.gpu_check OUT_DIR [--quick] [--device auto|cpu|cuda] [--budget-s 420]

It writes OUT_DIR/gpu_check.json:

- ``device``: the card (name, peak TFLOP/s from lstmad.benchmarks.speed.GPU_PEAKS_TFLOPS) or the CPU;
- ``cuda_tests``: tests/test_cuda.py run with pytest where pytest is importable, else why not;
- per profile (lstmad.benchmarks.speed.PROFILES): ``flops_per_window``; ``scoring``, one entry per precision
  (fp32, bf16 autocast) × torch.compile (off, on) × batch size with windows/s, achieved TFLOP/s and the share
  of the card's peak, peak device memory, and the largest relative difference of its scores from the fp32
  uncompiled ones (the numerics a default may pick must stay within 1e-4); ``training``: windows/s of
  ``train_epochs`` epochs in fp32 and bf16, alternated ``train_repeats`` times.

On a CPU the same path runs at small sizes, bf16 and compile marked as not measured (oneDNN has no bf16 LSTM
on most CPUs; compiling costs more than these sizes save): tests/test_gpu_check.py runs it so in CI, with
Spark, MLflow and Delta made unimportable. A measurement that would run past ``--budget-s`` is skipped and
says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lstmad.benchmarks import speed

QUICK = {"windows": 2_000, "batch_sizes": (256, 1024), "train_windows": 1_024, "train_epochs": 1, "train_repeats": 1}
FULL = {"windows": 400_000, "batch_sizes": (4_096, 16_384, 65_536), "train_windows": 400_000, "train_epochs": 3,
        "train_repeats": 2}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _peak_memory(device: str) -> dict:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def score_rate(detector, windows, batch_size: int, device: str, bf16: bool, compiled: bool) -> tuple[dict, np.ndarray]:
    """Windows/s of ``detector.score`` over ``windows`` after one warm-up batch; (measurement, scores (n,))."""
    import contextlib

    import torch

    network = detector.network_
    if compiled:
        detector.network_ = torch.compile(network)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    try:
        with autocast:
            detector.score(windows.subset(np.arange(min(batch_size, len(windows)))), batch_size)  # warm-up
            _sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            scores = detector.score(windows, batch_size)
            _sync(device)
            seconds = time.perf_counter() - started
    finally:
        detector.network_ = network
    return ({"windows": len(windows), "seconds": round(seconds, 4), "windows_per_s": round(len(windows) / seconds, 1),
             **_peak_memory(device)}, np.asarray(scores, dtype=np.float64))


def train_rate(profile: str, windows, batch_size: int, device: str, precision: str, epochs: int = 1) -> dict:
    """Windows/s of ``epochs`` training epochs of ``profile`` (both phases for IAE-LSTM-KL)."""
    detector = speed.new_detector(profile, epochs=epochs, batch_size=batch_size, device=device)
    detector.params = dataclasses.replace(detector.params, precision=precision)  # not "auto": what was asked
    started = time.perf_counter()
    detector.fit(windows)
    _sync(device)
    return {**speed._rates(detector.history_, time.perf_counter() - started), "batch_size": batch_size,
            "precision": precision, **_peak_memory(device)}


def cuda_tests(repo: Path) -> dict:
    """tests/test_cuda.py with pytest, where it is installed (a bare image has none: carry its wheel)."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "pytest is not installed here (carry a pytest wheel to run tests/test_cuda.py)"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    left_out = {}
    try:
        import pyspark  # noqa: F401
    except ImportError:  # a bare GPU image: the Spark task test cannot start a session there
        command += ["-m", "not spark"]
        left_out = {"left_out": "the Spark task test (pyspark is not installed here)"}
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    return {"ran": True, "exit_code": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1],
            **left_out, **({"output": done.stdout[-3000:] + done.stderr[-2000:]} if done.returncode else {})}


def run(out_dir: Path, quick: bool = False, device: str = "auto", budget_s: float = 420.0,
        repo: Path = Path(".")) -> dict:
    """All measurements (module docstring); returns what it wrote to ``out_dir``/gpu_check.json."""
    import torch

    from lstmad.io.tensor_store import read_blocks
    from lstmad.serving.bundle import ModelBundle
    from lstmad.transforms.blocks import windows_from_blocks

    started = time.perf_counter()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    on_gpu = device.startswith("cuda")
    sizes = QUICK if quick or not on_gpu else FULL
    card = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peaks = speed.gpu_peaks(card) if on_gpu else None
    result: dict = {"device": {"name": card, "peaks_tflops": peaks, "torch": torch.__version__},
                    "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
                    "cuda_tests": cuda_tests(repo) if on_gpu else {"ran": False, "why": "no CUDA device"},
                    "profiles": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder, archive = speed.archive_of(Path(scratch), sizes["windows"])
        tensors = folder / "tensors"
        windows = windows_from_blocks(read_blocks(tensors, speed._dates(tensors)), speed.WINDOW)
        result["windows"] = len(windows)
        for profile in speed.PROFILES:
            model_dir = speed.train_model(profile, folder, device)
            entry: dict = {"flops_per_window": round(speed.flops_per_window(profile, model_dir), 1), "scoring": [],
                           "training": []}
            detector = ModelBundle.load(model_dir).detector.to(device)
            reference = None
            for precision in ("fp32", "bf16"):
                for compiled in (False, True):
                    for batch_size in sizes["batch_sizes"]:
                        setting = {"precision": precision, "compile": compiled, "batch_size": batch_size}
                        if not on_gpu and (precision == "bf16" or compiled):
                            entry["scoring"].append({**setting, "measured": False, "why": "CUDA only"})
                            continue
                        if time.perf_counter() - started > budget_s:
                            entry["scoring"].append({**setting, "measured": False, "why": "time budget spent"})
                            continue
                        try:
                            measured, scores = score_rate(detector, windows, batch_size, device,
                                                          precision == "bf16", compiled)
                        except (RuntimeError, TypeError, ValueError) as error:  # recorded; the others still run
                            entry["scoring"].append({**setting, "measured": False, "error": repr(error)[:500]})
                            continue
                        if reference is None and precision == "fp32" and not compiled:
                            reference = scores  # the first fp32 uncompiled scores; None until one is measured
                        difference = None if reference is None else float(
                            np.max(np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-12)))
                        achieved = measured["windows_per_s"] * entry["flops_per_window"] / 1e12
                        measured.update(setting, measured=True, achieved_tflops=round(achieved, 4),
                                        max_relative_difference=difference)
                        for kind, peak in (peaks or {}).items():
                            measured[f"share_of_{kind}_peak"] = round(achieved / peak, 6)
                        entry["scoring"].append(measured)
            train_windows = windows.subset(np.arange(min(len(windows), sizes["train_windows"])))
            # fp32 and bf16 alternated, twice each on a GPU: the first fit of a process pays cuDNN's start-up
            for precision in ("fp32", "bf16") * sizes["train_repeats"] if on_gpu else ("fp32",):
                if time.perf_counter() - started > budget_s:
                    entry["training"].append({"precision": precision, "measured": False, "why": "time budget spent"})
                    continue
                try:
                    entry["training"].append(train_rate(profile, train_windows, 4096 if on_gpu else 256, device,
                                                        precision, sizes["train_epochs"]))
                except (RuntimeError, TypeError, ValueError) as error:
                    entry["training"].append({"precision": precision, "measured": False, "error": repr(error)[:500]})
            measured_rates = [s["windows_per_s"] for s in entry["scoring"] if s.get("measured")]
            entry["best_scoring_windows_per_s"] = max(measured_rates) if measured_rates else None
            result["profiles"][profile] = entry
    result["seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="small sizes (what CI runs on a CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip measurements past this many seconds")
    args = parser.parse_args(argv)
    result = run(args.out_dir, args.quick, args.device, args.budget_s, Path.cwd())
    best = {p: e["best_scoring_windows_per_s"] for p, e in result["profiles"].items()}
    print(json.dumps({"device": result["device"]["name"], "seconds": result["seconds"],
                      "best_scoring_windows_per_s": best, "json": str(args.out_dir / "gpu_check.json")}))


if __name__ == "__main__":
    main()
