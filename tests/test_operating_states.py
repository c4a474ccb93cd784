"""Operating states (curtailment, downtime) against hand-marked rows: prepare counts them, training leaves them
out, scoring never alarms on them and names them in anomaly_scores.

One turbine, two days of minute rows: power follows the cube of wind speed. Hand-marked on both days:
rows 100-129 stopped (status code 3; power 0 in any wind) and rows 600-659 curtailed (power held at 40 kW in
strong wind: 7-9 m/s). On the second day the curtailed and stopped rows are as abnormal for the model as
rows can be, so only the states keep them from alarming; a real fault at rows 900-929 (power read three
times too high, status normal) must still alarm.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

from lstmad import names, stages
from lstmad.config import load_config
from lstmad.io import lakehouse
from lstmad.io.tensor_store import read_blocks
from lstmad.layout import Paths, PrepareError
from lstmad.transforms.blocks import windows_from_blocks
from tests.conftest import write_config

pytestmark = pytest.mark.spark

DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
STOPPED, CURTAILED, FAULT = range(100, 130), range(600, 660), range(900, 930)
WINDOW = 8


def turbine_day(day: dt.date, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 1440
    wind = 5 + 2 * np.sin(np.arange(n) / 90) + 0.3 * rng.normal(size=n)
    status = np.zeros(n, dtype=np.int64)
    wind[list(CURTAILED)] = rng.uniform(7, 9, size=len(CURTAILED))
    power = 2.0 * np.clip(wind, 0, None) ** 3 + 5 * rng.normal(size=n)
    power[list(STOPPED)] = 0.0
    status[list(STOPPED)] = 3
    power[list(CURTAILED)] = 40.0
    if day == DAYS[1]:
        power[list(FAULT)] *= 3.0  # not a known state: a fault (a power sensor reading three times too high)
    times = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=n, freq="min")
    return pd.DataFrame({"time": times, "turbine": "T1", "wind": wind, "power": power, "status": status})


def expected_states(n: int = 1440) -> np.ndarray:
    states = np.zeros(n, dtype=np.int8)
    states[list(STOPPED)] = 1
    states[list(CURTAILED)] = 2
    return states


def raw_config(root, source, name: str) -> dict:
    """The pipeline of these tests over ``source``: the two operating states, PCA T²+Q on the first day."""
    return {
        "pipeline": name, "home": str(root / "home"),
        "source": {"path": str(source), "format": "parquet", "timestamp_column": "time", "asset_column": "turbine",
                   "label_column": None, "partition_column": None, "channels": ["wind", "power"]},
        "operating_states": [{"name": "stopped", "when": "status = 3"},
                             {"name": "curtailed", "when": "power < 100 AND wind > 6.5"}],
        "prepare": {"step_s": 60, "smoothing_half_width": 0, "window": WINDOW, "block_rows": 512},
        "model": {"detector": "pca_t2q", "validation_share": 0.2},
        "train": {"start": DAYS[0], "end": DAYS[0], "eval_start": None, "eval_end": None},
        "threshold": {"rule": "percentile", "percentile": 99.0},
        "score": {"min_interval_s": 300, "merge_gap_s": 120},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("states")
    source = root / "scada.parquet"
    pd.concat([turbine_day(d, i) for i, d in enumerate(DAYS)]).to_parquet(source)
    config = load_config(write_config(root / "conf.yaml", raw_config(root, source, "states")))
    prepared = stages.prepare(config, DAYS[0], DAYS[0], fit_stats=True, spark=spark)
    trained = stages.train(config, spark=spark)
    stages.prepare(config, DAYS[1], DAYS[1], spark=spark)
    scored = stages.score(config, DAYS[1], spark=spark)
    return config, prepared, trained, scored


def test_prepare_marks_and_counts_the_hand_marked_rows(pipeline):
    config, prepared, _, _ = pipeline
    assert prepared["rows_by_operating_state"] == {"stopped": len(STOPPED), "curtailed": len(CURTAILED)}
    blocks = read_blocks(Paths.of(config).tensors, [DAYS[0].isoformat()])
    windows = windows_from_blocks(blocks, WINDOW)
    order = np.argsort(windows.end_us)
    # windows end at rows W−1 .. 1439 of the day
    np.testing.assert_array_equal(windows.state_last[order], expected_states()[WINDOW - 1:])


def reference_window_states(k: int) -> list[int]:
    """The state of each window of the day (ending at rows W−1 .. 1439) whose score is made of its last k rows:
    the state of the latest marked row among them, else 0."""
    marked = expected_states()
    out = []
    for end in range(WINDOW - 1, 1440):
        recent = [int(s) for s in marked[end - k + 1:end + 1] if s != 0]
        out.append(recent[-1] if recent else 0)
    return out


@pytest.mark.parametrize("model, wind_drives, k", [
    ({"detector": "lstm_forecaster", "residual_steps": 5}, True, 5),   # power from the wind: its last 5 rows
    ({"detector": "lstm_forecaster", "residual_steps": 5}, False, WINDOW),  # each row from the rows before it
    ({"detector": "lstm_autoencoder"}, False, WINDOW),
    ({"detector": "pca_t2q"}, False, 1)])
def test_a_window_whose_judged_rows_include_a_marked_row_is_outside_normal_operation(pipeline, model, wind_drives, k):
    """A normal-behaviour forecaster scoring the mean residual of its last k rows judges those k (its inputs
    are the drivers), a plain forecaster and an autoencoder the whole window, PCA the last row: the windows
    that end up to k − 1 rows after a stop still judge a stopped row, and carry its state."""
    import dataclasses

    from lstmad.training.fitting import windows_of

    config, _, _, _ = pipeline
    source = config.source
    if wind_drives:
        source = dataclasses.replace(source, channels=(dataclasses.replace(source.channels[0], role="driver"),
                                                       *source.channels[1:]))
    changed = dataclasses.replace(config, source=source, model=dataclasses.replace(config.model, **model))
    _, windows = windows_of(changed, DAYS[0], DAYS[0])
    order = np.argsort(windows.end_us)
    np.testing.assert_array_equal(windows.state_last[order], reference_window_states(k))
    by_end = dict(zip(range(WINDOW - 1, 1440), windows.state_last[order]))
    # the stop is rows 100..129: the window ending at 129 + k − 1 still judges its last row, the next does not
    assert (by_end[129 + k - 1], by_end[129 + k], by_end[99], by_end[100]) == (1, 0, 0, 1)
    assert int((windows.state_last != 0).sum()) == len(STOPPED) + len(CURTAILED) + 2 * (k - 1)


def test_training_leaves_windows_ending_outside_normal_operation_out(pipeline):
    _, _, trained, _ = pipeline
    marked = len(STOPPED) + len(CURTAILED)  # every marked row ends one window (all lie after row W−1)
    assert trained["metrics"]["operating_state_windows"] == marked


def test_scoring_never_alarms_outside_normal_operation_and_names_the_state(pipeline):
    config, _, _, _ = pipeline
    scores = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_SCORES).sort_by(names.TIMESTAMP)
    minute = (scores.column(names.TIMESTAMP).cast("int64").to_numpy() // 60_000_000) % 1440
    state = np.asarray(scores.column(names.OPERATING_STATE).to_pylist(), dtype=object)
    flags = scores.column(names.FLAG).to_numpy(zero_copy_only=False)
    score = scores.column(names.SCORE).to_numpy()
    marked = expected_states()[minute]
    assert list(state[marked == 1]) == ["stopped"] * len(STOPPED)
    assert list(state[marked == 2]) == ["curtailed"] * len(CURTAILED)
    assert all(s is None for s in state[marked == 0])
    assert not flags[marked != 0].any()
    # they would have alarmed: their scores lie above the threshold, and the unmarked fault does alarm
    threshold = scores.column(names.THRESHOLD)[0].as_py()
    assert np.mean(score[marked == 2] > threshold) > 0.9
    assert flags[np.isin(minute, list(FAULT))].mean() > 0.9
    intervals = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_INTERVALS)
    starts = (intervals.column("start").cast("int64").to_numpy() // 60_000_000) % 1440
    ends = (intervals.column("end").cast("int64").to_numpy() // 60_000_000) % 1440
    assert any(s <= FAULT[-1] and e >= FAULT[0] for s, e in zip(starts, ends))
    for s, e in zip(starts, ends):
        assert not (s <= CURTAILED[-1] and e >= CURTAILED[0]) and not (s <= STOPPED[-1] and e >= STOPPED[0])
    assert int(pc.sum(pc.is_valid(scores.column(names.OPERATING_STATE))).as_py()) == len(STOPPED) + len(CURTAILED)


def test_a_condition_that_cannot_be_evaluated_is_refused_in_one_line(pipeline, tmp_path, spark):
    config, _, _, _ = pipeline
    import dataclasses

    from lstmad.config import OperatingState

    broken = dataclasses.replace(config, home=str(tmp_path / "home"),
                                 operating_states=(OperatingState("idle", "no_such_column > 1"),))
    with pytest.raises(PrepareError, match=r"operating_states\[0\]\.when.*idle"):
        stages.prepare(broken, DAYS[0], DAYS[0], fit_stats=True, spark=spark)


def test_a_cross_fitted_threshold_is_calibrated_on_every_training_window_in_normal_operation(tmp_path, spark):
    import mlflow

    source = tmp_path / "scada.parquet"
    turbine_day(DAYS[0], 0).to_parquet(source)
    raw = {**raw_config(tmp_path, source, "folded"),
           "threshold": {"rule": "row_rate", "budget": 0.05, "cross_fit_folds": 4}}
    config = load_config(write_config(tmp_path / "conf.yaml", raw))
    stages.prepare(config, DAYS[0], DAYS[0], fit_stats=True, spark=spark)
    trained = stages.train(config, promote=False, spark=spark)
    # windows end at rows 7..1439 (1,433); the 90 marked rows end windows outside normal operation
    assert trained["metrics"]["calibration_windows"] == 1433 - len(STOPPED) - len(CURTAILED)
    mlflow.set_tracking_uri(config.tracking_uri)
    described = mlflow.get_run(trained["run_id"]).data.params["calibration"]
    assert described == "row rate 0.05 (conformal) of out-of-fold (4 folds) scores"


def test_drift_compares_the_alarm_rate_of_the_rows_in_normal_operation(pipeline):
    config, _, _, _ = pipeline
    drifted = stages.drift(config, DAYS[1])
    scores = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_SCORES).to_pandas()
    normal = scores[scores[names.OPERATING_STATE].isna()]
    assert len(normal) == len(scores) - len(STOPPED) - len(CURTAILED)
    # the marked rows are never flagged: counted in, they would dilute the rate by 90 of 1,433 rows
    assert drifted["alarm_rate"] == pytest.approx(normal[names.FLAG].mean())
    assert drifted["alarm_rate"] > scores[names.FLAG].mean()
