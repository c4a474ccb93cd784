"""The IAE-LSTM-KL paper's WTBI protocol on the synthetic wind farm, and its contamination experiment.

26 channels smoothed with a centered mean over ±5 timestamps, 26×26 windows with stride 1; a window is
abnormal when any of its rows lies in an icing period. Training set: 70 % of the normal windows (random, as
in the paper); test set: the other 30 % plus all abnormal windows. AUROC per model beside Table III.
The contamination experiment (Fig. 5) mixes abnormal windows into training at ratios 0 … 25 %.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lstmad.benchmarks.common import classical_detectors, deep_detectors, fmt, operator_metrics, write_report
from lstmad.data.synthetic import FarmSpec, generate_farm
from lstmad.dates import MICROS
from lstmad.transforms.blocks import Windows
from lstmad.transforms.intervals import AlarmRules
from lstmad.transforms.series import centered_moving_average

PAPER_TABLE_III = {
    "cae": 0.704, "deep_svdd_hard": 0.798, "deep_svdd_soft": 0.823, "iaead_hard": 0.823, "iaead_soft": 0.894,
    "iae_lstm_kl_hard": 0.893, "iae_lstm_kl_soft": 0.963,
}
ORDERING = ["cae", "deep_svdd_soft", "iaead_soft", "iae_lstm_kl_soft"]
DEFAULT_MODELS = ["cae", "deep_svdd_soft", "deep_svdd_hard", "iaead_soft", "iaead_hard", "iae_kl", "iae_lstm",
                  "dlsvdd", "dlsvdd_kl", "dsvdd_kl", "iae_lstm_kl_soft", "iae_lstm_kl_hard", "lstm_forecaster",
                  "lstm_ae", "pca_t2q", "isolation_forest"]
CONTAMINATION_MODELS = ["cae", "deep_svdd_soft", "iaead_soft", "iae_lstm_kl_hard", "iae_lstm_kl_soft"]
RATIOS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25)


@dataclasses.dataclass(frozen=True)
class IcingData:
    """All windows of the farm over one concatenated series, their labels, and the 70/30 normal split."""

    windows: Windows
    abnormal: np.ndarray   # (N,) bool
    train_normal: np.ndarray  # indices
    test_normal: np.ndarray


def build(spec: FarmSpec, window: int = 26, half_width: int = 5, seed: int = 0) -> IcingData:
    """Smooth each turbine's channels (±half_width), z-score them with the normal rows' statistics, and cut
    stride-1 windows that never cross turbines."""
    farm = generate_farm(spec)
    channels = [c for c in farm.columns if c not in ("timestamp", "turbine_id", "label")]
    parts, labels, starts, offset = [], [], [], 0
    for _, turbine in farm.groupby("turbine_id", sort=True):
        smoothed = centered_moving_average(turbine[channels].to_numpy(), half_width)
        parts.append(smoothed)
        labels.append(turbine["label"].to_numpy())
        starts.append(offset + np.arange(len(turbine) - window + 1))
        offset += len(turbine)
    series, label = np.concatenate(parts), np.concatenate(labels)
    normal_rows = series[label == 0]
    series = (series - normal_rows.mean(axis=0)) / np.maximum(normal_rows.std(axis=0), 1e-9)
    starts = np.concatenate(starts)
    positive = np.concatenate([[0], np.cumsum(label == 1)])
    abnormal = (positive[starts + window] - positive[starts]) > 0
    return split_windows(series, starts, abnormal, window, "farm", seed)[0]


def split_windows(series: np.ndarray, starts: np.ndarray, abnormal: np.ndarray, window: int, asset: str,
                  seed: int) -> tuple[IcingData, np.ndarray]:
    """Windows of ``window`` rows starting at ``starts`` (N,) in one (R, C) series, ``abnormal`` (N,) bool, and
    the paper's random split: 70 % of the normal windows train, the rest test. Returns the data (sorted indices)
    and the held-out normal windows in their random order."""
    windows = Windows(torch.as_tensor(series, dtype=torch.float32), starts, window, starts.astype(np.int64),
                      np.zeros(starts.size, dtype=np.int64), [asset], abnormal.astype(np.int8),
                      abnormal.astype(np.int8))
    shuffled = np.random.default_rng(seed).permutation(np.flatnonzero(~abnormal))
    cut = int(round(0.7 * shuffled.size))
    return IcingData(windows, abnormal, np.sort(shuffled[:cut]), np.sort(shuffled[cut:])), shuffled[cut:]


def _evaluate(factory, data: IcingData, train_index: np.ndarray, test_index: np.ndarray, seed: int) -> dict:
    """AUROC on the test windows, the false-alarm rate the detector's own threshold (95th percentile of its
    held-out validation scores) realizes on the test's normal windows, which it never saw, and what an operator
    would receive at that threshold (benchmarks.common.operator_metrics; intervals of at least 30 minutes)."""
    torch.manual_seed(seed)
    detector = factory().fit(data.windows.subset(train_index))
    scores = detector.score(data.windows.subset(test_index))
    normal = ~data.abnormal[test_index].astype(bool)
    threshold = float(np.percentile(detector.validation_scores_, 95))
    # the test windows in time order (gaps where the training windows were): 5-minute steps, one farm series
    times = data.windows.end_us[test_index] * 300 * MICROS
    operator = operator_metrics(times, np.zeros(times.size, object), data.abnormal[test_index].astype(int), scores,
                                threshold, AlarmRules(300, 1800, 600), criticality_steps=6)
    return {"auroc": float(roc_auc_score(data.abnormal[test_index], scores)),
            "far_at_p95": float(np.mean(scores[normal] > threshold)), **operator}


def run(json_path, models: Optional[list[str]] = None, spec: FarmSpec = FarmSpec(turbines=4, days=10, step_s=300,
        seed=11), epochs: int = 10, profile: str = "small", seed: int = 0, device: str = "auto",
        progress=print) -> dict:
    """AUROC of each model on the paper's protocol; {"models": {name: {"auroc", "paper_auroc", "seconds"}}}."""
    data = build(spec, seed=seed)
    factories = {**deep_detectors(profile, epochs, seed, device), **classical_detectors(seed)}
    models = models or DEFAULT_MODELS
    test_index = np.sort(np.concatenate([data.test_normal, np.flatnonzero(data.abnormal)]))
    results = {}
    for name in models:
        started = time.time()
        found = _evaluate(factories[name], data, data.train_normal, test_index, seed)
        results[name] = {**found, "paper_auroc": PAPER_TABLE_III.get(name), "seconds": round(time.time() - started, 1)}
        progress(f"icing {name}: AUROC {found['auroc']:.3f} (paper {fmt(PAPER_TABLE_III.get(name))}), false alarms "
                 f"on unseen normal windows {100 * found['far_at_p95']:.1f} % for 5 % ({results[name]['seconds']} s)")
    present = [m for m in ORDERING if m in results]
    ordering_holds = all(results[a]["auroc"] < results[b]["auroc"] for a, b in zip(present, present[1:]))
    result = {"models": results, "ordering": {"expected": present, "holds": ordering_holds},
              "protocol": {"windows": len(data.windows), "abnormal_windows": int(data.abnormal.sum()),
                           "train_windows": int(data.train_normal.size), "test_windows": int(test_index.size),
                           "farm": dataclasses.asdict(spec), "epochs": epochs, "profile": profile, "seed": seed}}
    lines = ["Icing (WTBI protocol on the synthetic farm): AUROC, ours beside the paper's Table III", "",
             "| model | AUROC (lstmad) | AUROC (paper, WTBI) | false alarms on unseen normal windows (5 % expected) "
             "| VUS-PR | events found | false intervals / week | CARE |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in sorted(results.items(), key=lambda kv: -kv[1]["auroc"]):
        lines.append(f"| {name} | {fmt(m['auroc'])} | {fmt(m['paper_auroc'])} | {fmt(m['far_at_p95'], percent=True)} "
                     f"| {fmt(m['vus_pr'])} | {fmt(m['interval_recall'], 2)} | "
                     f"{fmt(m['false_intervals_per_asset_week'], 1)} | {fmt(m['care'])} |")
    lines.append(f"\nPaper ordering {' < '.join(present)}: {'reproduced' if ordering_holds else 'not reproduced'}.")
    return write_report("icing", result, json_path, "\n".join(lines) + "\n",
                        {"auroc": lambda ax: _bars(ax, results)})


def contamination_split(normal: np.ndarray, abnormal: np.ndarray, test_normal: np.ndarray, ratio: float,
                        n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) window indices: ``n_train`` training windows of which round(ratio · n_train) are the
    first abnormal ones; the test set keeps every other abnormal window and the held-out normal ones."""
    k = int(round(ratio * n_train))
    if k > abnormal.size or n_train - k > normal.size:
        raise ValueError(f"cannot draw {k} abnormal and {n_train - k} normal training windows")
    return (np.sort(np.concatenate([normal[:n_train - k], abnormal[:k]])),
            np.sort(np.concatenate([test_normal, abnormal[k:]])))


def run_contamination(json_path, models: Optional[list[str]] = None,
                      spec: FarmSpec = FarmSpec(turbines=4, days=10, step_s=300, seed=11), epochs: int = 10,
                      profile: str = "small", seed: int = 0, device: str = "auto", progress=print) -> dict:
    """AUROC per model and share of abnormal windows mixed into training (paper Fig. 5).

    {"models": {name: {"auroc": {ratio: AUROC}}}}: every training set has the same size, a share ``ratio`` of
    it abnormal windows; those are removed from the test set, so no test window was seen in training.
    """
    data = build(spec, seed=seed)
    factories = deep_detectors(profile, epochs, seed, device)
    models = models or CONTAMINATION_MODELS
    rng = np.random.default_rng(seed + 1)
    abnormal = rng.permutation(np.flatnonzero(data.abnormal))
    normal = rng.permutation(data.train_normal)
    # One training-set size for every ratio, small enough that 25 % of it uses at most half of the abnormal
    # windows (the other half always stays in the test set).
    n_train = min(normal.size, int(abnormal.size // 2 / max(RATIOS)))
    results = {name: {"auroc": {}} for name in models}
    for ratio in RATIOS:
        train_index, test_index = contamination_split(normal, abnormal, data.test_normal, ratio, n_train)
        for name in models:
            found = _evaluate(factories[name], data, train_index, test_index, seed)
            results[name]["auroc"][f"{ratio:.2f}"] = found["auroc"]
            for key in ("far_at_p95", "vus_pr", "interval_recall", "false_intervals_per_asset_week", "care"):
                results[name].setdefault(key, {})[f"{ratio:.2f}"] = found[key]
            progress(f"contamination {ratio:.0%} {name}: AUROC {found['auroc']:.3f}, false alarms on unseen normal "
                     f"windows {100 * found['far_at_p95']:.1f} % for 5 %")
    lines = ["Contamination: AUROC against the share of abnormal windows in training", "",
             "| model | " + " | ".join(f"{r:.0%}" for r in RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
    for name, m in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(v) for v in m["auroc"].values()) + " |")
    result = {"models": results, "protocol": {"ratios": list(RATIOS), "train_windows": n_train,
                                              "farm": dataclasses.asdict(spec),
                                              "epochs": epochs, "profile": profile, "seed": seed}}
    return write_report("contamination", result, json_path, "\n".join(lines) + "\n",
                        {"auroc": lambda ax: _lines(ax, results)})


def _bars(ax, results: dict) -> None:
    names = list(results)
    ax.barh(names, [results[n]["auroc"] for n in names], label="lstmad (synthetic farm)")
    paper = [results[n]["paper_auroc"] or np.nan for n in names]
    ax.scatter(paper, names, color="k", marker="|", s=200, label="paper (WTBI)")
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("AUROC")
    ax.legend(fontsize=8)


def _lines(ax, results: dict) -> None:
    for name, m in results.items():
        ax.plot([float(r) * 100 for r in m["auroc"]], list(m["auroc"].values()), marker="o", label=name)
    ax.set_xlabel("abnormal windows in training (%)")
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=8)
