"""Out-of-fold calibration (lstmad.training.cross_fit): folds and purging against hand-worked examples, no
window scored by a model that saw any of its rows, and a budget that holds on fresh data where a threshold
from the latest slice does not."""

from __future__ import annotations

import numpy as np
import pytest

from lstmad.config import ConfigError, load_config
from lstmad.detectors import PCAT2QDetector
from lstmad.evaluation.calibration import conformal_threshold
from lstmad.training.cross_fit import fit_mask, fold_plan, out_of_fold_scores, time_folds
from lstmad.transforms.blocks import Windows
from tests.conftest import DEMO_CONF


def test_folds_take_every_other_chunk_of_the_span():
    # 20 end times 0..19, 2 folds × 2 chunks: edges 0, 5, 10, 15, 20; chunks 0 and 2 in fold 0, 1 and 3 in fold 1
    fold, edges = time_folds(np.arange(20), folds=2, chunks_per_fold=2)
    np.testing.assert_allclose(edges, [0, 5, 10, 15, 20])
    np.testing.assert_array_equal(fold, [0] * 5 + [1] * 5 + [0] * 5 + [1] * 5)


def test_windows_near_a_held_out_chunk_are_not_fitted_on():
    end_us = np.arange(20)
    fold, edges = time_folds(end_us, folds=2, chunks_per_fold=2)
    # fold 0 holds [0, 5) and [10, 15); reach 2 leaves out of the fit 5, 6 (after the first) and 9 (before the
    # second), 15, 16 (after it): of fold 1's 5..9 and 15..19, 7, 8, 17, 18, 19 remain
    keep = fit_mask(end_us, fold, edges, 2, 0, reach_us=2)
    np.testing.assert_array_equal(np.flatnonzero(keep), [7, 8, 17, 18, 19])
    np.testing.assert_array_equal(np.flatnonzero(fit_mask(end_us, fold, edges, 2, 0, reach_us=0)),
                                  [5, 6, 7, 8, 9, 15, 16, 17, 18, 19])


def test_a_fold_that_would_fit_on_too_few_windows_is_refused_before_any_fit():
    # 20 windows, 5 folds of 4 one-window chunks: fold 1 holds 0, 5, 10, 15, and a reach of 3 purges every
    # window closer than 3 to them (1–3, 4–8, 8–13, 13–18): only window 19 is left to fit on
    with pytest.raises(ValueError, match="fold 1 of 5 leaves 1 windows to fit on"):
        fold_plan(np.arange(20), 5, reach_us=3)


class RowMemory:
    """A stand-in detector that remembers the series rows of the windows it was fitted on and scores a window
    by how many of its rows it has seen."""

    def fit(self, windows: Windows):
        self.seen = windows.covered_rows()
        return self

    def score(self, windows: Windows) -> np.ndarray:
        rows = windows.starts[:, None] + np.arange(windows.window)
        return self.seen[rows].sum(axis=1).astype(np.float64)


def test_no_window_is_scored_by_a_model_that_saw_one_of_its_rows():
    series_windows = shared_series_windows(400, window=8)
    purged = out_of_fold_scores(lambda w: RowMemory().fit(w), series_windows, fold_plan(series_windows.end_us, 5, 8))
    assert np.isfinite(purged).all()
    np.testing.assert_array_equal(purged, 0.0)
    leaky = out_of_fold_scores(lambda w: RowMemory().fit(w), series_windows, fold_plan(series_windows.end_us, 5, 0))
    assert (leaky > 0).sum() > 0  # without purging, windows next to a chunk edge share rows with the fit


def shared_series_windows(n_rows: int, window: int) -> Windows:
    """Windows over one (n_rows, 1) series, as prepare's blocks give them: window i covers rows i..i+W−1."""
    import torch

    n = n_rows - window + 1
    ends = np.arange(window - 1, n_rows, dtype=np.int64)
    return Windows(torch.zeros(n_rows, 1), np.arange(n), window, ends, np.zeros(n, dtype=np.int64), ["a"],
                   np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8))


