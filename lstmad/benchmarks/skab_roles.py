"""SKAB with the normal-behaviour model's roles chosen on other files: nested, leave one folder out.

Which channels drive a normal-behaviour model (docs/training.md) is a choice, and choosing it on the rows one
reports is tuning on test rows. Here every candidate (every set of at most ``max_drivers`` driver channels, each
with the squared-error and the Mahalanobis error model) is fitted on every SKAB file's first 400 rows and scored
on its test rows, as in lstmad.benchmarks.skab. Then, for each of SKAB's three folders of experiments (valve1,
valve2, other), the candidate is chosen on the files of the other two folders alone and judged on this
folder's test rows. The confusion matrix pooled over the three held-out folders is the result: no test row is
judged by a choice that saw it. Two rules choose: ``f1_far_bound``, the goal's own form (the best F1 among the
candidates whose FAR stays ≤ FAR_BOUND on the choosing files), and ``auroc``, the pipeline's labelled route
(lstmad.training.selection.labelled_study).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from lstmad.benchmarks import skab
from lstmad.benchmarks.common import MEAN_STEPS, fmt, operator_metrics, write_report
from lstmad.dates import MICROS
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.evaluation.metrics import confusion_metrics
from lstmad.transforms.intervals import AlarmRules

FAR_BOUND = 0.20  # issue 15's SKAB goal: F1 ≥ 0.80 at FAR ≤ 20 %
MAX_DRIVERS = 2
ERROR_MODELS = ("squared", "mahalanobis")
CRITERIA = ("f1_far_bound", "auroc")


def driver_sets(n_channels: int, max_drivers: int = MAX_DRIVERS) -> list[tuple[int, ...]]:
    """Every set of 0 … ``max_drivers`` channel indices (sorted tuples, fewest first), leaving at least one
    channel to score."""
    largest = min(max_drivers, n_channels - 1)
    return [s for k in range(largest + 1) for s in itertools.combinations(range(n_channels), k)]


def candidate_name(error_model: str, drivers: tuple[int, ...], channels: list[str]) -> str:
    """"<error model>: <driver channels joined by +>" ("none" without drivers)."""
    return f"{error_model}: {' + '.join(channels[c] for c in drivers) or 'none'}"


def criterion_value(criterion: str, ratios: np.ndarray, truth: np.ndarray) -> float:
    """How a candidate ranks on the choosing rows: (n,) score ÷ threshold ratios (alarm above 1), (n,) bool
    truth. ``f1_far_bound``: F1, less 1 when the FAR exceeds FAR_BOUND (so any candidate within the bound ranks
    above every one outside it); ``auroc``: the AUROC of the ratios."""
    if criterion == "auroc":  # NaN where the rows hold one class only
        return float(roc_auc_score(truth, ratios)) if 0 < np.sum(truth) < truth.size else float("nan")
    if criterion != "f1_far_bound":
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    metrics = skab.far_f1(ratios > 1, truth)
    return metrics["f1"] - (1.0 if metrics["far"] > FAR_BOUND else 0.0)


def nested_choice(ratios: dict[str, np.ndarray], truth: np.ndarray, group: np.ndarray, criterion: str) -> dict:
    """Leave one group out: ``ratios`` {candidate: (n,) score ÷ threshold}, (n,) bool ``truth``, (n,) ``group``
    of each row (a SKAB folder). For each group the candidate with the best ``criterion`` on the other groups'
    rows (ties: the first listed) judges its rows. Returns {"chosen": {group: candidate}, "by_group": {group:
    {"f1", "far", "mar"}}, "flags" (n,) bool, "ratios" (n,) the judging candidate's, and the pooled "f1", "far",
    "mar", "tp", "fp", "fn", "tn", "auroc"}."""
    truth = np.asarray(truth, bool)
    flags, judged = np.zeros(truth.size, bool), np.full(truth.size, np.nan)
    chosen, by_group = {}, {}
    for g in np.unique(group):
        held_out = group == g
        values = {name: criterion_value(criterion, r[~held_out], truth[~held_out]) for name, r in ratios.items()}
        # a value that cannot be computed (choosing rows of one class alone) never wins
        values = {name: value if np.isfinite(value) else -np.inf for name, value in values.items()}
        best = max(values.values())
        chosen[str(g)] = next(name for name, value in values.items() if value == best)
        judged[held_out] = ratios[chosen[str(g)]][held_out]
        flags[held_out] = judged[held_out] > 1
        metrics = confusion_metrics(*skab.confusion(flags[held_out], truth[held_out]).tolist())
        by_group[str(g)] = {k: metrics[k] for k in ("f1", "far", "mar")}
    counts = skab.confusion(flags, truth)
    pooled = confusion_metrics(*counts.tolist())
    return {"chosen": chosen, "by_group": by_group, "flags": flags, "ratios": judged,
            **{k: pooled[k] for k in ("f1", "far", "mar")}, **dict(zip(("tp", "fp", "fn", "tn"), counts.tolist())),
            "auroc": float(roc_auc_score(truth, judged))}


def run(json_path: Path, epochs: int = 15, seed: int = 0, device: str = "auto", max_drivers: int = MAX_DRIVERS,
        window: int = 26, max_files: int = 0, progress: Callable[[str], None] = print) -> dict:
    """Fit every candidate on every file, choose by each criterion leaving one folder out, and calibrate the
    chosen candidates' 5 % row budget on the anomaly-free run as lstmad.benchmarks.skab does."""
    started = time.time()
    later_normal = skab.anomaly_free_parts()
    files = skab.skab_files()[: max_files or None]
    data = [skab.load_file(f) for f in files]
    folder_of_file = [f.parent.name for f in files]
    factories = {candidate_name(error_model, drivers, skab.SENSORS): (
        lambda e=error_model, d=drivers: LSTMForecasterDetector(epochs=epochs, seed=seed, device=device, drivers=d,
                                                                residual_steps=MEAN_STEPS, error_model=e))
        for error_model in ERROR_MODELS for drivers in driver_sets(len(skab.SENSORS), max_drivers)}
    ratios, truth, seconds, files_of = {}, [], [], []
    for k, (name, factory) in enumerate(factories.items()):
        per_file = []
        for number, (values, labels) in enumerate(data):
            detector, _, test, threshold = skab.fitted(name, factory, values, labels, window, seed)
            per_file.append(skab.ratio(detector.score(test), threshold))
            if k == 0:
                truth.append(test.label_last == 1)
                seconds.append(test.end_us)  # row numbers of a 1 Hz file
                files_of.append(np.full(len(test), number))
        ratios[name] = np.concatenate(per_file)
        # the test windows of a file are the same for every candidate (file_windows reads values, labels, window)
        assert ratios[name].size == sum(map(len, truth)), name
        progress(f"skab-roles {k + 1}/{len(factories)} {name}: AUROC "
                 f"{roc_auc_score(np.concatenate(truth), ratios[name]):.3f} ({time.time() - started:.0f} s)")
    truth, files_of = np.concatenate(truth), np.concatenate(files_of)
    group = np.array(folder_of_file)[files_of]
    results, budget_ratios = {}, {}
    for criterion in CRITERIA:
        choice = nested_choice(ratios, truth, group, criterion)
        for name in set(choice["chosen"].values()) - set(budget_ratios):
            budget_ratios[name] = _budget_ratios(name, factories[name], later_normal, window, seed)
        budget_flags = {"plain": np.zeros(truth.size, bool), "shift_corrected": np.zeros(truth.size, bool)}
        for g, name in choice["chosen"].items():
            for how, level in budget_ratios[name].items():
                budget_flags[how][group == g] = choice["ratios"][group == g] > level
        operator = operator_metrics(np.concatenate(seconds) * MICROS, files_of, truth.astype(int), choice["ratios"],
                                    1.0, AlarmRules(step_s=1, min_duration_s=1, merge_gap_s=0), criticality_steps=1)
        results[criterion] = {
            **{k: v for k, v in choice.items() if k not in ("flags", "ratios")},
            **{k: operator[k] for k in ("vus_roc", "vus_pr", "interval_recall", "interval_precision",
                                        "detection_delay_min", "care")},
            "budget": skab.BUDGET,
            "budget_far": float(np.mean(budget_flags["plain"][~truth])),
            "budget_far_shift_corrected": float(np.mean(budget_flags["shift_corrected"][~truth]))}
        progress(f"skab-roles chosen by {criterion}: {choice['chosen']}; F1 {choice['f1']:.3f}, FAR "
                 f"{100 * choice['far']:.2f} %, AUROC {choice['auroc']:.3f}")
    every = {name: {"auroc": float(roc_auc_score(truth, r)),
                    **{k: v for k, v in confusion_metrics(*skab.confusion(r > 1, truth).tolist()).items()
                       if k in ("f1", "far", "mar")}} for name, r in ratios.items()}
    result = {"models": {f"chosen_by_{criterion}": m for criterion, m in results.items()}, "candidates": every,
              "protocol": {"files": len(files), "groups": sorted(set(folder_of_file)), "train_rows": skab.TRAIN_ROWS,
                           "window": window, "epochs": epochs, "seed": seed,
                           "max_drivers": min(max_drivers, len(skab.SENSORS) - 1),
                           "error_models": list(ERROR_MODELS), "residual_steps": MEAN_STEPS,
                           "far_bound": FAR_BOUND, "candidates": len(factories),
                           "threshold": "quantile(train scores, 0.99) x 1.5",
                           "choice": "leave one folder out: chosen on the other folders' files"},
              "seconds": round(time.time() - started, 1)}
    return write_report("skab_roles", result, json_path, markdown(results, every), {})


