"""The embedded demo: generate a wind farm, train, then score night by night as the nightly DAG would."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Callable

import numpy as np
import pyarrow as pa

from lstmad import names, stages
from lstmad.config import PipelineConfig
from lstmad.dates import date_range
from lstmad.evaluation.care import care_score
from lstmad.evaluation.metrics import alarm_event_metrics, score_metrics
from lstmad.io import lakehouse
from lstmad.io.model_store import version_bundle
from lstmad.layout import Paths
from lstmad.stages.train import criticality_steps
from lstmad.transforms.intervals import AlarmRules

RESCORED_NIGHTS = 7
SECOND_MODEL = {"seed": 1, "epochs": 4}  # a quick second version of the same detector, for the comparison


DEMO_MARKER = ".lstmad-demo"


def start_afresh(paths: Paths, pipeline_name: str) -> None:
    """Remove what an earlier demo run left in this pipeline's home (its farm, blocks, tables, models and
    MLflow store), so that every run tells the same story from version 1 (tables from an older lstmad
    version included). Only a home the demo made (its marker file) or the `demo` pipeline's is cleared;
    another pipeline's home with data in it is refused, never emptied."""
    import shutil

    made_by_demo = (paths.home / DEMO_MARKER).exists() or pipeline_name == "demo"
    if paths.home.is_dir() and any(paths.home.iterdir()) and not made_by_demo:
        raise FileExistsError(f"{paths.home} holds pipeline '{pipeline_name}' data the demo did not make: the "
                              f"demo clears its home first, so give it a config of its own (conf/demo.yaml)")

    for name in ("raw", "tensor_blocks", "lake", "models", "mlruns", "checkpoints", "locks", "mlflow.db",
                 "summary.json", "source_schema.json"):
        target = paths.home / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    paths.home.mkdir(parents=True, exist_ok=True)
    (paths.home / DEMO_MARKER).write_text("made by lstmad demo: cleared at the start of every demo run\n")