def seasonal_rows(n: int, phase: float, seed: int) -> np.ndarray:
    """(n, 3) Gaussian rows whose spread follows a season: σ = 1 + 0.6 sin(2π t / n + phase)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return rng.normal(size=(n, 3)) * (1 + 0.6 * np.sin(2 * np.pi * t / n + phase))[:, None]


def windows_of_rows(rows: np.ndarray) -> Windows:
    windows = Windows.from_array(rows[:, None, :], np.zeros(len(rows), dtype=np.int8))
    windows.end_us = np.arange(len(rows), dtype=np.int64)
    return windows


def test_out_of_fold_calibration_keeps_its_budget_on_a_new_season_where_the_latest_slice_does_not():
    # a year of training rows whose latest fifth is the calm season (σ = 0.4 at 90 % of the range: 2π·0.9 − 0.3π
    # = 3π/2); the fresh rows span every season. 0.55 of them exceed the latest slice's threshold (four seeds)
    train = windows_of_rows(seasonal_rows(5000, phase=-0.3 * np.pi, seed=1))
    fresh = windows_of_rows(seasonal_rows(20000, phase=0.0, seed=2))
    budget = 0.05
    detector = PCAT2QDetector(validation_share=0.2).fit(train)
    latest_slice = conformal_threshold(detector.validation_scores_, budget)
    out_of_fold = conformal_threshold(out_of_fold_scores(lambda w: PCAT2QDetector(validation_share=0.2).fit(w), train,
                                                         fold_plan(train.end_us, 5, reach_us=1)), budget)
    fresh_scores = detector.score(fresh)
    assert np.mean(fresh_scores > latest_slice) > 4 * budget
    assert budget / 2 <= np.mean(fresh_scores > out_of_fold) <= 1.5 * budget


@pytest.mark.parametrize("overrides, key", [({"threshold.cross_fit_folds": 1}, "threshold.cross_fit_folds"),
                                            ({"threshold.cross_fit_folds": 5, "threshold.calibration_share": 0.1},
                                             "threshold.calibration_share")])
def test_cross_fit_settings_that_cannot_work_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO_CONF, overrides)
    assert load_config(DEMO_CONF, {"threshold.cross_fit_folds": 5}).threshold.cross_fit_folds == 5


@pytest.mark.parametrize("overrides, folds", [
    ({"model.detector": "pca_t2q"}, 5),
    ({"model.detector": "isolation_forest"}, 5),
    ({"model.detector": "lstm_forecaster"}, 0),  # k more LSTM fits: only when asked
    ({"model.detector": "lstm_autoencoder"}, 0),
    ({"model.detector": "pca_t2q", "threshold.calibration_share": 0.1}, 0),  # the slice was asked for
    ({"model.detector": "pca_t2q", "threshold.cross_fit_folds": 0}, 0),
    ({"model.detector": "lstm_forecaster", "threshold.cross_fit_folds": 3}, 3),
])
def test_unset_folds_cross_fit_the_detectors_that_fit_in_seconds_unless_told_otherwise(overrides, folds):
    from lstmad.detectors import build_detector
    from lstmad.training.fitting import calibration_folds

    config = load_config(DEMO_CONF, overrides)
    assert calibration_folds(config, build_detector(config.model)) == folds


def test_unset_folds_fall_back_to_the_validation_windows_where_asked_folds_are_refused(caplog):
    # 20 windows 1 µs apart and a purge reach of two 1-second steps: every fold leaves none to fit on
    from lstmad.layout import PrepareError
    from lstmad.training.fitting import folds_of

    few = windows_of_rows(np.zeros((20, 3)))
    unset = load_config(DEMO_CONF, {"prepare.window": 2, "prepare.step_s": 1})
    assert unset.threshold.cross_fit_folds is None
    with caplog.at_level("WARNING", logger="lstmad"):
        assert folds_of(few, 5, unset) is None
    assert "no out-of-fold calibration (cross-fitting fold 1 of 5 leaves 0 windows" in caplog.text
    asked = load_config(DEMO_CONF, {"prepare.window": 2, "prepare.step_s": 1, "threshold.cross_fit_folds": 5})
    with pytest.raises(PrepareError, match="threshold.cross_fit_folds: cross-fitting fold 1 of 5 leaves 0 windows"):
        folds_of(few, 5, asked)
