"""VUS-ROC and VUS-PR: volume under the range-based ROC / PR surfaces (Paparrizos et al., VLDB 2022).

Definition (as computed by TheDatumOrg's reference, ``RangeAUC_volume_opt`` in TSB-AD 1.5, the
implementation behind the TSB-AD benchmark of Liu & Paparrizos, NeurIPS 2024; re-implemented here,
vectorised):

* **Buffered labels.** For a buffer width ℓ, every true anomaly segment ``[s, e]`` keeps label 1 and the
  ``h = ℓ // 2`` points on each side get a soft label ``sqrt(1 - d / ℓ)``, ``d`` being the distance to the
  segment edge (``d = 1 .. h``, so every soft label is at least ``sqrt(1/2)``); overlapping contributions
  add and are clipped at 1. ℓ = 0 and ℓ = 1 give the plain 0/1 labels.
* **Range-based confusion counts** at a threshold τ (flag ``score >= τ``), with ``P`` true anomalous points
  and ``B`` the soft-label mass of flagged buffer points: ``TP = (flagged anomalous points) + B``,
  ``P' = P + B / 2``, ``recall = min(TP / P', 1)``, ``FPR = (flagged - TP) / (n - P')`` and
  ``precision = TP / flagged``. The **existence reward** is the share of buffered segments (segments
  extended by ``h`` on both sides, merged where the extensions overlap) that contain at least one flagged
  point, and ``TPR = recall * existence``.
* **Thresholds.** ``n_thresholds`` (250, as in the reference) scores taken from the descending sort at
  indices ``linspace(0, n - 1, n_thresholds)`` cast to int; ``None`` uses every distinct score.
* **Surfaces and volume.** For each ℓ in ``0 .. max_buffer`` the ROC curve runs (0, 0) → the threshold
  points → (1, 1) and is integrated with the trapezoidal rule; the PR area is
  ``Σ_j (TPR_j - TPR_{j-1}) · precision_j`` with ``TPR_0 = 0``. VUS-ROC / VUS-PR are these areas averaged
  over the ``max_buffer + 1`` buffer widths, i.e. the volume under the surface over (threshold, ℓ)
  normalised by the ℓ range, so both lie in [0, 1].

``max_buffer`` is the reference's ``slidingWindow`` (TSB-AD 1.5 ``get_metrics`` passes it as the maximal
buffer ``windowSize``; its default there is 100). The VUS authors suggest the typical anomaly length or the
period of the series.

Consequences worth knowing: a perfect score gives exactly 1.0 for both; a constant score gives VUS-ROC 0.5
and, with ``max_buffer = 0``, VUS-PR equal to the anomaly base rate (buffers credit flagged neighbours, so
an uninformative score lands somewhat above the base rate). With ``max_buffer = 0`` and a single anomaly
segment the measures are the ordinary AUROC / average precision over the sampled thresholds (exactly
scikit-learn's with ``n_thresholds=None``); with several segments the existence reward still weights TPR.
"""

from __future__ import annotations

import math

import numpy as np

from lstmad.evaluation.metrics import runs_of_true


