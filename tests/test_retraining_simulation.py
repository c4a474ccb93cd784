"""The unattended loop on a farm whose sensors are recalibrated on a known day: the nightly DAG backfilled night
by night detects the drift, triggers the training DAG, which trains a challenger on the recent window and
promotes it; false alarms come back down, and without retraining they do not. The same DAG runs (the training
DAG, nineteen nightly runs with their triggered trainings, maintenance) check the DAGs' integrity: imports,
tags, retries, light parsing, task graphs. One module, so that one test worker runs the simulation."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from lstmad import names
from lstmad.io import lakehouse, model_store
from lstmad.layout import Paths
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


@pytest.fixture(scope="module")
def dag_run(retraining_simulation):
    """The DAG runs of the retraining simulation (conftest): its result, with the DAG facts, and config."""
    return retraining_simulation["result"], retraining_simulation["config"]


def test_dags_import_without_errors_with_tags_docs_and_retries(dag_run):
    result, _ = dag_run
    assert result["import_errors"] == {}
    assert set(result["dags"]) == {"lstmad_nightly", "lstmad_training", "lstmad_maintenance"}
    assert result["dags"]["lstmad_maintenance"]["schedule"] != result["dags"]["lstmad_training"]["schedule"]
    for dag in result["dags"].values():
        assert "lstmad" in dag["tags"] and dag["doc_md"]
        assert all(task["retries"] >= 2 and task["backoff"] for task in dag["tasks"].values())
        assert all(task["timeout_s"] == 180 * 60 and task["on_failure"] for task in dag["tasks"].values())
    assert result["dags"]["lstmad_training"]["tasks"]["train"]["pool"] == "default_pool"
    assert result["dags"]["lstmad_training"]["params"] == ["end"]  # the recent-data window's last date
    assert result["dags"]["lstmad_nightly"]["params"] == ["date"]  # backfills: any night by hand


def test_task_graphs(dag_run):
    nightly = dag_run[0]["dags"]["lstmad_nightly"]["tasks"]
    assert nightly["target_date"]["downstream"] == ["drift", "prepare", "raw_data_landed", "retrain_needed", "score"]
    assert nightly["raw_data_landed"]["downstream"] == ["prepare"]  # the night's data check comes first
    assert nightly["prepare"]["downstream"] == ["score"]
    assert nightly["score"]["downstream"] == ["drift"]
    assert nightly["drift"]["downstream"] == ["retrain_needed"]
    assert nightly["retrain_needed"]["downstream"] == ["trigger_training"]
    training = dag_run[0]["dags"]["lstmad_training"]["tasks"]
    assert training["prepare_training_range"]["downstream"] == ["train"]
    assert training["train"]["downstream"] == ["promote"]


def test_dag_files_parse_fast_without_heavy_imports(dag_run):
    for facts in dag_run[0]["parse"].values():
        assert facts["heavy"] == []
        # a bound that catches a heavy import creeping in (seconds each), not a speed goal: 1.1 s was seen on a
        # loaded 2-core machine for a parse that takes 0.3 s idle
        assert facts["parse_s"] < 3.0


def test_training_then_nightly_runs_end_to_end(dag_run, retraining_simulation):
    result, config = dag_run
    assert result["first_training"] == "success"
    nights = [n["night"] for n in result["nights"]]
    assert all(n["state"] == "success" for n in result["nights"]), result["nights"]
    assert all(n["tasks"]["raw_data_landed"] == "success" for n in result["nights"])  # every night had landed
    scores = retraining_simulation["scores"]
    assert sorted(set(scores.scored_date)) == nights
    assert (scores.groupby(names.SCORED_DATE).size() == 2 * 288).all()  # 2 turbines × 288 five-minute steps
    drift = lakehouse.read_table(Paths.of(config).lake, names.DRIFT_METRICS).to_pandas()
    assert sorted(drift.scored_date) == nights  # one row a night
    assert result["maintenance_state"] == "success"  # after the nights: their scores survive compaction
    assert result["scores_before_maintenance"] == result["scores_after_maintenance"] == len(scores)
    # each drifted night triggered one training run, whose recent-data window ends at that night
    retrained = sorted(d for d, row in drift.set_index(names.SCORED_DATE).iterrows() if row.retrain)
    triggered = [r for r in result["training_runs"] if r["run_type"] == "operator_triggered"]
    assert retrained and sorted(r["conf"]["end"] for r in triggered) == retrained
    assert retrained == [n["night"] for n in result["nights"] if n["triggered"]]
