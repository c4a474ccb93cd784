"""Stage drift: a scored night's inputs and scores against the champion's training reference (PSI and KS per
channel, score KS, alarm rate, model age); one drift_metrics row and the retraining signal."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from lstmad import names
from lstmad.config import PipelineConfig
from lstmad.io import lakehouse
from lstmad.io.model_store import champion_bundle
from lstmad.io.tensor_store import iter_blocks, load_stats, read_blocks
from lstmad.layout import Paths, PrepareError

log = logging.getLogger("lstmad")


def drift(config: PipelineConfig, day: dt.date) -> dict:
    """Input drift (PSI per channel against the champion's training reference) and the day's alarm rate
    against the expected one; one row in drift_metrics and a retraining signal."""
    from lstmad.evaluation.drift import drift_statistics, retrain_signal, score_ks

    paths = Paths.of(config)
    registered, bundle = champion_bundle(config)
    date = day.isoformat()
    values = night_values(paths, date, bundle)
    reference = bundle.drift_reference
    psi, ks = drift_statistics(reference, values)  # ks 0 for a reference saved without quantiles
    n_rows = int(values.shape[0])
    del values  # the night's values (0.14 MB an asset) are not held while its scores are read
    scores_path = lakehouse.table_path(paths.lake, names.ANOMALY_SCORES)
    # rows outside normal operation are never flagged and the reference holds none: the alarm rate and the
    # score distribution are those of the night's rows in normal operation (selected as they are read)
    night_rows = ds.field(names.SCORED_DATE) == date
    night = lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.FLAG, names.SCORE],
                           night_rows & ds.field(names.OPERATING_STATE).is_null())
    if night.num_rows == 0 and not lakehouse.scan(paths.lake, names.ANOMALY_SCORES, [names.FLAG], night_rows).num_rows:
        raise PrepareError(f"{scores_path}: no scores for {date}; run lstmad score --date {date} first")
    flags = night.column(names.FLAG).to_numpy(zero_copy_only=False)
    alarm_rate = float(flags.mean()) if flags.size else 0.0
    night_ks = score_ks(reference, night.column(names.SCORE).to_numpy())
    night_ks = 0.0 if math.isnan(night_ks) else night_ks  # a model saved without validation score quantiles
    age_days = float((day - dt.date.fromisoformat(reference["trained_until"])).days) \
        if "trained_until" in reference else 0.0
    # A channel drifts when it strays further than the configured PSI and than any training day did.
    thresholds = np.maximum(config.drift.psi_threshold,
                            bundle.drift_reference.get("daily_psi_max", np.zeros_like(psi)))
    d = config.drift
    retrain, reasons = retrain_signal(psi, alarm_rate, bundle.expected_alarm_rate, thresholds,
                                      d.drifted_channel_share, d.alarm_rate_factor, bundle.channels, ks,
                                      d.ks_threshold, night_ks, d.score_ks_threshold, age_days, d.max_age_days)
    worst, worst_ks = int(np.argmax(psi)), int(np.argmax(ks))
    row = {names.SCORED_DATE: date, names.MODEL_VERSION: registered["version"], "n_rows": n_rows,
           "max_psi": float(psi[worst]), "max_psi_channel": bundle.channels[worst],
           "psi_by_channel": json.dumps(dict(zip(bundle.channels, np.round(psi, 6).tolist()))),
           "max_ks": float(ks[worst_ks]), "max_ks_channel": bundle.channels[worst_ks], "score_ks": night_ks,
           "model_age_days": age_days,
           "alarm_rate": alarm_rate, "expected_alarm_rate": bundle.expected_alarm_rate, "retrain": retrain,
           "retrain_reasons": "; ".join(reasons)}
    spark = None
    if config.delta.engine == "delta-spark":
        from lstmad.spark.session import get_session

        spark = get_session(config.spark, delta_spark=True)
    lakehouse.replace_partitions(paths.lake, names.DRIFT_METRICS, pa.Table.from_pylist([row]), [date],
                                 config.delta.engine, spark)
    log.info("drift %s: max PSI %.3f (%s), alarm rate %.4f vs %.4f expected, retrain=%s", date, row["max_psi"],
             row["max_psi_channel"], alarm_rate, bundle.expected_alarm_rate, retrain)
    return {k: v for k, v in row.items() if k != "psi_by_channel"}


def night_values(paths: Paths, date: str, bundle) -> np.ndarray:
    """The own rows of a date's tensor blocks in the model's normalisation, (n, C) float32 as the blocks hold
    them (the drift statistics sort each channel: half the bytes of float64). Read a batch of blocks at a
    time into one array: the memory is the night's values once, not its blocks several times over."""
    sizes = read_blocks(paths.tensors, [date], [names.N_ROWS, names.N_HISTORY])
    if sizes.num_rows == 0:
        raise PrepareError(f"{paths.tensors}: no tensor blocks for {date}; run lstmad prepare --date {date} first")
    total = int(np.sum(sizes.column(names.N_ROWS).to_numpy() - sizes.column(names.N_HISTORY).to_numpy()))
    out = np.empty((total, len(bundle.channels)), dtype=np.float32)
    position, stats_by_id = 0, {}
    columns = [names.N_ROWS, names.N_HISTORY, names.N_CHANNELS, names.VALUES, names.STATS_ID, names.ASSET]
    for batch in iter_blocks(paths.tensors, [date], columns):
        for n_rows, n_hist, n_ch, raw, sid, asset in zip(*batch.to_pydict().values()):
            own = np.frombuffer(raw, dtype=np.float32).reshape(n_rows, n_ch)[n_hist:]
            if sid not in stats_by_id:
                stats_by_id[sid] = load_stats(paths.tensors, sid)
            out[position:position + own.shape[0]] = bundle.renormalise(own, stats_by_id[sid], asset)
            position += own.shape[0]
    # Arrow's allocator keeps the batches' freed memory for reuse: 74 MB after a 1,000-asset night's blocks,
    # held through the statistics that follow unless handed back
    pa.default_memory_pool().release_unused()
    return out[:position]


def retrain_needed(config: PipelineConfig, day: dt.date) -> bool:
    """The retraining signal drift() stored for ``day`` (False when drift has not run for it)."""
    rows = lakehouse.read_table(Paths.of(config).lake, names.DRIFT_METRICS)
    rows = rows.filter(ds.field(names.SCORED_DATE) == day.isoformat()).column("retrain").to_pylist()
    return bool(rows and rows[-1])
