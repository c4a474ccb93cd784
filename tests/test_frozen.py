"""Frozen channels (lstmad.detectors.frozen): runs of unchanged rows against hand-worked series, p-values
against hand counts, the score map against a known distribution, and a stuck driver that a normal-behaviour
model cannot see found once ``frozen_channels`` is on, with the threshold's budget kept on fresh normal data.

Toy: ambient temperature (a driver the response does not depend on), wind speed (driver) and power
(response, 1.5 · wind + noise). The fault: the temperature sensor holds its last reading for 400 rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lstmad.detectors import LSTMAutoencoderDetector, LSTMForecasterDetector
from lstmad.detectors.frozen import FrozenChannels, trailing_runs
from lstmad.transforms.blocks import Windows


def test_trailing_runs_count_the_windows_last_unchanged_rows():
    # channel 0: 1 2 2 2 5 5 ; channel 1 never changes. Windows of 3 rows end at rows 2..5.
    series = np.array([[1, 7], [2, 7], [2, 7], [2, 7], [5, 7], [5, 7]], dtype=np.float32)
    windows = Windows.from_array(np.stack([series[e - 2:e + 1] for e in range(2, 6)]))
    # by hand, per window end: row 2: ch0 2=2 → 1, ch1 → 2 (capped at W−1); row 3: 2; row 4: 0; row 5: 1
    np.testing.assert_array_equal(trailing_runs(windows), [[1, 2], [2, 2], [0, 2], [1, 2]])


def test_trailing_runs_equal_a_plain_loop_over_each_window_on_random_series_with_repeats_and_gaps():
    rng = np.random.default_rng(4)
    series = rng.integers(0, 3, size=(400, 3)).astype(np.float32)  # many repeats
    series[rng.random((400, 3)) < 0.05] = np.nan  # NaN never equals anything: a change
    window = 7
    windows = Windows.from_array(np.stack([series[e - window + 1:e + 1] for e in range(window - 1, 400)]))
    expected = np.zeros((len(windows), 3), dtype=int)
    for i, e in enumerate(range(window - 1, 400)):
        for c in range(3):
            run = 0
            while run < window - 1 and series[e - run, c] == series[e - run - 1, c]:
                run += 1
            expected[i, c] = run
    np.testing.assert_array_equal(trailing_runs(windows), expected)


def test_a_change_within_float32_rounding_is_no_change_but_a_real_step_is():
    values = np.array([[1.0], [1.0 + 1e-7], [1.0 + 1e-7], [1.01]], dtype=np.float32)
    windows = Windows.from_array(values[None])
    np.testing.assert_array_equal(trailing_runs(windows), [[0]])  # the last row changed by 0.01
    np.testing.assert_array_equal(trailing_runs(Windows.from_array(values[None, :3])), [[2]])


def test_p_values_are_the_rarest_channels_share_of_reference_windows_at_least_as_still():
    # window 8 (runs up to 7; shortest counted run: max(3, ceil(8/4)) = 3); 9 reference windows, 2 channels
    reference = np.array([[0, 0], [1, 0], [3, 0], [3, 0], [4, 0], [7, 0], [7, 0], [7, 3], [2, 0]])
    frozen = FrozenChannels().fit(reference, window=8)
    p = frozen.p_values(np.array([[7, 0], [3, 0], [0, 5], [2, 2], [4, 3]]))
    # by hand: ch0 ≥7: 3 windows → (1+3)/10 · 2 = 0.8; ch0 ≥3: 6 → 1.4 → 1; ch1 ≥5: 0 → 0.2;
    # runs of 2 count as none → 1; ch0 ≥4: 4 → 1.0, ch1 ≥3: 1 → 0.4 → the smaller, 0.4
    np.testing.assert_allclose(p, [0.8, 1.0, 0.2, 1.0, 0.4])
    np.testing.assert_array_equal(frozen.frozen_channel(np.array([[7, 0], [0, 5]])), [0, 1])


def test_the_blamed_channel_is_the_one_the_p_value_comes_from_short_runs_not_counted():
    # channel 0 never repeated a value in the reference; channel 1 often sat still for 3 or more rows
    reference = np.column_stack([np.zeros(10, dtype=int), [0, 0, 0, 0, 0, 3, 3, 7, 7, 7]])
    frozen = FrozenChannels().fit(reference, window=8)
    runs = np.array([[1, 7], [2, 0], [3, 7]])
    # by hand: row 0: channel 0's run of 1 is below 3 → none; channel 1 ≥ 7: 3 of 10 → p = 2·4/11
    # row 1: nothing counted → 1; row 2: channel 0 ≥ 3: none of 10 → 2·1/11, rarer than channel 1's 2·4/11
    np.testing.assert_allclose(frozen.p_values(runs), [8 / 11, 1.0, 2 / 11])
    np.testing.assert_array_equal(frozen.frozen_channel(runs[[0, 2]]), [1, 0])


def test_the_score_map_with_few_validation_scores_is_the_exponential_tail_of_their_largest():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, np.nan, np.inf])
    frozen = FrozenChannels().fit(np.zeros((5, 1), dtype=int), window=8).map_to(scores)
    # 11 finite scores: k = 10, the tail starts at the 11th largest (0) with scale mean(1..10) = 5.5, from
    # p = 10/11 down; p = 0.01 → 5.5 · ln((10/11)/0.01)
    np.testing.assert_allclose(frozen.scores_of(np.array([0.01])), 5.5 * np.log((10 / 11) / 0.01))
    with pytest.raises(ValueError, match="at least 2 finite validation scores"):
        FrozenChannels().fit(np.zeros((5, 1), dtype=int), window=8).map_to(np.array([1.0, np.nan]))


def test_the_score_map_gives_the_validation_quantile_and_an_exponential_tail_beyond_it():
    rng = np.random.default_rng(0)
    scores = rng.exponential(2.0, 20_000)  # survival exp(−s/2): the score of tail probability p is 2·ln(1/p)
    frozen = FrozenChannels().fit(np.zeros((10, 1), dtype=int), window=8).map_to(scores)
    p = np.array([0.04, 0.02, 1e-3, 1e-5])
    np.testing.assert_allclose(frozen.scores_of(p), 2.0 * np.log(1 / p), rtol=0.06)
    assert np.all(np.isneginf(frozen.scores_of(np.array([0.05, 0.5, 1.0]))))  # common stillness: no floor



def test_a_threshold_on_floored_validation_scores_keeps_its_budget_on_fresh_windows():
    """Scores and stillness drawn from one known distribution in which a channel often sits still (runs
    geometric, a fifth of the windows still for ≥ 3 rows): the reference and the map from one sample, the
    99th percentile of the floored validation scores as the threshold, and fresh samples alarm at ≈ 1 %."""
    rng = np.random.default_rng(1)

    def sample(n):
        runs = np.minimum(rng.geometric(0.35, size=(n, 4)) - 1, 15)
        return rng.exponential(1.0, n), runs

    _, reference_runs = sample(20_000)
    validation_scores, validation_runs = sample(5_000)
    frozen = FrozenChannels().fit(reference_runs, window=16).map_to(validation_scores)
    floored = np.maximum(validation_scores, frozen.scores_of(frozen.p_values(validation_runs)))
    assert np.mean(floored > validation_scores) > 0.005  # the floor does act on this distribution
    threshold = np.quantile(floored, 0.99)
    fresh_scores, fresh_runs = sample(200_000)
    fresh = np.maximum(fresh_scores, frozen.scores_of(frozen.p_values(fresh_runs)))
    assert 0.007 <= np.mean(fresh > threshold) <= 0.013

# ------------------------------------------------------------------ a stuck driver on a toy turbine

WINDOW, TRAIN_ROWS, TEST_ROWS = 12, 3000, 2000
STUCK = slice(TRAIN_ROWS + 800, TRAIN_ROWS + 1200)
SETTINGS = dict(hidden_sizes=(16,), dropout=0.0, learning_rate=0.01, epochs=6, batch_size=128, patience=3, seed=0,
                device="cpu", drivers=(0, 1), error_model="mahalanobis")


def toy_turbine(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, 3) [ambient, wind, power] standardised on the training rows, labels (n,): 1 where stuck)."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + TEST_ROWS
    ambient = np.sin(np.arange(n) / 150) + 0.1 * rng.normal(size=n)  # daily swing and sensor noise
    wind = np.zeros(n)
    for t in range(1, n):
        wind[t] = 0.3 * wind[t - 1] + rng.normal()
    power = 1.5 * wind + 0.1 * rng.normal(size=n)
    ambient[STUCK] = ambient[STUCK.start - 1]  # the sensor holds its last reading
    values = np.column_stack([ambient, wind, power])
    values = (values - values[:TRAIN_ROWS].mean(axis=0)) / values[:TRAIN_ROWS].std(axis=0)
    labels = np.zeros(n, dtype=np.int8)
    labels[STUCK] = 1
    return values, labels


def windows_of(values: np.ndarray, labels: np.ndarray, rows: range) -> Windows:
    ends = np.arange(max(rows.start, WINDOW - 1), rows.stop)
    windows = Windows.from_array(np.stack([values[e - WINDOW + 1:e + 1] for e in ends]), labels[ends])
    windows.end_us = ends.astype(np.int64) * 60_000_000
    return windows


@pytest.fixture(scope="module")
def stuck_ambient():
    values, labels = toy_turbine()
    train = windows_of(values, labels, range(0, TRAIN_ROWS))
    test = windows_of(values, labels, range(TRAIN_ROWS, TRAIN_ROWS + TEST_ROWS))
    plain = LSTMForecasterDetector(**SETTINGS).fit(train)
    guarded = LSTMForecasterDetector(frozen_channels=True, **SETTINGS).fit(train)
    return test, plain, guarded


def test_a_stuck_driver_is_invisible_to_the_model_and_found_by_its_stillness(stuck_ambient):
    test, plain, guarded = stuck_ambient
    truth = test.label_last == 1
    assert roc_auc_score(truth, plain.score(test)) < 0.65  # power never depended on the ambient temperature
    assert roc_auc_score(truth, guarded.score(test)) > 0.95


def test_stillness_changes_no_score_of_a_window_that_is_not_still(stuck_ambient):
    test, plain, guarded = stuck_ambient
    moving = np.flatnonzero(trailing_runs(test).max(axis=1) == 0)
    assert moving.size > 1000
    np.testing.assert_allclose(guarded.score(test.subset(moving)), plain.score(test.subset(moving)), rtol=1e-9)


def test_a_window_flagged_for_stillness_is_attributed_to_the_stuck_channel(stuck_ambient):
    test, plain, guarded = stuck_ambient
    still = np.flatnonzero((test.label_last == 1) & (trailing_runs(test)[:, 0] == WINDOW - 1))
    raised = guarded.score(test.subset(still)) > plain.score(test.subset(still))
    assert raised.mean() > 0.95  # the stillness outweighs the model's own evidence on nearly every such window
    scores, shares = guarded.score_and_shares(test.subset(still[raised]), lambda s: np.ones(s.size, dtype=bool))
    np.testing.assert_allclose(shares, np.tile([1.0, 0.0, 0.0], (int(raised.sum()), 1)))


def test_a_model_saved_before_the_check_existed_loads_without_it(stuck_ambient, tmp_path):
    import json

    test, plain, guarded = stuck_ambient
    guarded.save(tmp_path)
    saved = json.loads((tmp_path / "detector.json").read_text())
    del saved["frozen"], saved["params"]["frozen_channels"], saved["params"]["error_regimes"]
    (tmp_path / "detector.json").write_text(json.dumps(saved))
    old = LSTMForecasterDetector.load(tmp_path)
    assert old.frozen_ is None and old.params.frozen_channels is False
    np.testing.assert_allclose(old.score(test), plain.score(test), rtol=1e-6)  # same network, no floor


def test_a_saved_guarded_model_scores_the_same(stuck_ambient, tmp_path):
    test, _, guarded = stuck_ambient
    guarded.save(tmp_path)
    np.testing.assert_allclose(LSTMForecasterDetector.load(tmp_path).score(test), guarded.score(test), rtol=1e-6)


def test_the_autoencoder_with_the_check_finds_the_stuck_driver_and_keeps_it_once_saved(stuck_ambient, tmp_path):
    test = stuck_ambient[0]
    values, labels = toy_turbine()
    train = windows_of(values, labels, range(0, TRAIN_ROWS))
    settings = dict(hidden=16, epochs=3, batch_size=128, learning_rate=0.01, seed=0, device="cpu")
    plain = LSTMAutoencoderDetector(**settings).fit(train)
    guarded = LSTMAutoencoderDetector(frozen_channels=True, **settings).fit(train)
    truth = test.label_last == 1
    assert roc_auc_score(truth, guarded.score(test)) > 0.95
    assert roc_auc_score(truth, guarded.score(test)) > roc_auc_score(truth, plain.score(test)) + 0.1
    guarded.save(tmp_path)
    np.testing.assert_allclose(LSTMAutoencoderDetector.load(tmp_path).score(test), guarded.score(test), rtol=1e-6)


def test_under_per_asset_thresholds_a_stillness_alarms_at_the_same_level_on_every_asset(stuck_ambient, tmp_path):
    # threshold.per_asset multiplies an asset's scores by its scale; the stillness floor is a value of the
    # fleet threshold's scale, so a stuck window must score the same after scaling on a quiet asset (scale 4)
    # as on a noisy one (scale 0.25), while a moving window scales with its asset
    import copy
    import dataclasses

    from lstmad.serving.bundle import ModelBundle
    from lstmad.transforms.series import NormalisationStats

    test, plain, guarded = stuck_ambient
    still = np.flatnonzero((test.label_last == 1) & (trailing_runs(test)[:, 0] == WINDOW - 1))
    moving = np.flatnonzero(trailing_runs(test).max(axis=1) == 0)[:200]
    fleet_still, fleet_moving = guarded.score(test.subset(still)), guarded.score(test.subset(moving))
    own_still = plain.score(test.subset(still))  # the same network without the floor
    raised = fleet_still > own_still  # the floor set these scores
    stats = NormalisationStats("zscore", ("ambient", "wind", "power"), (0.0,) * 3, (1.0,) * 3)
    scales = {"quiet": 4.0, "noisy": 0.25}
    bundle = ModelBundle(copy.deepcopy(guarded), ("ambient", "wind", "power"), WINDOW, 60, stats, 1.0, "row_rate",
                         0.05, {}, scales)
    for asset, scale in scales.items():
        on_asset = {k: dataclasses.replace(test.subset(rows), assets=[asset]) for k, rows in
                    (("still", still), ("moving", moving))}
        scored = {k: bundle.on_threshold_scale(bundle.detector.score(w), w) for k, w in on_asset.items()}
        # max(scale × the model's own score, the floor): a floor unchanged by the asset
        np.testing.assert_allclose(scored["still"][raised], np.maximum(scale * own_still, fleet_still)[raised],
                                   rtol=1e-6)
        assert np.mean(scored["still"][raised] == fleet_still[raised]) > 0.9
        np.testing.assert_allclose(scored["moving"], scale * fleet_moving, rtol=1e-6)
    # the pyfunc scores a named asset on its scale, an unnamed one on the fleet's
    from lstmad.serving.pyfunc import WindowScorer

    values, _ = toy_turbine()
    ends = TRAIN_ROWS + moving[:20]  # test windows end at rows TRAIN_ROWS, TRAIN_ROWS + 1, ...
    arrays = np.stack([values[e - WINDOW + 1:e + 1] for e in ends])
    scorer = WindowScorer(bundle)
    np.testing.assert_allclose(scorer.predict(arrays, {"asset": "quiet"}), 4.0 * scorer.predict(arrays), rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(arrays), fleet_moving[:20], rtol=1e-5)
    # the scales travel with the saved bundle; a bundle saved before them loads with none
    bundle.save(tmp_path)
    assert ModelBundle.load(tmp_path).asset_score_scales == scales
    meta = json.loads((tmp_path / "bundle.json").read_text())
    del meta["asset_score_scales"]
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    assert ModelBundle.load(tmp_path).asset_score_scales == {}
