"""anomaly_intervals rows with their lineage, and intervals that continue across midnight: the flagged tail a
night carries in, intervals a re-scored night hands back to the night they end on, and the one commit that
replaces the nights' rows."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lstmad import names
from lstmad.config import PipelineConfig
from lstmad.dates import MICROS, date_range, day_start_us, utc_date
from lstmad.io import lakehouse
from lstmad.layout import Paths
from lstmad.serving.scoring import shares_array, shares_row
from lstmad.transforms.intervals import FOUND_SCHEMA, AlarmRules, alarm_intervals

log = logging.getLogger("lstmad")


class SourceVersions:
    """source_version of a span of nights: one night's content_version, or the SHA-256 of the lines
    DATE=<version> of every night the span touches (computed once per night)."""

    def __init__(self, paths: Paths, known: dict[str, str]):
        self.paths, self.known = paths, dict(known)

    def night(self, day: str) -> str:
        from lstmad.io.tensor_store import content_version

        if day not in self.known:  # an earlier night an interval began on
            try:
                self.known[day] = content_version(self.paths.tensors, day)
            except FileNotFoundError:
                self.known[day] = "unknown"
        return self.known[day]

    def of_dates(self, dates: list[str]) -> str:
        """One version for several nights: SHA-256 of the lines DATE=<version>."""
        import hashlib

        return "sha256:" + hashlib.sha256("\n".join(f"{d}={self.night(d)}" for d in dates).encode()).hexdigest()

    def span(self, first_us: int, last_us: int) -> str:
        covered = [d.isoformat() for d in date_range(dt.date.fromisoformat(utc_date(first_us)),
                                                     dt.date.fromisoformat(utc_date(last_us)))]
        return self.night(covered[0]) if len(covered) == 1 else self.of_dates(covered)


def interval_table(found: pa.Table, model: dict, channels: tuple[str, ...], sources: SourceVersions) -> pa.Table:
    """anomaly_intervals rows from found intervals (spark.score.INTERVAL_STRUCT columns; shares in
    ``channels`` order or null) of one model: {model_name, model_version, mlflow_run_id, threshold,
    threshold_rule, attribution}."""
    n = found.num_rows
    starts, ends = found.column("start_us").to_pylist(), found.column("end_us").to_pylist()
    share_rows = found.column("shares").to_pylist()
    attributed = np.array([row is not None for row in share_rows], dtype=bool)
    channel_shares = (shares_array(np.asarray([r for r in share_rows if r is not None], dtype=np.float64)
                                   .reshape(int(attributed.sum()), len(channels)), np.flatnonzero(attributed), n,
                                   channels)
                      if attributed.any() else pa.nulls(n, lakehouse.CHANNEL_SHARES_TYPE))
    top = [row[0]["channel"] if row else None for row in channel_shares.to_pylist()]
    return pa.table({
        "interval_id": found.column("interval_id"), names.ASSET: found.column(names.ASSET),
        "start": utc_timestamps(found.column("start_us")), "end": utc_timestamps(found.column("end_us")),
        "duration_s": found.column("duration_s"), "n_points": found.column("n_points"),
        "peak_score": found.column("peak_score"), "mean_score": found.column("mean_score"),
        "severity": pc.divide(found.column("peak_score"), model[names.THRESHOLD]),
        "top_channel": pa.array(top, pa.string()), names.CHANNEL_SHARES: channel_shares,
        "attribution": pa.array([model["attribution"]] * n, pa.string()),
        names.THRESHOLD: pa.array([model[names.THRESHOLD]] * n, pa.float64()),
        "threshold_rule": pa.array([model["threshold_rule"]] * n, pa.string()),
        **{k: pa.array([model[k]] * n, pa.string()) for k in ("model_name", names.MODEL_VERSION, "mlflow_run_id")},
        names.SOURCE_VERSION: pa.array([sources.span(a, b) for a, b in zip(starts, ends)], pa.string()),
        names.SCORED_DATE: pa.array([utc_date(e) for e in ends], pa.string()),
    })


def carried_tails(config: PipelineConfig, paths: Paths, lineage: dict, channels: tuple[str, ...],
                   new_from_us: int) -> dict[str, dict]:
    """Per asset, the timestamps before ``new_from_us`` (same model) that an interval of this pass may
    continue (flagged, or above the hysteresis level): all those of an interval that ends close enough to the
    pass's start to merge with it (from a persistence window before its start), else the last
    AlarmRules.lookback_s seconds (a run too short to be an interval yet)."""
    rules = AlarmRules.of(config.score, config.prepare.step_s)
    step, gap = rules.step_s, rules.merge_gap_s
    same_model = (ds.field("model_name") == lineage["model_name"]) & \
        (ds.field(names.MODEL_VERSION) == lineage[names.MODEL_VERSION])
    new_from = pa.scalar(new_from_us, lakehouse.UTC_US)
    reach = pa.scalar(new_from_us - (step + gap) * MICROS, lakehouse.UTC_US)
    still_open = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, [names.ASSET, "start"],
                                same_model & (ds.field("end") >= reach) & (ds.field("start") < new_from))
    carry_from = {}
    for asset, begun in zip(still_open.column(names.ASSET).to_pylist(),
                            still_open.column("start").cast(pa.int64()).to_pylist()):
        carry_from[asset] = min(begun, carry_from.get(asset, begun))
    # the persistence window before an open interval's start decides whether its first timestamp opened it
    carry_from = {a: begun - rules.persistence_window * step * MICROS for a, begun in carry_from.items()}
    default_from = new_from_us - rules.lookback_s() * MICROS
    earliest = min([default_from, *carry_from.values()])
    tail = lakehouse.scan(paths.lake, names.ANOMALY_SCORES,
                          [names.ASSET, names.TIMESTAMP, names.SCORE, names.CHANNEL_SHARES],
                          same_model & interval_candidates(rules)
                          & (ds.field(names.TIMESTAMP) >= pa.scalar(earliest, lakehouse.UTC_US))
                          & (ds.field(names.TIMESTAMP) < new_from)
                          & (ds.field(names.SCORED_DATE) >= utc_date(earliest)))
    out: dict[str, dict] = {}
    for asset, moment, value, shares in zip(tail.column(names.ASSET).to_pylist(),
                                            tail.column(names.TIMESTAMP).cast(pa.int64()).to_pylist(),
                                            tail.column(names.SCORE).to_pylist(),
                                            tail.column(names.CHANNEL_SHARES).to_pylist()):
        if moment < carry_from.get(asset, default_from):
            continue
        entry = out.setdefault(asset, {"timestamp_us": [], "score": [], "shares": []})
        entry["timestamp_us"].append(moment)
        entry["score"].append(value)
        entry["shares"].append(None if shares is None else shares_row(shares, channels))
    return out


def interval_rows(config: PipelineConfig, paths: Paths, flagged, versions: dict[str, str], bundle,
                  lineage: dict, dates: list[str]) -> tuple[pa.Table, SourceVersions]:
    """anomaly_intervals rows of the pass (Spark: grouped by asset, continuing the night before's open
    intervals), with every lineage column."""
    from lstmad.spark import score as transforms

    new_from_us = day_start_us(dt.date.fromisoformat(dates[0]))
    carried = carried_tails(config, paths, lineage, bundle.reported_channels, new_from_us)
    found = transforms.anomaly_intervals(flagged, bundle.threshold, AlarmRules.of(config.score, config.prepare.step_s),
                                         lineage["model_name"], lineage[names.MODEL_VERSION], new_from_us,
                                         carried).toArrow()
    found = found.sort_by([(names.ASSET, "ascending"), ("start_us", "ascending")])
    model = {**lineage, names.THRESHOLD: bundle.threshold, "threshold_rule": bundle.threshold_rule,
             "attribution": getattr(bundle.detector, "attribution_method", "none")}
    sources = SourceVersions(paths, versions)
    return interval_table(found, model, bundle.reported_channels, sources), sources


def handed_back(config: PipelineConfig, paths: Paths, dates: list[str], rederived: set[str],
                 sources: SourceVersions) -> pa.Table:
    """Intervals stored with these dates that began on an earlier night and that this run does not derive
    again (these nights no longer continue them, or another model version scores them now): each goes back
    to the night it ends on, as the candidate timestamps of its own model before these dates make it (or goes,
    when those no longer make an interval)."""
    rules = AlarmRules.of(config.score, config.prepare.step_s)
    first_us = day_start_us(dt.date.fromisoformat(dates[0]))
    stored = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, lakehouse.SCHEMAS[names.ANOMALY_INTERVALS].names,
                            ds.field(names.SCORED_DATE).isin(dates)
                            & (ds.field("start") < pa.scalar(first_us, lakehouse.UTC_US)))
    tables = []
    for row in stored.to_pylist():
        if row["interval_id"] in rederived:
            continue
        start_us = int(pa.scalar(row["start"], lakehouse.UTC_US).cast(pa.int64()).as_py())
        from_us = start_us - rules.persistence_window * rules.step_s * MICROS  # what decided its opening
        points = lakehouse.scan(
            paths.lake, names.ANOMALY_SCORES, [names.TIMESTAMP, names.SCORE, names.CHANNEL_SHARES],
            (ds.field(names.ASSET) == row[names.ASSET]) & (ds.field("model_name") == row["model_name"])
            & (ds.field(names.MODEL_VERSION) == row[names.MODEL_VERSION]) & interval_candidates(rules)
            & (ds.field(names.TIMESTAMP) >= pa.scalar(from_us, lakehouse.UTC_US))
            & (ds.field(names.TIMESTAMP) < pa.scalar(first_us, lakehouse.UTC_US))
            & (ds.field(names.SCORED_DATE) >= utc_date(from_us))).sort_by(names.TIMESTAMP)
        channels = tuple(pair["channel"] for pair in row[names.CHANNEL_SHARES] or ())
        listed = points.column(names.CHANNEL_SHARES).to_pylist()
        shares = None
        if channels:
            shares = np.array([np.full(len(channels), np.nan) if p is None else shares_row(p, channels)
                               for p in listed]).reshape(len(listed), len(channels))
        times = points.column(names.TIMESTAMP).cast(pa.int64()).to_numpy()
        again = [f for f in alarm_intervals(times, points.column(names.SCORE).to_numpy(), row[names.THRESHOLD],
                                            rules, shares) if f["start_us"] == start_us]
        if not again:
            continue
        found = {**again[0], "interval_id": row["interval_id"], names.ASSET: row[names.ASSET]}
        mean = found.pop("shares", None)
        found["shares"] = None if mean is None or np.isnan(mean).any() else mean.tolist()
        model = {k: row[k] for k in ("model_name", names.MODEL_VERSION, "mlflow_run_id", names.THRESHOLD,
                                     "threshold_rule", "attribution")}
        tables.append(interval_table(pa.Table.from_pylist([found], schema=FOUND_SCHEMA), model, channels,
                                      sources))
    return pa.concat_tables(tables) if tables else None


def commit_intervals(config: PipelineConfig, paths: Paths, intervals: pa.Table, sources: SourceVersions,
                      dates: list[str], spark) -> dict[str, int]:
    """Replace the dates' anomaly_intervals rows with ``intervals`` (from interval_rows) in one commit.

    An interval continued from an earlier night moves out of that night's rows; one already continued by a
    later night than these (a re-run of an earlier date) stays with that night; one these dates held that
    began earlier and is not derived again goes back to its own night (handed_back). Returns intervals per
    date of these dates.
    """
    ids = intervals.column("interval_id").to_pylist()
    stored = lakehouse.scan(paths.lake, names.ANOMALY_INTERVALS, ["interval_id", names.SCORED_DATE],
                            ds.field("interval_id").isin(ids or [""]))
    stored_on = dict(zip(stored.column("interval_id").to_pylist(), stored.column(names.SCORED_DATE).to_pylist()))
    keep = [not (stored_on.get(i, "") > dates[-1]) for i in ids]
    if not all(keep):
        log.info("%d interval(s) continue into nights after %s and stay there", keep.count(False), dates[-1])
    intervals = intervals.filter(pa.array(keep, pa.bool_()))
    handed = handed_back(config, paths, dates, set(ids), sources)
    if handed is not None:
        log.info("%d interval(s) these nights no longer continue go back to the night they end on", handed.num_rows)
        intervals = pa.concat_tables([intervals, handed.cast(intervals.schema)])
    first_us = day_start_us(dt.date.fromisoformat(dates[0]))
    moved = [i for i, s in zip(intervals.column("interval_id").to_pylist(),
                               intervals.column("start").cast(pa.int64()).to_pylist()) if s < first_us]
    lakehouse.replace_rows(paths.lake, names.ANOMALY_INTERVALS, intervals, dates, "interval_id", moved,
                           config.delta.engine, spark)
    counts: dict[str, int] = {}
    for day in intervals.column(names.SCORED_DATE).to_pylist():
        if day in dates:
            counts[day] = counts.get(day, 0) + 1
    return counts




def interval_candidates(rules: AlarmRules) -> ds.Expression:
    """anomaly_scores rows an interval can contain: in normal operation (no operating state) and above the
    hysteresis level of their threshold (flagged rows are: the level is at most the threshold). Rows in an
    operating state never are, whatever their score: alarm_intervals judges the rows it is given by score."""
    return ds.field(names.OPERATING_STATE).is_null() & (
        ds.field(names.SCORE) > ds.field(names.THRESHOLD) * rules.hysteresis)


def utc_timestamps(micros: pa.ChunkedArray) -> pa.ChunkedArray:
    return micros.cast(pa.timestamp("us", tz="UTC"))