def _budget_ratios(name: str, factory, later_normal: list[np.ndarray], window: int, seed: int) -> dict[str, float]:
    """{"plain", "shift_corrected"}: the 5 % budget's ratio levels of a candidate fitted on each anomaly-free
    part's first 400 rows and scored on the rest (lstmad.benchmarks.skab.budget_threshold)."""
    later = []
    for values in later_normal:
        detector, _, rest, threshold = skab.fitted(name, factory, values, np.zeros(len(values), dtype=int), window,
                                                   seed)
        later.append(skab.ratio(detector.score(rest), threshold))
    return {"plain": skab.budget_threshold(later, skab.BUDGET),
            "shift_corrected": skab.budget_threshold(later, skab.BUDGET, shift_correction=True)}


def markdown(results: dict, every: dict, top: int = 5) -> str:
    lines = ["SKAB, normal-behaviour roles chosen leaving one folder out (FAR, MAR in %)", "",
             "| chosen by | chosen for valve1 / valve2 / other | F1 | FAR % | MAR % | AUROC | VUS-PR | events found "
             f"| FAR % at a {skab.BUDGET:.0%} budget (shift-corrected) |", "|---|---|---|---|---|---|---|---|---|"]
    for criterion, m in results.items():  # criterion → its nested choice's metrics
        chosen = " / ".join(m["chosen"].get(g, "–") for g in ("valve1", "valve2", "other"))
        lines.append(f"| {criterion} | {chosen} | {fmt(m['f1'], 2)} | {fmt(m['far'], percent=True)} "
                     f"| {fmt(m['mar'], percent=True)} | {fmt(m['auroc'])} | {fmt(m.get('vus_pr'))} "
                     f"| {fmt(m.get('interval_recall'), 2)} | {fmt(m['budget_far'], percent=True)} "
                     f"({fmt(m['budget_far_shift_corrected'], percent=True)}) |")
    lines += ["", f"The {top} candidates of highest AUROC over all files (for reference: choosing by these "
                  "would be choosing on the test rows)", "", "| candidate | F1 | FAR % | AUROC |", "|---|---|---|---|"]
    for name, m in sorted(every.items(), key=lambda kv: -kv[1]["auroc"])[:top]:
        lines.append(f"| {name} | {fmt(m['f1'], 2)} | {fmt(m['far'], percent=True)} | {fmt(m['auroc'])} |")
    return "\n".join(lines) + "\n"
