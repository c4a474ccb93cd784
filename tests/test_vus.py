"""VUS-ROC / VUS-PR against TheDatumOrg's reference implementation, scikit-learn and hand-worked cases.

Reference values: TSB-AD 1.5 (the PyPI wheel TSB_AD-1.5-py3-none-any.whl) installed with ``--no-deps`` into a
throwaway virtualenv beside numpy 2.4.6 and scikit-learn 1.9.1 (TSB-AD itself pins numpy<2, which lstmad's
stack cannot take), running ``TSB_AD.evaluation.basic_metrics.generate_curve(labels, score, L, "opt", thr)``,
whose last two results are VUS-ROC and VUS-PR (``RangeAUC_volume_opt``). The inputs below are rebuilt
here from integer arithmetic (no random generator), so they are the same bytes the reference saw.
"""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lstmad.evaluation.vus import vus_metrics


def _hashed(n: int, mult: int = 7919, mod: int = 1009) -> np.ndarray:
    """Deterministic noise in [0, 1) from integer arithmetic."""
    return ((np.arange(n, dtype=np.int64) * mult + 13) % mod) / mod


def _labels(n: int, segments) -> np.ndarray:
    y = np.zeros(n, dtype=int)
    for start, end in segments:
        y[start:end] = 1
    return y


def _reference_cases():
    n = 3000
    # segments at both ends, two that merge once buffered, single points, a long one
    y = _labels(n, [(0, 5), (300, 340), (352, 360), (900, 901), (905, 906), (1500, 1620), (2400, 2401), (2990, 3000)])
    bump = np.convolve(np.roll(y, 7).astype(float), np.ones(9) / 9, mode="same")  # detector lagging by 7 steps
    lagged = 0.6 * _hashed(n) + bump
    ties = np.floor(5 * _hashed(n, 104729, 997)) + 2 * y * (_hashed(n, 31, 7) > 0.3)  # integer scores: many ties
    y1 = _labels(2000, [(800, 950)])
    single = 0.5 * _hashed(2000, 2749, 4001) + np.convolve(np.roll(y1, -20).astype(float), np.ones(31) / 31, "same")
    # name: labels, scores, max_buffer, n_thresholds, (reference VUS-ROC, reference VUS-PR)
    return {
        "lagged_L20": (y, lagged, 20, 250, (0.9509056254238899, 0.831052031874225)),
        "lagged_L100": (y, lagged, 100, 250, (0.9892312302087772, 0.956198675779327)),
        "lagged_L7_thr50": (y, lagged, 7, 50, (0.8890522422530833, 0.6611038807143845)),
        "ties_L30": (y, ties, 30, 250, (0.723689044627929, 0.26315532474747927)),
        "noise_L40": (y, _hashed(n, 6007, 10007), 40, 250, (0.5737709110726895, 0.08301369137461484)),
        "single_L50": (y1, single, 50, 250, (0.9885062957800048, 0.945894777583295)),
    }


@pytest.mark.parametrize("name", list(_reference_cases()))
def test_matches_reference_implementation(name):
    labels, scores, max_buffer, n_thresholds, (roc, pr) = _reference_cases()[name]
    m = vus_metrics(labels, scores, max_buffer=max_buffer, n_thresholds=n_thresholds)
    assert m["vus_roc"] == pytest.approx(roc, abs=1e-12)
    assert m["vus_pr"] == pytest.approx(pr, abs=1e-12)


TINY_LABELS = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
TINY_SCORES = np.array([0.98, 0.48, 0.31, 0.17, 0.53, 0.73, 0.75, 0.03, 0.03, 0.6, 0.39, 0.14, 0.26, 1.08, 0.54,
                        0.51, 0.24, 0.3, 0.41, 0.04, 0.33, 0.66, 1.03, 0.04, 0.41, 0.52, 0.14, 0.54, 0.52, 0.01])


@pytest.mark.parametrize("max_buffer, n_thresholds, roc, pr", [
    (0, 250, 0.2996894409937888, 0.2509661835748792),  # reference values (see module docstring)
    (6, 250, 0.6851078229756055, 0.552798688039306),
    (9, 20, 0.770165848035625, 0.6566541711288246),
])
def test_tiny_literal_case_matches_reference(max_buffer, n_thresholds, roc, pr):
    m = vus_metrics(TINY_LABELS, TINY_SCORES, max_buffer, n_thresholds)
    assert (m["vus_roc"], m["vus_pr"]) == pytest.approx((roc, pr), abs=1e-12)


