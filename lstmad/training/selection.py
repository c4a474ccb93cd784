"""Choosing the detector of a training run among ``model.candidates``: on the labelled evaluation range when
there is one, else by a fault-injection study of the training range's own normal data.

The study: each candidate is fitted on the earlier windows of the training range; the latest ``STUDY_SHARE``
of them (which it never saw) are rebuilt as each asset's series, faults of every class of
lstmad.evaluation.injection are injected into them (seeded: the same data and seed give the same study), and
the candidate's AUROC of separating windows that end inside a fault from the others is measured per class.
The candidate with the best mean AUROC over the classes wins.

A forecaster candidate may be tried with several sets of driver channels (``model.driver_sets``): each pair of
a candidate and a driver set is one candidate of its own (Candidate), judged the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Callable, Optional, Sequence

import numpy as np

from lstmad import progress
from lstmad.training.fitting import thinned  # as model.max_train_windows thins the final fit's windows
from lstmad.transforms.blocks import Windows

log = logging.getLogger("lstmad")

# Detector settings each candidate name stands for (model.candidates lists these names).
CANDIDATES: dict[str, dict] = {
    "lstm_forecaster": {"detector": "lstm_forecaster", "error_model": "squared"},
    "lstm_forecaster_mahalanobis": {"detector": "lstm_forecaster", "error_model": "mahalanobis"},
    "lstm_autoencoder": {"detector": "lstm_autoencoder"},
    "iae_lstm_kl": {"detector": "iae_lstm_kl"},
    "pca_t2q": {"detector": "pca_t2q"},
    "isolation_forest": {"detector": "isolation_forest"},
}
FORECASTERS = tuple(name for name, settings in CANDIDATES.items() if settings["detector"] == "lstm_forecaster")
STUDY_SHARE = 0.25
MAX_STUDY_WINDOWS = 20_000
STUDY_FAULTS = ("stuck", "drift", "offset", "gain", "noise_burst", "lag", "decoupling")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A CANDIDATES name, with the source channels that drive it (``drivers``: names; () none) or None: as the
    source's roles have it (and none for a detector that is not a forecaster)."""

    name: str
    drivers: Optional[tuple[str, ...]] = None

    @property
    def label(self) -> str:
        """The name it goes by in progress lines and MLflow metrics: ``name``, with a driver set
        ``<name>.drivers.<channel>.<channel>`` (``.drivers.none``: no drivers); characters MLflow refuses in a
        metric name become _."""
        if self.drivers is None:
            return self.name
        return f"{self.name}.drivers." + (".".join(re.sub(r"[^\w\-]", "_", d) for d in self.drivers) or "none")


def named_candidate(model) -> str:
    """The CANDIDATES name whose settings ``model`` (a ModelConfig) has: its detector, and its error model for
    a forecaster."""
    return next(name for name, settings in CANDIDATES.items()
                if all(getattr(model, key) == value for key, value in settings.items()))


def driver_candidates(names: Sequence[str], source_drivers: tuple[str, ...],
                      driver_sets: Sequence[Sequence[str]]) -> list[Candidate]:
    """Each of ``names`` as a Candidate: a forecaster once per driver set — the source's roles
    (``source_drivers``) first, then ``driver_sets`` in order, each set once whatever its order — the others
    once. Without ``driver_sets`` every candidate keeps the source's roles (drivers None)."""
    sets: list[tuple[str, ...]] = []
    for chosen in [source_drivers, *driver_sets]:
        if not any(set(chosen) == set(s) for s in sets):
            sets.append(tuple(chosen))
    return [Candidate(name, s) for name in names for s in (sets if driver_sets and name in FORECASTERS else [None])]


