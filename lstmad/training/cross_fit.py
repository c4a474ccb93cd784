"""Out-of-fold calibration scores: every training window scored by a model fitted without it.

A threshold calibrated on the latest slice of the training range (the validation windows) knows one stretch
of weather; new nights bring others, and their normal rows alarm more often than promised (the synthetic farm,
a 5 % budget: 9.7 % and 10.2 % on the fault-free nights for the forecaster and the Isolation Forest;
docs/training.md).
Cross-fitting scores the whole training range out of sample instead: its time span is cut into
``folds × CHUNKS_PER_FOLD`` equal chunks, chunk c belongs to fold c mod folds (so each fold samples the whole
range, every season of a year of data), and each fold is scored by a detector fitted on the other folds. The
windows of other folds that share rows with a held-out chunk (within ``reach_us`` of it) are left out of that
fit, so no held-out row was seen. The deployed detector is still the one fitted on all windows; with the
threshold from its out-of-fold scores this is the CV+ construction of Barber et al. (2021).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lstmad import progress
from lstmad.transforms.blocks import Windows

CHUNKS_PER_FOLD = 4


def time_folds(end_us: np.ndarray, folds: int, chunks_per_fold: int = CHUNKS_PER_FOLD) -> tuple[np.ndarray, np.ndarray]:
    """(fold of each window (N,) int, chunk edges (folds·chunks_per_fold + 1,) µs): the span of the windows' end
    times ``end_us`` (N,) cut into equal chunks, chunk c in fold c mod ``folds``."""
    end_us = np.asarray(end_us, dtype=np.int64)
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    n_chunks = folds * chunks_per_fold
    first, last = int(end_us.min()), int(end_us.max())
    edges = np.linspace(first, last + 1, n_chunks + 1)
    chunk = np.clip(np.searchsorted(edges, end_us, side="right") - 1, 0, n_chunks - 1)
    return chunk % folds, edges


def fit_mask(end_us: np.ndarray, fold: np.ndarray, edges: np.ndarray, folds: int, held_out: int, reach_us: int
             ) -> np.ndarray:
    """(N,) bool: the windows a model scoring fold ``held_out`` (of ``folds``; ``fold`` and ``edges`` from
    time_folds) may be fitted on: those of other folds whose end time is at least ``reach_us`` away from every
    chunk of that fold (windows closer share rows with a held-out window: reach = window length × step)."""
    end_us = np.asarray(end_us, dtype=np.int64)
    keep = fold != held_out
    for c in range(held_out, edges.size - 1, folds):
        lo, hi = edges[c], edges[c + 1]
        keep &= ~((end_us > lo - reach_us) & (end_us < hi + reach_us))
    return keep


def fold_plan(end_us: np.ndarray, folds: int, reach_us: int, minimum_fit: int = 10,
              chunks_per_fold: int = CHUNKS_PER_FOLD) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per non-empty fold, (positions scored, positions fitted on) into the (N,) end times ``end_us``
    (time_folds, purged by fit_mask). Raises ValueError when a fold would be fitted on fewer than
    ``minimum_fit`` windows: checked for every fold before anything is fitted."""
    fold, edges = time_folds(end_us, folds, chunks_per_fold)
    plan = []
    for held_out in range(folds):
        held = np.flatnonzero(fold == held_out)
        if held.size == 0:
            continue
        fit_on = np.flatnonzero(fit_mask(end_us, fold, edges, folds, held_out, reach_us))
        if fit_on.size < minimum_fit:
            raise ValueError(f"cross-fitting fold {held_out + 1} of {folds} leaves {fit_on.size} windows to fit on "
                             f"(fewer than {minimum_fit}): use fewer folds or a longer training range")
        plan.append((held, fit_on))
    return plan


def out_of_fold_scores(fit: Callable[[Windows], object], windows: Windows,
                       plan: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(N,) float64 scores of the N ``windows``, each fold's by the detector ``fit(its fitting windows)``
    returns (a fresh detector each time), following ``plan`` (fold_plan of the windows' end times)."""
    scores = np.full(len(windows), np.nan, dtype=np.float64)
    for number, (held, fit_on) in enumerate(plan, start=1):
        progress.step("train: cross-fitting fold %d/%d (%d windows fit, %d scored)", number, len(plan),
                      fit_on.size, held.size)
        scores[held] = fit(windows.subset(fit_on)).score(windows.subset(held))
    return scores
