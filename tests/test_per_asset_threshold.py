"""Per-asset thresholds (threshold.per_asset) through the pipeline: two turbines, each with two temperature
sensors on the same 20-minute cycle, whose second sensors differ (one reads with 20 times the noise of the
other); one day of minute rows to train PCA T²+Q on, a second day of the same normal operation to score. With
one threshold for the fleet the quiet turbine never alarms and the noisy one alarms on more than twice the
budget; with each turbine's own threshold both stay within 2× of it on the day the model never saw.
"""

from __future__ import annotations

import datetime as dt

import mlflow
import numpy as np
import pandas as pd
import pytest

from lstmad import names, stages
from lstmad.config import load_config
from lstmad.io import lakehouse
from lstmad.layout import Paths
from tests.conftest import write_config

pytestmark = pytest.mark.spark

DAYS = [dt.date(2026, 4, 1), dt.date(2026, 4, 2)]
NOISE_KW = {"quiet": 0.05, "noisy": 1.0}  # °C
BUDGET = 0.05


def turbine_day(day: dt.date, turbine: str, seed: int) -> pd.DataFrame:
    """1,440 minute rows of stationary normal operation: two sensors read a temperature that follows a
    20-minute cycle; the first reads it with little noise, the second with the turbine's."""
    rng = np.random.default_rng(seed)
    temperature = 40 + 5 * np.sin(2 * np.pi * np.arange(1440) / 20)
    times = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=1440, freq="min")
    return pd.DataFrame({"time": times, "turbine": turbine,
                         "temperature_a": temperature + 0.05 * rng.normal(size=1440),
                         "temperature_b": temperature + NOISE_KW[turbine] * rng.normal(size=1440)})


def pipeline(root, source, per_asset: bool, spark):
    raw = {"pipeline": f"per_asset_{per_asset}".lower(), "home": str(root / "home"),
           "source": {"path": str(source), "format": "parquet", "timestamp_column": "time",
                      "asset_column": "turbine", "label_column": None, "partition_column": None,
                      "channels": ["temperature_a", "temperature_b"]},
           "prepare": {"step_s": 60, "smoothing_half_width": 0, "window": 2, "block_rows": 512},
           "model": {"detector": "pca_t2q", "validation_share": 0.3},
           "train": {"start": DAYS[0], "end": DAYS[0], "eval_start": None, "eval_end": None},
           # the validation windows calibrate (PCA would be cross-fitted by default: tests/test_cross_fit.py)
           "threshold": {"rule": "row_rate", "budget": BUDGET, "per_asset": per_asset, "min_asset_windows": 100,
                         "cross_fit_folds": 0},
           "score": {"min_interval_s": 300, "merge_gap_s": 120},
           "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"}}
    config = load_config(write_config(root / f"{raw['pipeline']}.yaml", raw))
    stages.prepare(config, DAYS[0], DAYS[1], fit_stats=True, spark=spark)
    trained = stages.train(config, promote=True, spark=spark)
    stages.score(config, DAYS[1], spark=spark)
    scores = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_SCORES).to_pandas()
    return config, trained, scores


@pytest.fixture(scope="module")
def runs(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("per_asset")
    source = root / "scada.parquet"
    pd.concat([turbine_day(d, t, 10 * i + j) for i, d in enumerate(DAYS)
               for j, t in enumerate(NOISE_KW)]).to_parquet(source)
    return {per_asset: pipeline(root, source, per_asset, spark) for per_asset in (False, True)}


def far_by_turbine(scores: pd.DataFrame) -> dict[str, float]:
    return scores.groupby(names.ASSET)[names.FLAG].mean().to_dict()


def test_one_fleet_threshold_misses_the_budget_on_both_turbines(runs):
    _, trained, scores = runs[False]
    far = far_by_turbine(scores)
    assert far["quiet"] < BUDGET / 2 and far["noisy"] > 2 * BUDGET, far
    assert trained["metrics"]["calibration_assets_own_threshold"] == 0


def test_each_turbines_own_threshold_holds_the_budget_on_a_day_the_model_never_saw(runs):
    config, trained, scores = runs[True]
    far = far_by_turbine(scores)
    for turbine, rate in far.items():
        assert BUDGET / 2 <= rate <= 2 * BUDGET, (turbine, rate)
    assert trained["metrics"]["calibration_assets_own_threshold"] == 2
    # one threshold in the table; each turbine's scores on its scale: the noisy turbine's raw scores are
    # lowered, the quiet one's raised, so that both flag above the same value
    assert scores[names.THRESHOLD].nunique() == 1
    fleet_scores = runs[False][2].set_index([names.ASSET, names.TIMESTAMP])[names.SCORE]
    own_scores = scores.set_index([names.ASSET, names.TIMESTAMP])[names.SCORE]
    ratio = (own_scores / fleet_scores).groupby(level=0)
    assert ratio.std().max() < 1e-9  # one factor per turbine
    assert ratio.mean()["quiet"] > 1 > ratio.mean()["noisy"]
    mlflow.set_tracking_uri(config.tracking_uri)
    run = mlflow.get_run(trained["run_id"])
    assert run.data.params["threshold_per_asset"] == "True"
    assert "per asset (2 of 2 assets with ≥ 100 windows their own)" in run.data.params["calibration"]
    assert run.data.metrics["calibration_folds"] == 0  # the validation windows, as asked
    # on by default, but one day of two turbines is two periods, too few to tell a shift from chance
    assert run.data.params["threshold_shift_correction"] == "True"
    assert run.data.metrics["calibration_level"] == BUDGET and "corrected" not in run.data.params["calibration"]


def test_a_minimum_below_one_window_is_refused_by_key():
    from lstmad.config import ConfigError
    from tests.conftest import REPO

    with pytest.raises(ConfigError, match="demo.yaml: key 'threshold.min_asset_windows' must be at least 1"):
        load_config(REPO / "conf" / "demo.yaml", {"threshold.per_asset": True, "threshold.min_asset_windows": 0})