def series_of_windows(windows: Windows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per asset, (positions into ``windows`` sorted by end time (n,), the series of their last rows (n, C),
    the first position of the unbroken run each belongs to (n,): runs break where consecutive end times are
    further apart than the asset's step, the smallest gap between them — a masked or left-out window, a
    segment boundary)."""
    out = []
    last = windows.series.numpy()[windows.starts + windows.window - 1]
    for a in np.unique(windows.asset):
        mine = np.flatnonzero(windows.asset == a)
        mine = mine[np.argsort(windows.end_us[mine], kind="stable")]
        gaps = np.diff(windows.end_us[mine])
        step = gaps[gaps > 0].min() if (gaps > 0).any() else 1
        breaks = np.concatenate([[True], gaps != step])
        run_start = np.maximum.accumulate(np.where(breaks, np.arange(mine.size), 0))
        out.append((mine, last[mine].astype(np.float64), run_start))
    return out


def injected_windows(windows: Windows, seed: int, faults=STUDY_FAULTS, per_fault: int = 2,
                     channels: Optional[Sequence[int]] = None) -> tuple[Windows, np.ndarray]:
    """(the study windows rebuilt from each asset's series with faults injected, the fault class of each
    window's last row ('' outside every event), (N,)). A window whose W rows are not all in one unbroken run
    of the series (the first W−1 of a run) keeps its original rows, its last row injected. An asset too short
    for every event gets none."""
    from lstmad.evaluation.injection import apply_plan, plan_injections, robust_scales

    w = windows.window
    arrays = np.empty((len(windows), w, windows.n_channels), dtype=np.float32)
    fault_of = np.full(len(windows), "", dtype=object)
    for k, (positions, series, run_start) in enumerate(series_of_windows(windows)):
        n = series.shape[0]
        length = max(w, n // (4 * per_fault * len(faults)))
        length = min(length, 10 * w)
        plan, injected, event = [], series, np.full(n, -1)
        try:
            plan = plan_injections(n, series.shape[1], faults=faults, per_fault=per_fault, seed=seed * 7919 + k,
                                   min_length=length, max_length=2 * length, gap=w, channels=channels)
            injected, event = apply_plan(series, plan, robust_scales(series), (seed, k))
        except ValueError as error:  # too short for every event: this asset is judged clean only
            log.info("train: injection study leaves asset %s clean: %s", windows.assets[windows.asset[positions[0]]],
                     error)
        for i, position in enumerate(positions):
            if i - run_start[i] >= w - 1:
                arrays[position] = injected[i - w + 1:i + 1]
            else:
                arrays[position] = windows.batch(np.array([position]))[0].numpy()
                arrays[position, -1] = injected[i]
            if event[i] >= 0:
                fault_of[position] = plan[event[i]].fault
    rebuilt = Windows.from_array(arrays)
    rebuilt = dataclasses.replace(rebuilt, end_us=windows.end_us.copy(), asset=windows.asset.copy(),
                                  assets=list(windows.assets))
    return rebuilt, fault_of


@dataclasses.dataclass(frozen=True)
class CandidateResult:
    """One candidate's study: mean AUROC over the fault classes, AUROC per class, and the realized alarm rate of
    its own validation threshold (95th percentile) on the clean study windows."""

    name: str
    mean_auroc: float
    auroc_by_fault: dict
    clean_alarm_rate: float
    error: str = ""


def injection_study(windows: Windows, factories: dict[str, Callable[[], object]], seed: int = 0,
                    channels: Optional[Sequence[int]] = None, max_fit_windows: int = 0) -> dict[str, CandidateResult]:
    """Fit each candidate (factory → unfitted detector) on the earlier windows (at most ``max_fit_windows``,
    evenly spaced; 0: all), judge it on the latest STUDY_SHARE with faults injected (the latest
    MAX_STUDY_WINDOWS of them at most) into ``channels`` (all when None)."""
    from sklearn.metrics import roc_auc_score

    order = np.argsort(windows.end_us, kind="stable")
    n_study = int(round(len(windows) * STUDY_SHARE))
    fit = thinned(windows.subset(np.sort(order[:-n_study])), max_fit_windows)
    # the latest MAX_STUDY_WINDOWS of them: an unbroken stretch of each asset's series, not a thinned one
    study = windows.subset(np.sort(order[-min(n_study, MAX_STUDY_WINDOWS):]))
    injected, fault_of = injected_windows(study, seed, channels=channels)
    results = {}
    for name, factory in factories.items():
        try:
            detector = factory().fit(fit)
            clean, scores = detector.score(study), detector.score(injected)
        except (ValueError, RuntimeError) as error:  # a candidate that cannot fit this data loses, said so
            results[name] = CandidateResult(name, float("nan"), {}, float("nan"), str(error).splitlines()[0])
            log.warning("train: candidate %s failed in the injection study: %s", name, results[name].error)
            continue
        threshold = float(np.percentile(detector.validation_scores_, 95))
        by_fault = {}
        for fault in sorted(set(fault_of) - {""}):
            rows = (fault_of == fault) | (fault_of == "")
            by_fault[fault] = float(roc_auc_score(fault_of[rows] == fault, scores[rows]))
        results[name] = CandidateResult(name, float(np.mean(list(by_fault.values()))) if by_fault else float("nan"),
                                        by_fault, float(np.mean(clean > threshold)))
        progress.step("train: candidate %s: mean AUROC %.3f over injected faults %s", name,
                 results[name].mean_auroc, {k: round(v, 3) for k, v in by_fault.items()})
    return results


def best_candidate(results: dict[str, CandidateResult]) -> Optional[str]:
    """The candidate with the highest mean AUROC (ties: the first listed); None when none could be judged."""
    judged = [(r.mean_auroc, -i, name) for i, (name, r) in enumerate(results.items()) if np.isfinite(r.mean_auroc)]
    return max(judged)[2] if judged else None


def labelled_study(fit: Windows, evaluation: Windows, factories: dict[str, Callable[[], object]],
                   max_fit_windows: int = 0) -> dict[str, CandidateResult]:
    """Fit each candidate on ``fit`` (at most ``max_fit_windows`` of them, evenly spaced; 0: all) and judge it
    by its AUROC on the labelled ``evaluation`` windows (labels of their last rows; unknown ones left out)."""
    from sklearn.metrics import roc_auc_score

    fit = thinned(fit, max_fit_windows)

    known = evaluation.label_last >= 0
    results = {}
    for name, factory in factories.items():
        try:
            detector = factory().fit(fit)
            scores = detector.score(evaluation)
        except (ValueError, RuntimeError) as error:
            results[name] = CandidateResult(name, float("nan"), {}, float("nan"), str(error).splitlines()[0])
            continue
        auroc = float(roc_auc_score(evaluation.label_last[known] == 1, scores[known]))
        threshold = float(np.percentile(detector.validation_scores_, 95))
        normal = evaluation.label_last == 0
        results[name] = CandidateResult(name, auroc, {"labelled": auroc}, float(np.mean(scores[normal] > threshold)))
        progress.step("train: candidate %s: AUROC %.3f on the labelled evaluation range", name, auroc)
    return results


def choose_candidate(candidates: Sequence[str | Candidate], make: Callable[[str | Candidate], object], fit: Windows,
                     evaluation: Optional[Windows], seed: int, injectable: Optional[Sequence[int]] = None,
                     max_fit_windows: int = 0) -> tuple[str, str, dict[str, CandidateResult]]:
    """(the winning candidate's label, how it was chosen: "labelled evaluation range" or "fault-injection
    study", every candidate's result by label). A candidate is a CANDIDATES name or a Candidate (a name with
    a driver set); ``make(candidate)`` builds it unfitted. The labelled route is taken when ``evaluation``
    holds both normal and anomalous windows. ``injectable``: the channels the study may inject faults into
    (all when None; not a circular channel's sine or cosine alone, which no sensor fault moves on its own).
    ``max_fit_windows``: the most windows a candidate is fitted on (model.max_train_windows; 0: all)."""
    unknown = [c for c in candidates if (c.name if isinstance(c, Candidate) else c) not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown model.candidates {unknown}; choose from {', '.join(CANDIDATES)}")
    factories = {(c.label if isinstance(c, Candidate) else c): (lambda c=c: make(c)) for c in candidates}
    labelled = (evaluation is not None and len(evaluation) > 0 and (evaluation.label_last == 1).any()
                and (evaluation.label_last == 0).any())
    if labelled:
        results, how = labelled_study(fit, evaluation, factories, max_fit_windows), "labelled evaluation range"
    else:
        results, how = injection_study(fit, factories, seed, injectable, max_fit_windows), "fault-injection study"
    chosen = best_candidate(results)
    if chosen is None:
        raise ValueError(f"no candidate of {list(candidates)} could be fitted: "
                         + "; ".join(f"{r.name}: {r.error}" for r in results.values()))
    return chosen, how, results
