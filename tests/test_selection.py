"""Choosing a detector among model.candidates: the fault-injection study (no labels) and the labelled route.

Toy data: 6 channels driven by 2 hidden factors plus a little noise, so the channels are strongly related; a
relation-blind detector (Isolation Forest on each window's values) sees a channel that leaves the relation
(decoupling, a gain change, an offset within the normal range) far worse than PCA T²+Q, whose Q statistic is
the distance from the relation.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lstmad.detectors import IsolationForestDetector, PCAT2QDetector
from lstmad.training.selection import choose_candidate, injected_windows, injection_study
from lstmad.transforms.blocks import Windows

WINDOW = 6


def related_series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    factors = np.cumsum(rng.normal(size=(n, 2)), axis=0) * 0.05 + np.sin(np.arange(n)[:, None] / [30, 70])
    mixing = rng.normal(size=(2, 6))
    values = factors @ mixing + 0.05 * rng.normal(size=(n, 6))
    return (values - values.mean(axis=0)) / values.std(axis=0)


def windows_of(values: np.ndarray, labels: np.ndarray | None = None) -> Windows:
    ends = np.arange(WINDOW - 1, len(values))
    windows = Windows.from_array(np.stack([values[e - WINDOW + 1:e + 1] for e in ends]),
                                 None if labels is None else labels[ends])
    windows.end_us = ends.astype(np.int64) * 60_000_000
    return windows


def make(name: str):
    return {"pca_t2q": lambda: PCAT2QDetector(validation_share=0.2),
            "isolation_forest": lambda: IsolationForestDetector(seed=0, validation_share=0.2)}[name]()


@pytest.fixture(scope="module")
def study():
    windows = windows_of(related_series(4000, 1))
    return windows, injection_study(windows, {"pca_t2q": lambda: make("pca_t2q"),
                                              "isolation_forest": lambda: make("isolation_forest")}, seed=5)


def test_injected_windows_change_only_windows_that_hold_an_event_and_label_their_last_rows():
    windows = windows_of(related_series(1200, 2))
    injected, fault_of = injected_windows(windows, seed=3)
    original = np.stack([windows.batch(np.array([i]))[0].numpy() for i in range(len(windows))])
    rebuilt = np.stack([injected.batch(np.array([i]))[0].numpy() for i in range(len(windows))])
    last_changed = ~np.isclose(original[:, -1], rebuilt[:, -1]).all(axis=1)
    # a window whose last row lies in no event keeps its last row; every stuck/lag/... event changes some
    assert not last_changed[fault_of == ""].any()
    assert set(fault_of) - {""} == {"stuck", "drift", "offset", "gain", "noise_burst", "lag", "decoupling"}
    # windows never touched by an event (no event row among their W rows) are exactly the originals
    in_event = fault_of != ""
    untouched = np.array([not in_event[max(0, i - WINDOW + 1):i + 1].any() for i in range(len(windows))])
    np.testing.assert_allclose(rebuilt[untouched], original[untouched], atol=1e-6)
    # rebuilt windows are stride-1 windows of one series: row j of window i is row j+1 of window i−1
    np.testing.assert_allclose(rebuilt[1:, :-1], rebuilt[:-1, 1:], atol=1e-6)


def test_injected_faults_stay_in_the_channels_they_are_allowed_into():
    # e.g. everything but an angle's sine and cosine (channels 0 and 1)
    windows = windows_of(related_series(1200, 2))
    injected, fault_of = injected_windows(windows, seed=3, channels=[2, 3, 4, 5])
    original = np.stack([windows.batch(np.array([i]))[0].numpy() for i in range(len(windows))])
    rebuilt = np.stack([injected.batch(np.array([i]))[0].numpy() for i in range(len(windows))])
    assert (fault_of != "").sum() > 0
    np.testing.assert_allclose(rebuilt[:, :, :2], original[:, :, :2], atol=1e-6)
    assert not np.allclose(rebuilt[:, :, 2:], original[:, :, 2:], atol=1e-6)


def test_the_study_is_deterministic_given_the_seed():
    windows = windows_of(related_series(1200, 2))
    a, fa = injected_windows(windows, seed=3)
    b, fb = injected_windows(windows, seed=3)
    c, fc = injected_windows(windows, seed=4)
    assert (fa == fb).all() and np.array_equal(a.series.numpy(), b.series.numpy())
    assert not (fa == fc).all()


def test_the_study_prefers_the_detector_that_sees_relational_faults(study):
    _, results = study
    pca, forest = results["pca_t2q"], results["isolation_forest"]
    assert pca.auroc_by_fault["decoupling"] > forest.auroc_by_fault["decoupling"]
    assert pca.mean_auroc > forest.mean_auroc
    assert pca.mean_auroc == pytest.approx(np.mean(list(pca.auroc_by_fault.values())))


def test_choose_candidate_without_labels_runs_the_study_and_names_its_route():
    windows = windows_of(related_series(4000, 1))
    chosen, how, results = choose_candidate(("isolation_forest", "pca_t2q"), make, windows, None, seed=5)
    assert (chosen, how) == ("pca_t2q", "fault-injection study")
    assert set(results) == {"isolation_forest", "pca_t2q"}


def test_choose_candidate_with_labels_keeps_the_best_auroc_on_the_evaluation_range():
    train = windows_of(related_series(3000, 4))
    values = related_series(1500, 6)
    labels = np.zeros(1500, dtype=np.int8)
    labels[600:800] = 1
    values[600:800, 2] = values[600:800, 2] * -1.0  # the channel flips sign: the relation breaks, the range holds
    evaluation = windows_of(values, labels)
    chosen, how, results = choose_candidate(("isolation_forest", "pca_t2q"), make, train, evaluation, seed=0)
    assert how == "labelled evaluation range"
    independent = {name: roc_auc_score(evaluation.label_last == 1, make(name).fit(train).score(evaluation))
                   for name in ("isolation_forest", "pca_t2q")}
    assert chosen == max(independent, key=independent.get)
    for name, auroc in independent.items():
        assert results[name].mean_auroc == pytest.approx(auroc)


def test_unknown_candidates_are_refused():
    windows = windows_of(related_series(300, 1))
    with pytest.raises(ValueError, match="unknown model.candidates"):
        choose_candidate(("lstm_forecaster", "no_such_detector"), make, windows, None, seed=0)


def test_windows_across_a_hole_in_the_series_are_never_rebuilt_from_rows_on_both_sides():
    windows = windows_of(related_series(1200, 2))
    kept = np.setdiff1d(np.arange(len(windows)), np.arange(500, 540))  # 40 windows left out (masked, a state)
    holed = windows.subset(kept)
    injected, fault_of = injected_windows(holed, seed=3)
    original = np.stack([holed.batch(np.array([i]))[0].numpy() for i in range(len(holed))])
    rebuilt = np.stack([injected.batch(np.array([i]))[0].numpy() for i in range(len(holed))])
    after = int(np.searchsorted(holed.end_us, windows.end_us[540]))  # the first window after the hole
    # the W−1 windows after the hole cannot be rebuilt from one run: their history rows are the originals
    np.testing.assert_allclose(rebuilt[after:after + WINDOW - 1, :-1], original[after:after + WINDOW - 1, :-1],
                               atol=1e-6)
    assert len(fault_of) == len(holed)


def test_driver_candidates_try_each_forecaster_once_per_driver_set_and_the_others_once():
    from lstmad.training.selection import Candidate, driver_candidates

    # the source's roles (a) first; (b, a) is a set not a list: tried once, as first listed; () no drivers
    got = driver_candidates(["lstm_forecaster", "pca_t2q", "lstm_forecaster_mahalanobis"], ("a",),
                            [("b", "a"), ("a",), ("a", "b"), ()])
    assert got == [Candidate("lstm_forecaster", ("a",)), Candidate("lstm_forecaster", ("b", "a")),
                   Candidate("lstm_forecaster", ()), Candidate("pca_t2q", None),
                   Candidate("lstm_forecaster_mahalanobis", ("a",)),
                   Candidate("lstm_forecaster_mahalanobis", ("b", "a")), Candidate("lstm_forecaster_mahalanobis", ())]
    # without driver sets every candidate keeps the source's roles, as model.candidates always did
    assert driver_candidates(["lstm_forecaster", "pca_t2q"], ("a",), []) == [Candidate("lstm_forecaster"),
                                                                            Candidate("pca_t2q")]


def test_a_candidate_with_drivers_is_named_as_mlflow_accepts_a_metric_name():
    from lstmad.training.selection import Candidate

    assert Candidate("pca_t2q").label == "pca_t2q"
    assert Candidate("lstm_forecaster", ()).label == "lstm_forecaster.drivers.none"
    assert (Candidate("lstm_forecaster_mahalanobis", ("wind speed", "T/2 (°C)")).label
            == "lstm_forecaster_mahalanobis.drivers.wind_speed.T_2___C_")


def test_choose_candidate_judges_candidates_with_driver_sets_by_their_labels():
    from lstmad.training.selection import Candidate

    train = windows_of(related_series(3000, 4))
    values = related_series(1500, 6)
    labels = np.zeros(1500, dtype=np.int8)
    labels[600:800] = 1
    values[600:800, 2] = values[600:800, 2] * -1.0
    evaluation = windows_of(values, labels)
    # stand-ins for two driver sets: the candidate handed to make() decides what is built
    built = {("a",): "isolation_forest", ("b",): "pca_t2q"}
    chosen, how, results = choose_candidate(
        [Candidate("lstm_forecaster", ("a",)), Candidate("lstm_forecaster", ("b",))],
        lambda c: make(built[c.drivers]), train, evaluation, seed=0)
    assert set(results) == {"lstm_forecaster.drivers.a", "lstm_forecaster.drivers.b"}
    independent = {label: roc_auc_score(evaluation.label_last == 1, make(name).fit(train).score(evaluation))
                   for label, name in (("lstm_forecaster.drivers.a", "isolation_forest"),
                                       ("lstm_forecaster.drivers.b", "pca_t2q"))}
    assert chosen == max(independent, key=independent.get)
    with pytest.raises(ValueError, match="unknown model.candidates"):
        choose_candidate([Candidate("no_such_detector", ())], lambda c: None, train, evaluation, seed=0)


class _Recorder:
    """A stand-in detector: remembers the end times it was fitted on, scores a window by its last row's first
    channel."""

    fitted_on: list = []

    def fit(self, windows):
        _Recorder.fitted_on.append(windows.end_us.copy())
        self.validation_scores_ = np.zeros(1)
        return self

    def score(self, windows):
        return windows.batch(np.arange(len(windows)))[:, -1, 0].numpy()


def test_candidates_are_fitted_on_at_most_max_fit_windows_evenly_spaced():
    from lstmad.training.fitting import thinned
    from lstmad.training.selection import labelled_study

    values = related_series(WINDOW + 9, 1)  # 10 windows, ending at minutes 5 .. 14
    windows = windows_of(values)
    # 4 of 10 evenly spaced: positions 0, 3, 6, 9
    assert (thinned(windows, 4).end_us // 60_000_000).tolist() == [5, 8, 11, 14]
    assert thinned(windows, 0) is windows and thinned(windows, 10) is windows
    labels = np.zeros(len(values), dtype=np.int8)
    labels[-3:] = 1
    _Recorder.fitted_on.clear()
    labelled_study(windows, windows_of(values, labels), {"recorder": _Recorder}, max_fit_windows=4)
    assert (_Recorder.fitted_on[0] // 60_000_000).tolist() == [5, 8, 11, 14]


def test_both_routes_of_choose_candidate_fit_on_at_most_max_fit_windows():
    windows = windows_of(related_series(1200, 2))  # 1195 windows
    labels = np.zeros(600, dtype=np.int8)
    labels[300:350] = 1
    evaluation = windows_of(related_series(600, 3), labels)
    for route, judged in (("labelled evaluation range", evaluation), ("fault-injection study", None)):
        _Recorder.fitted_on.clear()
        _, how, _ = choose_candidate(["pca_t2q"], lambda c: _Recorder(), windows, judged, seed=0, max_fit_windows=50)
        assert how == route
        fitted = _Recorder.fitted_on[0]
        # 50 windows from the first (the study keeps its latest quarter apart: they come before it)
        assert fitted.size == 50 and fitted[0] == windows.end_us[0]
        assert np.all(np.diff(fitted) > 0)
        if judged is None:
            assert fitted[-1] < np.sort(windows.end_us)[-round(len(windows) * 0.25)]
        else:
            assert fitted[-1] == windows.end_us[-1]
