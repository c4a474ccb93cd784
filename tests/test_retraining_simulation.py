"""The unattended loop on a farm whose sensors are recalibrated on a known day: the nightly DAG backfilled night
by night detects the drift, triggers the training DAG, which trains a challenger on the recent window and
promotes it; false alarms come back down, and without retraining they do not."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lstmad import lakehouse, names, pipeline
from lstmad.config import load_config
from tests.conftest import REPO, tiny_config_dict, write_config

pytestmark = pytest.mark.slow

FIRST, LAST = dt.date(2026, 1, 11), dt.date(2026, 1, 29)
CHANGE = dt.date(2026, 1, 16)  # the recalibration: day index 15 of a farm starting on the 1st
RECALIBRATED = ["pitch1_moto_tmp", "pitch2_moto_tmp", "pitch3_moto_tmp", "int_tmp", "pitch1_ng5_tmp",
                "pitch2_ng5_tmp", "pitch3_ng5_tmp", "acc_x"]


def false_alarm_rate(flags: np.ndarray, labels: np.ndarray) -> float:
    normal = labels == 0
    return float(flags[normal].mean()) if normal.any() else float("nan")


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    root = tmp_path_factory.mktemp("simulation")
    raw = tiny_config_dict(
        root / "home",
        synthetic={"days": 30, "change_day": (CHANGE - dt.date(2026, 1, 1)).days,
                   "recalibrated_channels": RECALIBRATED, "recalibration_offset_sd": 4.0},
        train={"start": dt.date(2026, 1, 1), "end": dt.date(2026, 1, 8), "eval_start": dt.date(2026, 1, 9),
               "eval_end": dt.date(2026, 1, 10), "window_days": 8, "eval_days": 1, "exclude_severity": 3.0},
        drift={"alarm_rate_factor": 4.0})
    conf = write_config(root / "tiny.yaml", raw)
    config = load_config(conf)
    pipeline.generate(config)
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow_home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "LSTMAD_CONF": str(conf), "PYTHONPATH": str(REPO)}
    bin_dir = os.path.dirname(sys.executable)
    subprocess.run([os.path.join(bin_dir, "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "simulation_harness.py"), str(REPO / "dags"),
                           FIRST.isoformat(), LAST.isoformat(), str(root / "result.json")], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((root / "result.json").read_text())
    paths = pipeline.Paths.of(config)
    scores = lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.SCORED_DATE, names.FLAG, names.LABEL,
                                                               names.MODEL_VERSION]).to_pandas()
    drift = lakehouse.read_table(paths.lake, names.DRIFT_METRICS).to_pandas().set_index(names.SCORED_DATE)
    return dict(result=result, config=config, paths=paths, scores=scores, drift=drift)


def test_every_night_and_every_triggered_training_ran(simulation):
    result = simulation["result"]
    assert result["first_training"] == "success"
    assert [n["state"] for n in result["nights"]] == ["success"] * len(result["nights"])
    assert all(n["training_state"] == "success" for n in result["nights"] if n["triggered"])
    print(json.dumps({n["night"]: {k: n.get(k) for k in ("triggered", "trained_version", "champion")}
                      for n in result["nights"]}, indent=1))


def test_drift_is_detected_within_two_nights_of_the_change(simulation):
    drift = simulation["drift"]
    first_two = [CHANGE.isoformat(), (CHANGE + dt.timedelta(days=1)).isoformat()]
    assert drift.loc[first_two, "retrain"].any(), drift.loc[first_two, "retrain_reasons"]


def _last_promotion(nights: list[dict]) -> dict:
    """The night of the last promotion: from then on the loop has settled on its champion."""
    return [n for n in nights if n.get("promotion", {}).get("decision") == "promoted"][-1]


def test_challengers_are_trained_on_the_recent_window_and_promoted_after_the_change(simulation):
    nights = simulation["result"]["nights"]
    last = _last_promotion(nights)
    assert last["night"] >= CHANGE.isoformat() and nights[-1]["champion"] == last["trained_version"]
    for night in (n for n in nights if n["triggered"]):  # each on the 8 days before the eval night
        end = dt.date.fromisoformat(night["night"])
        assert night["train_range"] == f"{end - dt.timedelta(days=8)}..{end - dt.timedelta(days=1)}"
    decisions = {n["night"]: (n["trained_version"], n["promotion"]["decision"], n["promotion"]["reason"])
                 for n in nights if n["triggered"]}
    print(json.dumps({"last_promotion": last["night"], "decisions": decisions}))


def test_false_alarms_return_to_their_level_after_promotion_and_stay_high_without(simulation):
    config, paths, scores = simulation["config"], simulation["paths"], simulation["scores"]
    promoted_on = _last_promotion(simulation["result"]["nights"])["night"]
    before = scores[scores.scored_date < CHANGE.isoformat()]
    after = scores[scores.scored_date > promoted_on]
    assert after.scored_date.nunique() >= 2 and (after.model_version != "1").all()
    far_before = false_alarm_rate(before.flag.to_numpy(), before.label.to_numpy())
    far_after = false_alarm_rate(after.flag.to_numpy(), after.label.to_numpy())
    # the same nights scored by the first champion, as if nothing had been retrained
    from lstmad.scoring import score_blocks
    from lstmad.tensors import read_blocks

    first = pipeline.version_bundle(config, "1")[1]
    days = sorted(set(after.scored_date))
    blocks = read_blocks(paths.tensors, days)
    stats = {sid: pipeline.load_stats(paths, sid) for sid in set(blocks.column(names.STATS_ID).to_pylist())}
    unchanged = score_blocks(first, blocks, stats, max_masked_share=config.prepare.max_masked_share)
    far_without = false_alarm_rate(unchanged.column(names.SCORE).to_numpy() > first.threshold,
                                   unchanged.column(names.LABEL).to_numpy())
    nightly = {d: round(false_alarm_rate(g.flag.to_numpy(), g.label.to_numpy()), 4) for d, g in scores.groupby(names.SCORED_DATE)}
    print(json.dumps({"far_before": far_before, "far_after_promotion": far_after, "far_without_retraining": far_without,
                      "promoted_on": promoted_on, "nights_after": days, "far_by_night": nightly}))
    assert far_after <= 2 * far_before
    assert far_without > 2 * far_before