def test_hand_worked_lagged_peak():
    # one anomaly at row 1; the highest score sits on its right neighbour. Thresholds 0.9, 0.5, 0.3, 0.1.
    labels, scores = np.array([0, 1, 0, 0]), np.array([0.3, 0.5, 0.9, 0.1])
    # ℓ = 0 and 1: no buffer. ROC (0,0) (1/3,0) (1/3,1) (2/3,1) (1,1) (1,1): area 2/3; AP = 1 * 1/2.
    # ℓ = 2: rows 0 and 2 get soft label r = sqrt(1 - 1/2). At 0.9 (row 2 flagged): TP = r, P' = 1 + r/2,
    # TPR = r / (1 + r/2) (the buffered segment [0, 2] holds a flag), FPR = (1 - r) / (4 - P'), precision r.
    # At 0.5 TPR reaches 1 while FPR stays (1 - r) / (4 - P'), precision (1 + r) / 2; the rest adds TPR 0.
    r = math.sqrt(0.5)
    tpr1, fpr1 = r / (1 + r / 2), (1 - r) / (3 - r / 2)
    roc2 = fpr1 * tpr1 / 2 + (1 - fpr1)
    ap2 = tpr1 * r + (1 - tpr1) * (1 + r) / 2
    m = vus_metrics(labels, scores, max_buffer=2, n_thresholds=None)
    assert m["vus_roc"] == pytest.approx((2 / 3 + 2 / 3 + roc2) / 3, abs=1e-12)
    assert m["vus_pr"] == pytest.approx((1 / 2 + 1 / 2 + ap2) / 3, abs=1e-12)
    assert vus_metrics(labels, scores, max_buffer=2)["vus_roc"] == pytest.approx(m["vus_roc"])  # 250 thresholds
    assert m["vus_roc"] > roc_auc_score(labels, scores)  # the buffer credits the one-step lag


@pytest.mark.parametrize("max_buffer", [0, 1, 10, 100])
def test_perfect_score_gives_one(max_buffer):
    labels = _labels(5000, [(0, 3), (1000, 1040), (1045, 1050), (4990, 5000)])
    m = vus_metrics(labels, labels * 2.0 + 1.0, max_buffer=max_buffer)
    assert m == {"vus_roc": 1.0, "vus_pr": 1.0}


def test_constant_score_without_buffer_is_chance_and_base_rate():
    labels = _labels(1000, [(100, 130), (600, 610)])
    m = vus_metrics(labels, np.zeros(1000), max_buffer=0)
    assert m["vus_roc"] == pytest.approx(0.5, abs=1e-12)
    assert m["vus_pr"] == pytest.approx(labels.mean(), abs=1e-12)


def test_uninformative_score_is_near_chance():
    n = 20_000
    labels = _labels(n, [(2000, 2100), (7000, 7050), (12000, 12200), (17000, 17080)])
    scores = np.random.default_rng(0).random(n)
    m = vus_metrics(labels, scores, max_buffer=10)
    assert m["vus_roc"] == pytest.approx(0.5, abs=0.05)
    # buffers credit flagged neighbours, so chance VUS-PR sits a little above the base rate
    assert labels.mean() * 0.8 < m["vus_pr"] < labels.mean() * 1.5


def test_zero_buffer_single_segment_is_sklearn_auroc_and_ap():
    n = 20_000
    labels = _labels(n, [(5000, 5400)])
    scores = np.random.default_rng(1).random(n) + 0.3 * labels
    exact = vus_metrics(labels, scores, max_buffer=0, n_thresholds=None)  # every distinct score a threshold
    assert exact["vus_roc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert exact["vus_pr"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    sampled = vus_metrics(labels, scores, max_buffer=0)  # 250 sampled thresholds, as the reference
    assert sampled["vus_roc"] == pytest.approx(roc_auc_score(labels, scores), abs=0.005)
    assert sampled["vus_pr"] == pytest.approx(average_precision_score(labels, scores), abs=0.05)


def test_unknown_rows_ignored_single_class_nan_and_monotone_invariance():
    labels, scores, max_buffer, n_thresholds, _ = _reference_cases()["lagged_L20"]
    base = vus_metrics(labels, scores, max_buffer, n_thresholds)
    with_unknown = np.concatenate([labels, [-1, -1]])
    assert vus_metrics(with_unknown, np.concatenate([scores, [9.0, -9.0]]), max_buffer) == base
    assert vus_metrics(labels, np.exp(3 * scores), max_buffer) == pytest.approx(base, abs=1e-12)
    for one_class in (np.zeros(50), np.ones(50), np.array([-1, 0, 0])):
        m = vus_metrics(one_class, np.arange(one_class.size, dtype=float))
        assert math.isnan(m["vus_roc"]) and math.isnan(m["vus_pr"])
    with pytest.raises(ValueError):
        vus_metrics(labels, scores[:-1])
