"""The nested choice of normal-behaviour roles on SKAB (lstmad.benchmarks.skab_roles), on hand-worked rows."""

import numpy as np
import pytest

from lstmad.benchmarks import skab_roles


def test_driver_sets_are_every_small_set_and_leave_a_channel_to_score():
    assert skab_roles.driver_sets(3, 2) == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    assert skab_roles.driver_sets(2, 5) == [(), (0,), (1,)]  # both channels as drivers would leave none to score
    assert len(skab_roles.driver_sets(8, 2)) == 1 + 8 + 28


def test_the_goal_criterion_puts_every_candidate_within_the_far_bound_first():
    truth = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    # flags rows 0, 1, 2, 3: tp 2, fp 2, fn 0, tn 6 → F1 = 2 / (2 + 1) = 0.667 at FAR 2/8 = 25 % (outside 20 %)
    loud = np.array([2, 2, 2, 2, 0, 0, 0, 0, 0, 0], float)
    # flags row 0 only: tp 1, fp 0, fn 1, tn 8 → F1 = 1 / (1 + 0.5) = 0.667 − 0 at FAR 0
    quiet = np.array([2, 0, 0, 0, 0, 0, 0, 0, 0, 0], float)
    assert skab_roles.criterion_value("f1_far_bound", loud, truth) == pytest.approx(2 / 3 - 1)
    assert skab_roles.criterion_value("f1_far_bound", quiet, truth) == pytest.approx(2 / 3)
    # AUROC: the loud scores tie rows 0-3 (2 anomalous, 2 normal above 6 normal): (2·6 + 2·2·0.5) / 16 = 0.875
    assert skab_roles.criterion_value("auroc", loud, truth) == pytest.approx(0.875)
    # FAR exactly at the bound is within it: flags rows 0, 2: tp 1, fp 1, fn 1, tn 4 → F1 0.5 at FAR 1/5
    at_bound = np.array([2, 0, 2, 0, 0, 0, 0], float)
    assert skab_roles.criterion_value("f1_far_bound", at_bound, truth[[0, 1, 2, 3, 4, 5, 6]]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown criterion 'f2'"):
        skab_roles.criterion_value("f2", loud, truth)


def test_each_group_is_judged_by_a_choice_made_without_its_rows():
    # pairs of rows (anomalous, normal); "x" ranks a pair right (ratios 2, 0.5) where "y" ranks it wrong, and
    # the other way round. Group a: 2 pairs that x gets right; b: 1 pair and c: 2 pairs that y gets right.
    right, wrong = [2.0, 0.5], [0.5, 2.0]
    group = np.array(["a"] * 4 + ["b"] * 2 + ["c"] * 4)
    truth = np.array([1, 0] * 5, bool)
    x = np.array(right * 2 + wrong * 1 + wrong * 2)
    y = np.array(wrong * 2 + right * 1 + right * 2)
    choice = skab_roles.nested_choice({"x": x, "y": y}, truth, group, "f1_far_bound")
    # a left out: on b + c, x gets 0 of 3 pairs right, y 3 of 3 → y, which gets a wrong.
    # b left out: on a + c, each gets 2 of 4 right (F1 0.5, FAR 50 %) → the tie goes to x, listed first: wrong.
    # c left out: on a + b, x gets 2 of 3 (F1 2/3, FAR 1/3), y 1 of 3 → x, which gets c wrong.
    assert choice["chosen"] == {"a": "y", "b": "x", "c": "x"}
    # a choice per group that saw the group (x for a, y for b and c) would judge every pair right; chosen on the
    # other groups alone, every pair is judged wrong
    assert (choice["tp"], choice["fp"], choice["fn"], choice["tn"]) == (0, 5, 5, 0)
    assert choice["f1"] == 0.0 and choice["far"] == 1.0 and choice["auroc"] == 0.0
    assert choice["by_group"]["a"] == {"f1": 0.0, "far": 1.0, "mar": 1.0}
    np.testing.assert_array_equal(choice["ratios"], np.concatenate([y[:4], x[4:]]))


def test_the_auroc_rule_chooses_by_ranking_and_a_one_class_choosing_set_never_wins():
    # group a: x ranks its pair right, y wrong; group b: both rank theirs right but y above any threshold
    group = np.array(["a", "a", "b", "b"])
    truth = np.array([1, 0, 1, 0], bool)
    x = np.array([2.0, 0.5, 0.9, 0.1])  # b: ranked right, nothing flagged
    y = np.array([0.5, 2.0, 3.0, 2.5])  # b: ranked right, everything flagged
    choice = skab_roles.nested_choice({"x": x, "y": y}, truth, group, "auroc")
    # a left out: both rank b's pair right (AUROC 1) → the tie goes to x; b left out: on a, x 1.0 against y 0.0
    assert choice["chosen"] == {"a": "x", "b": "x"}
    assert (choice["tp"], choice["fp"], choice["fn"], choice["tn"]) == (1, 0, 1, 2)
    # choosing rows of one class give no AUROC: such a candidate value counts as the worst, not as an error
    lonely = skab_roles.nested_choice({"x": x, "y": y}, np.array([1, 0, 0, 0], bool), group, "auroc")
    assert lonely["chosen"]["a"] == "x"  # b alone holds no anomaly: every value NaN, the first listed stays