def vus_metrics(labels: np.ndarray, scores: np.ndarray, max_buffer: int = 100,
                n_thresholds: int | None = 250) -> dict[str, float]:
    """VUS-ROC and VUS-PR of per-timestamp ``scores`` (n,) against 0/1 ``labels`` (n,); higher score = more
    anomalous. See the module docstring for the definition.

    Rows with label < 0 (unknown) are dropped before the segments are formed, as in ``score_metrics``.
    Both values are NaN when the known rows hold only one class. ``max_buffer`` (>= 0) is the largest
    buffer width ℓ; ``n_thresholds`` the number of sampled thresholds (``None``: every distinct score).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"labels and scores must be 1-d of the same length, got {labels.shape} and {scores.shape}")
    max_buffer = int(max_buffer)
    if max_buffer < 0:
        raise ValueError(f"max_buffer must be >= 0, got {max_buffer}")
    if n_thresholds is not None and int(n_thresholds) < 1:
        raise ValueError(f"n_thresholds must be >= 1 or None, got {n_thresholds}")
    known = labels >= 0
    truth = labels[known].astype(int) > 0
    scores = scores[known]
    n, n_pos = truth.size, int(truth.sum())
    if n == 0 or n_pos == 0 or n_pos == n:
        return {"vus_roc": math.nan, "vus_pr": math.nan}
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite on rows with known labels")

    # Thresholds, descending; first[x] = index of the first threshold at which row x is flagged.
    if n_thresholds is None:
        thresholds = np.unique(scores)[::-1]
    else:
        thresholds = np.sort(scores)[::-1][np.linspace(0, n - 1, int(n_thresholds)).astype(int)]
    n_thr = thresholds.size
    first = np.searchsorted(-thresholds, -scores, side="left")  # in [0, n_thr - 1]: the last one is min(scores)
    flagged = np.cumsum(np.bincount(first, minlength=n_thr)).astype(np.float64)
    tp_core = np.cumsum(np.bincount(first[truth], minlength=n_thr)).astype(np.float64)

    runs = np.asarray(runs_of_true(truth), dtype=np.int64).reshape(-1, 2)
    seg_start, seg_end = runs[:, 0], runs[:, 1] - 1  # inclusive ends

    # Normal rows within reach of the widest buffer, with distances to the nearest and second-nearest
    # segment end before them (a, a2) and segment start after them (b, b2); inf where there is none.
    h_max = max_buffer // 2
    normal = np.flatnonzero(~truth)
    big = np.int64(n + max_buffer + 2)  # "no segment": farther than any buffer reaches

    def _distances(rows: np.ndarray) -> tuple[np.ndarray, ...]:
        before = np.searchsorted(seg_end, rows, side="left") - 1  # seg_end[before] < row
        after = np.searchsorted(seg_start, rows, side="right")  # seg_start[after] > row
        n_seg = seg_start.size

        def pick(bounds: np.ndarray, index: np.ndarray, sign: int) -> np.ndarray:
            ok = (index >= 0) & (index < n_seg)
            return np.where(ok, sign * (rows - bounds[np.clip(index, 0, n_seg - 1)]), big)

        return pick(seg_end, before, 1), pick(seg_end, before - 1, 1), pick(seg_start, after, -1), \
            pick(seg_start, after + 1, -1)

    a, a2, b, b2 = _distances(normal)
    reach = np.minimum(a, b) <= h_max
    a, a2, b, b2, first_buf = a[reach], a2[reach], b[reach], b2[reach], first[normal[reach]]

    # Existence reward per half-width h: merged buffered segments, and the first threshold flagging each.
    existence, n_groups = {}, {}
    for h in range(h_max + 1):
        new_group = np.concatenate([[True], seg_end[:-1] + h < seg_start[1:] - h])
        lo = np.maximum(seg_start[new_group] - h, 0)
        hi = np.minimum(seg_end[np.r_[np.flatnonzero(new_group)[1:] - 1, seg_end.size - 1]] + h, n - 1)
        bounds = np.column_stack([lo, hi + 1]).ravel()
        if bounds[-1] == n:
            bounds = bounds[:-1]
        group_first = np.minimum.reduceat(first, bounds)[::2]
        existence[h] = np.cumsum(np.bincount(group_first, minlength=n_thr)).astype(np.float64)
        n_groups[h] = lo.size

    roc_areas, pr_areas = np.empty(max_buffer + 1), np.empty(max_buffer + 1)
    for width in range(max_buffer + 1):
        h = width // 2
        if h > 0:
            near_a, near_b = a <= h, b <= h
            several = (near_a & near_b) | (a2 <= h) | (b2 <= h)  # >= 2 soft labels >= sqrt(1/2): clipped to 1
            d = np.where(near_a, a, b)
            soft = np.where(several, 1.0,
                            np.where(near_a | near_b, np.sqrt(1.0 - np.minimum(d, h) / width), 0.0))
            buffer_mass = np.cumsum(np.bincount(first_buf, weights=soft, minlength=n_thr))
        else:
            buffer_mass = np.zeros(n_thr)
        tp = tp_core + buffer_mass
        p_range = n_pos + buffer_mass / 2
        tpr = np.minimum(tp / p_range, 1.0) * existence[h] / n_groups[h]
        fpr = (flagged - tp) / (n - p_range)
        precision = tp / flagged
        tpr_curve = np.concatenate([[0.0], tpr, [1.0]])
        fpr_curve = np.concatenate([[0.0], fpr, [1.0]])
        roc_areas[width] = np.dot(np.diff(fpr_curve), (tpr_curve[1:] + tpr_curve[:-1]) / 2)
        pr_areas[width] = np.dot(np.diff(tpr_curve[:-1]), precision)
    return {"vus_roc": float(roc_areas.mean()), "vus_pr": float(pr_areas.mean())}
