"""The unattended loop on a farm whose sensors are recalibrated on a known day: the nightly DAG backfilled night
by night detects the drift, triggers the training DAG, which trains a challenger on the recent window and
promotes it; false alarms come back down, and without retraining they do not."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from lstmad import names
from lstmad.io import model_store
from lstmad.io.tensor_store import load_stats
from tests.conftest import SIMULATION_CHANGE as CHANGE

pytestmark = pytest.mark.slow


def false_alarm_rate(flags: np.ndarray, labels: np.ndarray) -> float:
    normal = labels == 0
    return float(flags[normal].mean()) if normal.any() else float("nan")


def test_every_night_and_every_triggered_training_ran(retraining_simulation):
    result = retraining_simulation["result"]
    assert result["first_training"] == "success"
    assert [n["state"] for n in result["nights"]] == ["success"] * len(result["nights"])
    assert all(n["training_state"] == "success" for n in result["nights"] if n["triggered"])
    print(json.dumps({n["night"]: {k: n.get(k) for k in ("triggered", "trained_version", "champion")}
                      for n in result["nights"]}, indent=1))


def test_drift_is_detected_within_two_nights_of_the_change(retraining_simulation):
    drift = retraining_simulation["drift"]
    first_two = [CHANGE.isoformat(), (CHANGE + dt.timedelta(days=1)).isoformat()]
    assert drift.loc[first_two, "retrain"].any(), drift.loc[first_two, "retrain_reasons"]


def _last_promotion(nights: list[dict]) -> dict:
    """The night of the last promotion: from then on the loop has settled on its champion."""
    return [n for n in nights if n.get("promotion", {}).get("decision") == "promoted"][-1]


def test_challengers_are_trained_on_the_recent_window_and_promoted_after_the_change(retraining_simulation):
    nights = retraining_simulation["result"]["nights"]
    last = _last_promotion(nights)
    assert last["night"] >= CHANGE.isoformat() and nights[-1]["champion"] == last["trained_version"]
    for night in (n for n in nights if n["triggered"]):  # each on the 8 days before the eval night
        end = dt.date.fromisoformat(night["night"])
        assert night["train_range"] == f"{end - dt.timedelta(days=8)}..{end - dt.timedelta(days=1)}"
    decisions = {n["night"]: (n["trained_version"], n["promotion"]["decision"], n["promotion"]["reason"])
                 for n in nights if n["triggered"]}
    print(json.dumps({"last_promotion": last["night"], "decisions": decisions}))


def test_false_alarms_return_to_their_level_after_promotion_and_stay_high_without(retraining_simulation):
    config, paths, scores = retraining_simulation["config"], retraining_simulation["paths"], retraining_simulation["scores"]
    promoted_on = _last_promotion(retraining_simulation["result"]["nights"])["night"]
    before = scores[scores.scored_date < CHANGE.isoformat()]
    after = scores[scores.scored_date > promoted_on]
    assert after.scored_date.nunique() >= 2 and (after.model_version != "1").all()
    far_before = false_alarm_rate(before.flag.to_numpy(), before.label.to_numpy())
    far_after = false_alarm_rate(after.flag.to_numpy(), after.label.to_numpy())
    # the same nights scored by the first champion, as if nothing had been retrained
    from lstmad.io.tensor_store import read_blocks
    from lstmad.serving.scoring import score_blocks

    first = model_store.version_bundle(config, "1")[1]
    days = sorted(set(after.scored_date))
    blocks = read_blocks(paths.tensors, days)
    stats = {sid: load_stats(paths.tensors, sid) for sid in set(blocks.column(names.STATS_ID).to_pylist())}
    unchanged = score_blocks(first, blocks, stats, max_masked_share=config.prepare.max_masked_share)
    far_without = false_alarm_rate(unchanged.column(names.SCORE).to_numpy() > first.threshold,
                                   unchanged.column(names.LABEL).to_numpy())
    nightly = {d: round(false_alarm_rate(g.flag.to_numpy(), g.label.to_numpy()), 4) for d, g in scores.groupby(names.SCORED_DATE)}
    print(json.dumps({"far_before": far_before, "far_after_promotion": far_after, "far_without_retraining": far_without,
                      "promoted_on": promoted_on, "nights_after": days, "far_by_night": nightly}))
    assert far_after <= 2 * far_before
    assert far_without > 2 * far_before
