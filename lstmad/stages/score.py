"""Stage score: one model (the champion, or a chosen version) scores a night or a backfill range of tensor
blocks in one Spark pass; the tasks write the anomaly_scores files, the driver commits them in one
transaction, then intervals (continuing the night before's) in a second."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from typing import Optional

import numpy as np
import pyarrow.compute as pc

from lstmad import names, progress
from lstmad.config import PipelineConfig
from lstmad.dates import date_range
from lstmad.io import lakehouse, model_store
from lstmad.io.locks import ScoringLocks
from lstmad.io.model_store import champion_bundle
from lstmad.io.tensor_store import block_files, content_version, load_stats, read_blocks
from lstmad.layout import Paths, PrepareError
from lstmad.serving.intervals import commit_intervals, interval_rows


def score(config: PipelineConfig, day: dt.date, spark=None, champion: Optional[tuple] = None) -> dict:
    """Score one date's tensor blocks with the champion (or ``champion``: (registered, bundle) from
    champion_bundle) through Spark; that date's partitions of anomaly_scores and anomaly_intervals are
    replaced (an interval still open from the night before continues as the same interval)."""
    summary = score_range(config, day, day, spark, champion)
    return {**summary["dates"][0], "elapsed_s": summary["seconds"]}


def score_range(config: PipelineConfig, start: dt.date, end: dt.date, spark=None,
                champion: Optional[tuple] = None) -> dict:
    """Score the dates start..end in one Spark pass with one model (the champion when the job starts).

    The tasks write anomaly_scores data files themselves; the driver commits them in one transaction per
    table (scores, then intervals), so a job that dies leaves every table at its previous version. The
    result equals scoring each date on its own night by night: intervals are formed over the whole range,
    carrying in the flagged tail of the night before ``start``, and each lands in the partition of the
    date it ends on. Every date's tensor blocks are checked before anything is scored.
    """
    from lstmad.spark.session import get_session

    started = time.time()
    paths = Paths.of(config)
    days = date_range(start, end)
    dates = [d.isoformat() for d in days]
    registered, bundle = champion or champion_bundle(config)
    missing = [d for d in dates if not block_files(paths.tensors, [d])]
    if missing:
        span = f"--date {start}" if start == end else f"--start {start} --end {end}"
        raise PrepareError(f"{paths.tensors}: no tensor blocks for {', '.join(missing)}; run lstmad prepare "
                           f"{span} first (if it ran, it kept no usable row: its warnings say why, and lstmad sql "
                           f"\"select date, reason, count(*) from quarantine where date = '{missing[0]}' group by all\" "
                           "counts what was set aside)")
    bundle.check_compatible(tuple(config.source.tensor_channels), config.prepare.window, config.prepare.step_s)
    spark = spark or get_session(config.spark, delta_spark=config.delta.engine == "delta-spark",
                                 warm_python_workers=True)
    lineage = {"model_name": config.registered_model_name, names.MODEL_VERSION: registered["version"],
               "mlflow_run_id": registered["run_id"]}
    versions = {d: content_version(paths.tensors, d) for d in dates}
    files = block_files(paths.tensors, dates)
    stats_ids = set(read_blocks(paths.tensors, dates, [names.STATS_ID]).column(names.STATS_ID).to_pylist())
    block_stats = {sid: load_stats(paths.tensors, sid) for sid in stats_ids}
    bundle.check_normalisation(block_stats, str(paths.tensors))  # before any Spark task: one clear message
    stats = {sid: s.to_dict() for sid, s in block_stats.items()}
    locks = ScoringLocks(paths.locks, dates)
    progress.step("score %s..%s: %d block files with %s v%s", dates[0], dates[-1], len(files),
                  config.registered_model_name, registered["version"])
    scoring = scoring_pass(config, spark, files, registered, bundle, stats, lineage, versions)
    try:
        per_date = scoring.commit_scores(paths, dates)
        intervals, sources = interval_rows(config, paths, scoring.flagged, scoring.versions, bundle, lineage,
                                           dates)
        fault_point("before-intervals-commit")
        n_intervals = commit_intervals(config, paths, intervals, sources, dates, spark)
    finally:
        scoring.release()
        locks.release()
    summaries = []
    for date in dates:
        got = per_date.get(date, {"n_scores": 0, "n_flags": 0, "auroc": math.nan, "anomalous_share": 0.0})
        summaries.append({"date": date, "model_version": registered["version"], **got,
                          "n_intervals": n_intervals.get(date, 0), names.SOURCE_VERSION: versions[date]})
        progress.step("score %s: %d timestamps, %d flagged, %d intervals (model v%s)", date, got["n_scores"],
                      got["n_flags"], n_intervals.get(date, 0), registered["version"])
    return {"start": start.isoformat(), "end": end.isoformat(), "model_version": registered["version"],
            "dates": summaries, "n_scores": sum(s["n_scores"] for s in summaries),
            "n_flags": sum(s["n_flags"] for s in summaries), "n_intervals": sum(n_intervals.values()),
            "seconds": round(time.time() - started, 3)}


def fault_point(name: str) -> None:
    """Crash-test hook: LSTMAD_KILL_AT=<name> kills this process (SIGKILL, no cleanup) at that point, as a
    lost executor host or an OOM kill would; tests use it to prove that no partial result is visible."""
    import os
    import signal

    if os.environ.get("LSTMAD_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class ScoringPass:
    """A cached Spark scoring pass: the anomaly_scores data files its tasks wrote (delta-rs) or its score
    rows (delta-spark), and its flagged timestamps for the interval stage."""

    def __init__(self, config: PipelineConfig, spark, frame, payload, lineage: dict, versions: dict[str, str],
                 threshold: float):
        from pyspark.sql import functions as F

        self.config, self.spark, self.payload = config, spark, payload
        self.lineage, self.versions, self.threshold = lineage, versions, threshold
        self.frame = frame.cache()
        kind = F.col("kind")
        # the timestamps an interval can contain: in normal operation, above the hysteresis level (≤ threshold)
        level = config.score.hysteresis * threshold
        self.flagged = self.frame.filter((kind == "flag") | ((kind == "score") & F.col(names.OPERATING_STATE).isNull()
                                                             & (F.col(names.SCORE) > level)))

    def commit_scores(self, paths: Paths, dates: list[str]) -> dict[str, dict]:
        """Make the dates' anomaly_scores partitions hold this pass's rows (one commit); per date n_scores,
        n_flags, auroc (labelled timestamps only) and anomalous_share, read back from what was committed."""
        from pyspark.sql import functions as F

        if self.config.delta.engine == "delta-spark":
            lakehouse.write_scores_with_spark(self.spark, paths.lake, self.frame.filter(F.col("kind") == "score"),
                                              dates, {**self.lineage, names.THRESHOLD: self.threshold}, self.versions)
        else:
            actions = [json.loads(r.file) for r in self.frame.filter(F.col("kind") == "file").select("file").collect()]
            fault_point("before-scores-commit")  # every data file written, none committed
            lakehouse.commit_files(paths.lake, names.ANOMALY_SCORES, actions, dates)
        return score_summaries(paths, dates, self.lineage[names.MODEL_VERSION])

    def release(self) -> None:
        self.frame.unpersist()
        self.payload.unpersist()


def scoring_pass(config: PipelineConfig, spark, files: list[str], registered: dict, bundle, stats: dict,
                  lineage: dict, versions: dict[str, str]) -> ScoringPass:
    from lstmad.spark import score as transforms

    paths = Paths.of(config)
    # the content folder itself: models/vN is a link another registry's version N could repoint
    files_of_model = transforms.model_payload(model_store.folder_of(config, registered))
    payload = spark.sparkContext.broadcast(files_of_model)
    # Python workers outlive jobs and keep loaded models by this key: the weights' digest, not just name and
    # version, so that another pipeline (or a re-created registry) reusing a name never gets a stale model
    model_key = f"{config.registered_model_name}/{registered['version']}/{transforms.payload_digest(files_of_model)}"
    to_lake = None if config.delta.engine == "delta-spark" else str(paths.lake)
    frame = transforms.scored_pieces(spark, files, model_key, payload, stats, bundle.threshold,
                                     config.score.batch_size, config.prepare.max_masked_share, config.score.device,
                                     lake=to_lake, lineage=lineage, source_versions=versions,
                                     interval_level=config.score.hysteresis * bundle.threshold,
                                     state_names=tuple(s.name for s in config.operating_states))
    return ScoringPass(config, spark, frame, payload, lineage, versions, bundle.threshold)


def score_summaries(paths: Paths, dates: list[str], version: str) -> dict[str, dict]:
    """Per date of ``dates`` with scores of model ``version``: n_scores, n_flags, auroc (labelled timestamps)
    and anomalous_share, read back from the committed anomaly_scores. One date at a time and only the label,
    score and flag columns: 10 bytes a timestamp (a night of 3,000 assets is 4.3 M timestamps)."""
    import pyarrow.dataset as ds

    from lstmad.evaluation.metrics import auroc

    out = {}
    of_model = ds.field(names.MODEL_VERSION) == version
    days = lakehouse.scan_each(paths.lake, names.ANOMALY_SCORES, [names.LABEL, names.SCORE, names.FLAG],
                               [(ds.field(names.SCORED_DATE) == date) & of_model for date in dates])
    for date, day in zip(dates, days):
        if day.num_rows == 0:
            continue
        labels = day.column(names.LABEL).to_numpy(zero_copy_only=False)
        known = labels >= 0
        n_known = int(known.sum())
        anomalous = int(np.count_nonzero(labels == 1))
        both = 0 < anomalous < n_known
        scores = day.column(names.SCORE).to_numpy()
        if n_known < labels.size:
            labels, scores = labels[known], scores[known]
        out[date] = {"n_scores": day.num_rows, "n_flags": int(pc.sum(day.column(names.FLAG)).as_py() or 0),
                     "auroc": auroc(labels, scores) if both else math.nan,
                     "anomalous_share": anomalous / max(n_known, 1)}
    return out