def run_demo(config: PipelineConfig, echo: Callable[[str], None] = print) -> dict:
    """Generate → prepare training data → train → for each remaining day: prepare, score, drift.

    Writes <pipeline home>/summary.json and returns the summary.
    """
    started = time.time()
    paths = Paths.of(config)
    start_afresh(paths, config.pipeline)
    s = config.synthetic
    echo(f"generating a synthetic wind farm: {s.turbines} turbines × {s.days} days at {s.step_s} s steps …")
    generated = stages.generate(config)
    echo(f"generated {generated['rows']} rows ({generated['anomalous_share']:.1%} icing) in {paths.raw}")
    for summary in stages.prepare_training_data(config):
        echo(f"prepared {summary['dates'][0]}..{summary['dates'][1]}: {summary['rows_read']} rows read, "
             f"{summary['rows_kept']} kept, {summary['rows_quarantined']} quarantined, {summary['windows']} windows")
    echo(f"training {config.model.detector} on {config.train.start}..{config.train.end} "
         "(progress lines on stderr) …")
    trained = stages.train(config, on_epoch=lambda r: echo(
        f"  epoch {r['epoch']:>2}: train loss {r['train_loss']:.4f}, validation loss {r['val_loss']:.4f}"))
    m = trained["metrics"]
    echo(f"trained {trained['model_name']} v{trained['model_version']}: eval AUROC {m.get('eval_auroc', float('nan')):.3f}, "
         f"threshold {m['threshold']:.4f}, {trained['decision']} ({trained['reason']})")

    last_day = config.synthetic.start + dt.timedelta(days=config.synthetic.days - 1)
    nights = date_range(config.train.eval_end + dt.timedelta(days=1), last_day)
    for day in nights:
        prepared = stages.prepare(config, day, day)
        scored = stages.score(config, day)
        drifted = stages.drift(config, day)
        echo(f"{day}: {prepared['rows_read']} rows ({prepared['rows_quarantined']} quarantined), "
             f"{scored['n_flags']} flagged, {scored['n_intervals']} intervals, max PSI {drifted['max_psi']:.2f} "
             f"({drifted['max_psi_channel']}), retrain signal {drifted['retrain']}")

    dates = [d.isoformat() for d in nights]
    scores = lakehouse.read_table(paths.lake, names.ANOMALY_SCORES)
    scores = scores.filter(np.isin(scores.column(names.SCORED_DATE).to_numpy(zero_copy_only=False), dates))
    labels = scores.column(names.LABEL).to_numpy(zero_copy_only=False)
    metrics = score_metrics(labels, scores.column(names.SCORE).to_numpy(),
                            float(scores.column(names.THRESHOLD)[0].as_py()))
    # what the operators received over those nights: intervals against the icing events
    events = alarm_event_metrics(scores.column(names.TIMESTAMP).cast(pa.int64()).to_numpy(),
                                 np.asarray(scores.column(names.ASSET).to_pylist(), dtype=object), labels,
                                 scores.column(names.SCORE).to_numpy(), float(scores.column(names.THRESHOLD)[0].as_py()),
                                 AlarmRules.of(config.score, config.prepare.step_s))
    care = care_score(scores.column(names.TIMESTAMP).cast(pa.int64()).to_numpy(),
                      np.asarray(scores.column(names.ASSET).to_pylist(), dtype=object), labels,
                      scores.column(names.FLAG).to_numpy(zero_copy_only=False), criticality_steps(config))
    intervals = lakehouse.read_table(paths.lake, names.ANOMALY_INTERVALS).sort_by([("peak_score", "descending")])
    top = [{"asset_id": r[names.ASSET], "start": r["start"].isoformat(), "end": r["end"].isoformat(),
            "duration_s": r["duration_s"], "severity": round(r["severity"], 2), "top_channel": r["top_channel"]}
           for r in intervals.slice(0, 5).to_pylist()]
    longest = intervals.sort_by([("duration_s", "descending")]).slice(0, 1).to_pylist()
    busiest = (longest[0]["start"] if longest else dt.datetime.combine(nights[0], dt.time())).date()

    # A second version of the model re-scores the last nights in one backfill pass; time travel keeps what the
    # first version wrote, so the two can be compared in SQL (the last example query).
    old_table_version = lakehouse.table_version(paths.lake, names.ANOMALY_SCORES)
    second = stages.train(dataclasses.replace(config, model=dataclasses.replace(config.model, **SECOND_MODEL)),
                            promote=False)
    week = nights[-RESCORED_NIGHTS:]
    rescored = stages.score_range(config, week[0], week[-1],
                                    champion=version_bundle(config, second["model_version"]))
    echo(f"re-scored {week[0]}..{week[-1]} with v{second['model_version']} (not promoted) in one pass: "
         f"{rescored['n_flags']} flagged, {rescored['n_intervals']} intervals, {rescored['seconds']:.0f} s")

    summary = {"auroc": metrics["auroc"], "pr_auc": metrics["pr_auc"], "f1": metrics["f1"],
               "precision": metrics["precision"], "recall": metrics["recall"], "n_intervals": intervals.num_rows,
               "false_alarm_rate": metrics["far"], "expected_alarm_rate": m.get("calibration_row_rate"),
               "event_recall": events["interval_recall"], "interval_precision": events["interval_precision"],
               "false_intervals_per_asset_week": events["false_intervals_per_asset_week"],
               "detection_delay_min": events["detection_delay_min"], "care": care["care"],
               "scored_days": len(dates), "scored_timestamps": metrics["n_points"],
               "mlflow_run_id": trained["run_id"], "model_version": trained["model_version"],
               "eval_auroc": m.get("eval_auroc"), "top_intervals": top,
               "second_model_version": second["model_version"],
               "query_parameters": {"range_start": f"{busiest} 06:00:00+00", "range_end": f"{busiest} 18:00:00+00",
                                    "since": week[0].isoformat(), "old_table_version": old_table_version},
               "elapsed_s": round(time.time() - started, 1), "home": str(paths.home)}
    (paths.home / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
