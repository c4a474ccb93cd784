"""``lstmad benchmark scoring-chunk``: the forecaster scoring each window alone against k windows per pass.

Stride-1 windows repeat W−1 of their rows, so scoring each alone runs the network W times over every row.
``model.scoring_chunk`` k scores runs of consecutive windows k at a time from one pass over their rows: each
scored row predicted once, from at least its window's W−1 rows before it (at most W−2+k). Fewer operations,
different context: this benchmark fits each model once, then scores the same test windows both ways and
reports AUROC, the alarm rates at each way's threshold, how far the scores move, and scoring windows per
second. Each way refits the validation scores and the error model on the validation windows scored its way;
on SKAB these are consecutive, on the farm they are thinned to 20,000 of the training windows (no two
consecutive), so there both ways share the error model fitted on windows scored alone and differ in the
threshold only: the 99th percentile of a dense calibration slice scored each way.

Data: SKAB's 34 files on its protocol (lstmad.benchmarks.skab; skipped when absent) and the synthetic farm
in time order (each turbine's first 60 % of windows train, the rest test: stride-1 windows as a night has).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lstmad.benchmarks.common import DataMissingError, MEAN_STEPS, fmt, write_report
from lstmad.detectors import LSTMForecasterDetector
from lstmad.detectors.base import latest_split

CHUNK = 25
FARM_MODELS = {  # (name, settings): the bench night's shape, the default shape, the mean-residual Mahalanobis one
    "lstm_forecaster_32_16": dict(hidden_sizes=(32, 16)),
    "lstm_forecaster": {},
    "lstm_forecaster_mahalanobis_mean": dict(error_model="mahalanobis", residual_steps=MEAN_STEPS),
}
SKAB_MODELS = ("lstm_forecaster", "lstm_forecaster_mahalanobis_mean")


def both_ways(detector: LSTMForecasterDetector, chunk: int, validation, train) -> dict[str, LSTMForecasterDetector]:
    """The fitted ``detector`` (windows alone) and a copy scoring ``chunk`` windows per pass, its validation
    scores and error model refitted on ``validation`` the chunked way (as training with that setting does)."""
    chunked = copy.copy(detector)
    chunked.params = dataclasses.replace(detector.params, scoring_chunk=chunk)
    chunked.adopt(detector.network_, detector.history_, validation, stillness_of=train)
    return {"alone": detector, "chunked": chunked}


def timed_scores(detector, windows) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = detector.score(windows)
    return scores, len(windows) / max(time.perf_counter() - started, 1e-9)


def moved(alone: np.ndarray, chunked: np.ndarray) -> dict:
    relative = np.abs(chunked - alone) / np.maximum(np.abs(alone), 1e-12)
    return {"median_relative_score_change": float(np.median(relative)),
            "p99_relative_score_change": float(np.quantile(relative, 0.99))}


def skab_study(epochs: int, seed: int, device: str, progress) -> dict:
    from lstmad.benchmarks import skab
    from lstmad.benchmarks.common import deep_detectors
    from lstmad.evaluation.calibration import conformal_threshold

    data = [skab.load_file(f) for f in skab.skab_files()]
    factories = deep_detectors("small", epochs, seed, device)
    results = {}
    for name in SKAB_MODELS:
        kept = {way: {"ratio": [], "truth": [], "flag": [], "budget": [], "scores": [], "rate": []}
                for way in ("alone", "chunked")}
        for values, labels in data:
            torch.manual_seed(seed)
            train, test = skab.file_windows(values, labels, 26)
            detector = factories[name]().fit(train)
            earlier, validation = latest_split(train, detector.params.validation_share)
            for way, d in both_ways(detector, CHUNK, validation, earlier).items():
                threshold = skab.threshold_for(name, d.score(train))
                scores, rate = timed_scores(d, test)
                k = kept[way]
                k["ratio"].append(scores / threshold)
                k["truth"].append(test.label_last == 1)
                k["flag"].append(scores > threshold)
                k["budget"].append(scores > conformal_threshold(d.validation_scores_, skab.BUDGET))
                k["scores"].append(scores)
                k["rate"].append(rate)
        row = moved(np.concatenate(kept["alone"]["scores"]), np.concatenate(kept["chunked"]["scores"]))
        for way, k in kept.items():
            y, flag, budget = (np.concatenate(k[key]) for key in ("truth", "flag", "budget"))
            tp, fp, fn = int(np.sum(flag & y)), int(np.sum(flag & ~y)), int(np.sum(~flag & y))
            row.update({f"auroc_{way}": float(roc_auc_score(y, np.concatenate(k["ratio"]))),
                        f"f1_{way}": 2 * tp / max(2 * tp + fp + fn, 1), f"far_{way}": fp / max(int(np.sum(~y)), 1),
                        f"budget_far_{way}": float(budget[~y].mean()),
                        f"windows_per_s_{way}": float(np.median(k["rate"]))})
        results[f"skab/{name}"] = row
        progress(f"scoring-chunk skab {name}: AUROC {row['auroc_alone']:.4f} alone, {row['auroc_chunked']:.4f} "
                 f"chunked")
    return results


def farm_study(epochs: int, seed: int, device: str, progress) -> dict:
    from lstmad.benchmarks.icing import build
    from lstmad.data.synthetic import FarmSpec

    data = build(FarmSpec(turbines=4, days=20, step_s=60, seed=11), seed=seed)
    windows = data.windows
    # each turbine's windows are one run of consecutive starts: its first 60 % train (normal ones), the rest test
    turbine = np.cumsum(np.r_[True, np.diff(windows.starts) != 1])
    train_index, test_index = [], []
    for t in np.unique(turbine):
        index = np.flatnonzero(turbine == t)
        cut = index[int(0.6 * index.size)]
        train_index.append(index[(index < cut) & ~data.abnormal[index]])
        test_index.append(index[index >= cut])
    train, test = windows.subset(np.concatenate(train_index)), windows.subset(np.concatenate(test_index))
    abnormal = data.abnormal[np.concatenate(test_index)].astype(bool)
    calibration = train.subset(np.arange(int(0.8 * len(train)), len(train)))  # dense, as a calibration slice
    fit_on = train.subset(np.linspace(0, int(0.8 * len(train)) - 1, 20_000).astype(np.int64))
    results = {}
    for name, settings in FARM_MODELS.items():
        torch.manual_seed(seed)
        detector = LSTMForecasterDetector(epochs=epochs, seed=seed, device=device, **settings).fit(fit_on)
        earlier, validation = latest_split(fit_on, detector.params.validation_share)
        row, scored = {}, {}
        for way, d in both_ways(detector, CHUNK, validation, earlier).items():
            scores, rate = timed_scores(d, test)
            threshold = float(np.quantile(d.score(calibration), 0.99))
            scored[way] = scores
            row.update({f"auroc_{way}": float(roc_auc_score(abnormal, scores)),
                        f"far_at_p99_{way}": float(np.mean(scores[~abnormal] > threshold)),
                        f"recall_at_p99_{way}": float(np.mean(scores[abnormal] > threshold)),
                        f"windows_per_s_{way}": rate})
        row.update(moved(scored["alone"], scored["chunked"]))
        results[f"farm/{name}"] = row
        progress(f"scoring-chunk farm {name}: AUROC {row['auroc_alone']:.4f} alone, {row['auroc_chunked']:.4f} "
                 f"chunked")
    return results


def run(json_path: Path, epochs: int = 15, seed: int = 0, device: str = "cpu",
        progress: Callable[[str], None] = print, models: Optional[list] = None, **_) -> dict:
    """Both studies; {"models": {"<data>/<model>": {"auroc_alone", "auroc_chunked", …}}}."""
    results, skipped = {}, None
    try:
        results.update(skab_study(epochs, seed, device, progress))
    except DataMissingError as error:
        skipped = str(error)
        progress(f"scoring-chunk: SKAB skipped: {error}")
    results.update(farm_study(max(1, epochs // 4), seed, device, progress))
    result = {"models": results, "protocol": {"chunk": CHUNK, "epochs_skab": epochs,
                                              "epochs_farm": max(1, epochs // 4), "seed": seed, "device": device,
                                              "skab_skipped": skipped}}
    lines = [f"Forecaster scoring: each window alone vs {CHUNK} consecutive windows per pass (model.scoring_chunk)",
             "", "| data / model | AUROC alone | AUROC chunked | alarm rate on normal rows alone → chunked | "
             "median / p99 relative score change | windows/s alone → chunked |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        far = ("far_alone", "far_chunked") if "far_alone" in r else ("far_at_p99_alone", "far_at_p99_chunked")
        lines.append(f"| {key} | {fmt(r['auroc_alone'])} | {fmt(r['auroc_chunked'])} | "
                     f"{fmt(r[far[0]], percent=True)} → {fmt(r[far[1]], percent=True)} | "
                     f"{r['median_relative_score_change']:.1e} / {r['p99_relative_score_change']:.1e} | "
                     f"{r['windows_per_s_alone']:,.0f} → {r['windows_per_s_chunked']:,.0f} |")
    return write_report("scoring_chunk", result, json_path, "\n".join(lines) + "\n", {})
