"""Threshold rules and metrics against hand-worked values and scikit-learn."""

import math

import numpy as np
import pytest

from lstmad.evaluation.calibration import calibrate
from lstmad.evaluation.metrics import score_metrics
from lstmad.evaluation.thresholds import mean_std_threshold, percentile_threshold


def test_percentile_threshold_interpolates_like_numpy_definition():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    # 95th percentile, linear: position 0.95 * 99 = 94.05 -> 95 + 0.05 * (96 - 95)
    assert percentile_threshold(scores, 95) == pytest.approx(95.05)
    three = np.array([0.0, 10.0, np.nan])
    assert calibrate("percentile", three, np.arange(3) * 60_000_000, np.zeros(3, object), percentile=50).threshold == 5.0


def test_mean_std_threshold_hand_worked():
    assert mean_std_threshold(np.array([1.0, 3.0]), k=2) == pytest.approx(2.0 + 2 * 1.0)
    with pytest.raises(ValueError, match="no finite scores"):
        mean_std_threshold(np.array([np.nan]))


def test_metrics_hand_worked_confusion():
    labels = np.array([0, 0, 0, 1, 1, -1])
    scores = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 5.0])  # last row unlabeled: ignored
    m = score_metrics(labels, scores, threshold=0.5)
    # flags on known rows: [F, T, F, T, F] -> TP 1, FP 1, FN 1
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    # AUROC by pair counting: positives 0.9, 0.4 vs negatives 0.1, 0.6, 0.2 -> 5 of 6 pairs ordered
    assert m["auroc"] == pytest.approx(5 / 6)
    # average precision: ranks 0.9 (P), 0.6 (N), 0.4 (P) -> (1/2)(1 + 2/3)
    assert m["pr_auc"] == pytest.approx(0.5 * (1 + 2 / 3))
    assert m["alarm_rate"] == pytest.approx(2 / 5) and m["n_anomalous"] == 2


def test_single_class_gives_nan_auroc():
    m = score_metrics(np.zeros(4, int), np.arange(4.0), 1.5)
    assert math.isnan(m["auroc"]) and math.isnan(m["pr_auc"])


def test_skab_confusion_metrics_hand_worked():
    from lstmad.evaluation.metrics import confusion_metrics

    m = confusion_metrics(tp=6, fp=2, fn=4, tn=8)
    assert m["f1"] == pytest.approx(6 / (6 + 3)) and m["far"] == pytest.approx(0.2) and m["mar"] == pytest.approx(0.4)


def test_point_adjusted_and_event_metrics():
    from lstmad.evaluation.metrics import event_metrics, point_adjusted_f1

    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    flags = np.array([0, 0, 1, 0, 0, 0, 0, 0, 1, 1], bool)
    # adjusted: event 1 fully detected (3 TP), event 2 missed (2 FN), 2 FP -> F1 = 6 / (6 + 2 + 2)
    assert point_adjusted_f1(labels, flags) == pytest.approx(0.6)
    events = event_metrics(labels, flags)
    assert events == {"event_precision": 0.5, "event_recall": 0.5}


def test_skab_rule_and_best_f1_oracle():
    from lstmad.evaluation.thresholds import best_f1_threshold, skab_threshold

    assert skab_threshold(np.arange(101.0), quantile=0.5, factor=2.0) == 100.0
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.5, 0.9])
    t = best_f1_threshold(labels, scores)
    flags = scores > t
    assert flags.tolist() == [False, False, True, True, True]  # F1 0.8 beats 0.9-only (0.667)


def test_pot_threshold_on_exponential_tail():
    from lstmad.evaluation.thresholds import pot_threshold

    # Exponential(1): excesses over any level are Exponential(1) (GPD with γ = 0, σ = 1), so the score
    # exceeded with probability 1e-4 is −ln(1e-4) = 9.21.
    scores = np.random.default_rng(0).exponential(size=200_000)
    assert pot_threshold(scores, risk=1e-4, initial_level=0.98) == pytest.approx(-np.log(1e-4), rel=0.05)


def test_rules_are_recorded_with_their_parameter():
    scores, times, assets = np.arange(1.0, 101.0), np.arange(100) * 60_000_000, np.zeros(100, object)

    def text(rule: str, **given) -> str:
        return calibrate(rule, scores, times, assets, source="validation", **given).description

    assert text("percentile", percentile=99.5) == "percentile 99.5 of validation scores"
    assert text("mean_std") == "mean + 3 std of validation scores"
    assert text("row_rate", budget=0.01) == "row rate 0.01 (conformal) of validation scores"


def test_auroc_counts_ties_as_one_half_by_hand_and_against_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from lstmad.evaluation.metrics import auroc

    # positives 0.8 and 0.5, negatives 0.5 and 0.1: pairs (0.8, 0.5) 1, (0.8, 0.1) 1, (0.5, 0.5) ½, (0.5, 0.1) 1
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.8, 0.5, 0.5, 0.1])) == pytest.approx(3.5 / 4)
    assert math.isnan(auroc(np.array([0, 0]), np.array([0.1, 0.2])))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000)
    scores = np.round(rng.normal(size=5000) + labels, 1)  # many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # either class the larger (the larger one is sorted, the smaller looked up in it); float32 scores
    for share in (0.1, 0.9):
        labels = (rng.random(5000) < share).astype(np.int8)
        scores = np.round(rng.normal(size=5000) + labels, 1).astype(np.float32)
        assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_the_promotion_gate_compares_two_models_on_the_windows_both_judge_normal():
    import pyarrow as pa

    from lstmad import names
    from lstmad.evaluation.promotion import on_common_windows

    def table(assets, stamps, scores, labels, states):
        return pa.table({names.ASSET: assets, "timestamp_us": pa.array(stamps, pa.int64()), names.SCORE: scores,
                         names.LABEL: pa.array(labels, pa.int8()), names.STATE: pa.array(states, pa.int8())})

    # champion: asset a at t = 1 … 5, a stop at t = 3 (its window judges that row); asset b only it scored
    champion = table(["a"] * 5 + ["b"], [1, 2, 3, 4, 5, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.9],
                     [0, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 0])
    # challenger (judging more rows, so more windows touch a state): a at t = 2 … 6, given in another order
    challenger = table(["a"] * 5, [6, 5, 4, 3, 2], [6.0, 5.0, 4.0, 3.0, 2.0], [0, 0, 1, 1, 0], [0, 1, 0, 2, 0])
    # both scored and both normal: a at t = 2 and t = 4 (t = 3 and 5 are outside normal operation for one)
    champion_scores, challenger_scores, labels = on_common_windows(champion, challenger)
    assert champion_scores.tolist() == [0.2, 0.4]
    assert challenger_scores.tolist() == [2.0, 4.0]
    assert labels.tolist() == [0, 1]
    # no window in common: nothing to compare
    none = on_common_windows(champion, table(["c"], [1], [1.0], [0], [0]))
    assert [len(x) for x in none] == [0, 0, 0]
