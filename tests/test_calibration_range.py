"""A later range of normal operation calibrates the threshold (threshold.calibration_start..calibration_end).

A pump's two temperature sensors follow the same 20-minute cycle. On the training day both read it with
little noise; from the next day on the second sensor reads it with ten times the noise (a new normal after
a sensor swap). PCA T²+Q is fitted on the training day; the third day (with a labelled fault) evaluates.
Calibrated inside the training day, as by default, the threshold alarms on nearly every normal row of the
third day; calibrated on the second day, it alarms within 2× of the 5 % budget. The second day's labelled
fault is left out of the calibration windows and counted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest

from lstmad import stages
from lstmad.config import ConfigError, load_config
from lstmad.layout import PrepareError
from tests.conftest import DEMO_CONF, write_config

pytestmark = pytest.mark.spark

DAYS = [dt.date(2026, 5, 1), dt.date(2026, 5, 2), dt.date(2026, 5, 3)]
NOISE_B = [0.05, 0.5, 0.5]  # °C: the second sensor's noise on each day
FAULT_ROWS = range(600, 660)  # a labelled fault on days 2 and 3: the first sensor reads 3 °C high
BUDGET = 0.05


def pump_day(index: int) -> pd.DataFrame:
    """1,440 minute rows of one pump on DAYS[index]."""
    rng = np.random.default_rng(index)
    temperature = 40 + 5 * np.sin(2 * np.pi * np.arange(1440) / 20)
    label = np.zeros(1440, dtype=np.int64)
    a = temperature + 0.05 * rng.normal(size=1440)
    if index > 0:
        label[FAULT_ROWS] = 1
        a[FAULT_ROWS] += 3.0
    return pd.DataFrame({"time": pd.date_range(pd.Timestamp(DAYS[index], tz="UTC"), periods=1440, freq="min"),
                         "temperature_a": a, "temperature_b": temperature + NOISE_B[index] * rng.normal(size=1440),
                         "label": label})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("calibration_range")
    source = root / "pump.parquet"
    pd.concat([pump_day(i) for i in range(len(DAYS))]).to_parquet(source)
    raw = {"pipeline": "calibration_range", "home": str(root / "home"),
           "source": {"path": str(source), "format": "parquet", "timestamp_column": "time",
                      "asset_column": None, "asset_constant": "pump", "label_column": "label",
                      "partition_column": None, "channels": ["temperature_a", "temperature_b"]},
           "prepare": {"step_s": 60, "smoothing_half_width": 0, "window": 2, "block_rows": 512},
           "model": {"detector": "pca_t2q", "validation_share": 0.3},
           "train": {"start": DAYS[0], "end": DAYS[0], "eval_start": DAYS[2], "eval_end": DAYS[2]},
           "threshold": {"rule": "row_rate", "budget": BUDGET},
           "score": {"min_interval_s": 300, "merge_gap_s": 120},
           "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"}}
    config = load_config(write_config(root / "pump.yaml", raw))
    later = with_range(config, DAYS[1], DAYS[1])
    # prepare --training: the training day with its statistics fitted, then the evaluation and calibration days
    summaries = stages.prepare_training_data(later, spark=spark)
    assert [s["rows_kept"] for s in summaries] == [1440, 1440, 1440]
    in_range = stages.train(config, promote=False, spark=spark)
    return config, in_range, later, stages.train(later, promote=False, spark=spark)


def with_range(config, start: dt.date, end: dt.date, **train):
    return dataclasses.replace(config, threshold=dataclasses.replace(config.threshold, calibration_start=start,
                                                                     calibration_end=end),
                               train=dataclasses.replace(config.train, **train))


def test_a_threshold_from_the_training_day_alarms_on_most_of_a_new_normal(runs):
    _, in_range, _, _ = runs
    assert in_range["metrics"]["calibration_folds"] == 5  # PCA's default: out of fold on the training day
    assert in_range["metrics"]["eval_far"] > 0.5


def test_the_later_range_holds_the_budget_on_a_day_it_never_saw(runs):
    config, _, later, trained = runs
    metrics = trained["metrics"]
    assert BUDGET / 2 <= metrics["eval_far"] <= 2 * BUDGET, metrics["eval_far"]
    assert metrics["eval_interval_recall"] == 1.0  # the third day's fault is still found
    # windows of 2 rows, one ending at each of the day's 1,440 rows (the first reaches into the day before):
    # the 61 ending at rows 600..660 hold a row of the fault
    assert metrics["calibration_range_left_out"] == 61
    assert metrics["calibration_range_windows"] == metrics["calibration_windows"] == 1440 - 61
    assert metrics["calibration_range_dates_missing"] == 0
    assert metrics["calibration_folds"] == 0  # the range replaces PCA's out-of-fold default
    assert trained["calibration"] == f"row rate {BUDGET:g} (conformal) of normal range {DAYS[1]}..{DAYS[1]} scores"
    mlflow.set_tracking_uri(config.tracking_uri)
    params = mlflow.get_run(trained["run_id"]).data.params
    assert params["calibration_range"] == f"{DAYS[1]}..{DAYS[1]}"
    assert params["calibration_data_version"].startswith("sha256:")


def test_a_range_without_prepared_windows_is_refused_before_a_run_opens(runs, spark):
    config, *_ = runs
    unprepared = dt.date(2026, 5, 9)
    mlflow.set_tracking_uri(config.tracking_uri)
    runs_before = len(mlflow.search_runs(experiment_names=[config.experiment_name]))
    with pytest.raises(PrepareError, match=r"threshold.calibration_start..calibration_end \(2026-05-09..2026-05-09\): "
                                           r"no window in normal operation"):
        stages.train(with_range(config, unprepared, unprepared), promote=False, spark=spark)
    assert len(mlflow.search_runs(experiment_names=[config.experiment_name])) == runs_before


def test_a_partly_prepared_range_calibrates_on_its_prepared_dates_and_counts_the_others(runs, spark, caplog):
    config, _, _, trained = runs
    # without the evaluation range the second and third days can calibrate; the fourth was never prepared
    partly = with_range(config, DAYS[1], DAYS[2] + dt.timedelta(days=1), eval_start=None, eval_end=None)
    with caplog.at_level("WARNING", logger="lstmad"):
        metrics = stages.train(partly, promote=False, spark=spark)["metrics"]
    assert metrics["calibration_range_dates_missing"] == 1
    assert "1 of its dates have no tensor blocks (2026-05-04)" in caplog.text
    # both days' windows, each day's fault left out
    assert metrics["calibration_range_windows"] == 2 * (1440 - 61) and metrics["calibration_range_left_out"] == 2 * 61


@pytest.mark.parametrize("overrides, message", [
    ({"threshold.calibration_start": "2026-01-20"}, "keys 'threshold.calibration_start' and "
                                                     "'threshold.calibration_end' go together"),
    ({"threshold.calibration_start": "2026-01-21", "threshold.calibration_end": "2026-01-20"},
     "ends before it starts"),
    ({"threshold.calibration_start": "2026-01-10", "threshold.calibration_end": "2026-01-20"},
     "overlaps the training range 2026-01-01..2026-01-14"),
    ({"threshold.calibration_start": "2026-01-18", "threshold.calibration_end": "2026-01-20"},
     "overlaps the evaluation range 2026-01-15..2026-01-18"),
    ({"threshold.calibration_start": "2026-01-14", "threshold.calibration_end": "2026-01-14", "train.eval_start": None,
      "train.eval_end": None}, "overlaps the training range 2026-01-01..2026-01-14"),
    ({"threshold.calibration_start": "2026-01-19", "threshold.calibration_end": "2026-01-20",
      "threshold.cross_fit_folds": 5}, "also chooses the calibration windows"),
    ({"threshold.calibration_start": "2026-01-19", "threshold.calibration_end": "2026-01-20",
      "train.window_days": 7}, "cannot follow the sliding training range"),
])
def test_a_calibration_range_that_cannot_work_is_refused_by_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONF, overrides)


def test_a_range_from_the_day_after_both_ranges_is_accepted():
    config = load_config(DEMO_CONF, {"threshold.calibration_start": "2026-01-19",
                                     "threshold.calibration_end": "2026-01-20"})
    assert config.train.eval_end == dt.date(2026, 1, 18) and config.threshold.calibration_end == dt.date(2026, 1, 20)


def test_a_range_normalised_with_other_statistics_is_refused_by_name(runs, spark):
    # last in the module: the second day re-prepared with statistics fitted on it alone
    config, _, later, _ = runs
    stages.prepare(config, DAYS[1], DAYS[1], fit_stats=True, spark=spark)
    mlflow.set_tracking_uri(config.tracking_uri)
    runs_before = len(mlflow.search_runs(experiment_names=[config.experiment_name]))
    with pytest.raises(PrepareError, match=r"\(2026-05-02..2026-05-02\): tensor blocks normalised with \['.+'\], "
                                           r"the training range with '.+'; re-run prepare for these dates"):
        stages.train(later, promote=False, spark=spark)
    assert len(mlflow.search_runs(experiment_names=[config.experiment_name])) == runs_before


def test_the_injection_study_calibrates_on_the_range_it_is_given(tmp_path):
    from lstmad.benchmarks.scada_injection import study_config

    half = (dt.date(2015, 7, 1), dt.date(2015, 12, 31))
    raw = study_config(tmp_path / "home", tmp_path / "scada.parquet", "normal_behaviour_mean_frozen", 0, 2,
                       calibration_range=half)
    th = load_config(write_config(tmp_path / "study.yaml", raw)).threshold
    assert (th.calibration_start, th.calibration_end) == half and th.calibration_share == 0
