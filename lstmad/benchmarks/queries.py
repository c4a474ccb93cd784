"""`lstmad bench queries`: latency of the analysts' example queries (lstmad.analytics.example_queries) on a year of
results for 100 synthetic assets, written as lstmad writes them (per-date data files, one commit), then the
last week re-scored by a second model version (a second commit: what the comparison query reads)."""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmad import names
from lstmad.benchmarks.common import finish_json
from lstmad.dates import MICROS, utc_date
from lstmad.io import lakehouse
from lstmad.serving.scoring import interval_id, shares_array
from lstmad.transforms.intervals import AlarmRules, alarm_intervals

CHANNELS = tuple(f"channel_{i:02d}" for i in range(10))
THRESHOLD = 3.0


def _night(rng: np.random.Generator, day: dt.date, assets: int, step_s: int, version: str
           ) -> tuple[pa.Table, list[dict]]:
    """One night of results for ``assets`` assets: anomaly_scores rows and the intervals in them. Scores are
    |N(0, 1)| with anomalous episodes (about 3 a week per asset, 20 min to 8 h) at 3-9 × the threshold."""
    start = int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()) * MICROS
    per_day = 86_400 // step_s
    times = start + np.arange(per_day, dtype=np.int64) * step_s * MICROS
    columns: dict[str, list] = {k: [] for k in ("asset", "ts", "score", "flag", "shares")}
    intervals = []
    for a in range(assets):
        score = np.abs(rng.normal(size=per_day))
        for _ in range(rng.poisson(3 / 7)):
            first = int(rng.integers(0, per_day))
            length = int(rng.integers(2, 48)) * 600 // step_s
            score[first:first + length] *= rng.uniform(3, 9) * THRESHOLD
        flag = score > THRESHOLD
        shares = rng.dirichlet(np.full(len(CHANNELS), 0.5), size=int(flag.sum()))
        asset = f"A{a:03d}"
        for found in alarm_intervals(times, score, THRESHOLD, AlarmRules(step_s, 600, 1200),
                                     np.zeros((per_day, len(CHANNELS)))):
            found["asset"] = asset
            intervals.append(found)
        columns["asset"] += [asset] * per_day
        columns["ts"].append(times)
        columns["score"].append(score)
        columns["flag"].append(flag)
        columns["shares"].append(shares_array(shares, np.flatnonzero(flag), per_day, CHANNELS))
    n = len(columns["asset"])
    scores = pa.table({
        names.ASSET: pa.array(columns["asset"]), names.TIMESTAMP: pa.array(np.concatenate(columns["ts"])).cast(lakehouse.UTC_US),
        names.SCORE: np.concatenate(columns["score"]), names.THRESHOLD: np.full(n, THRESHOLD),
        names.FLAG: np.concatenate(columns["flag"]), names.LABEL: pa.array(np.full(n, -1, np.int8)),
        names.CHANNEL_SHARES: pa.concat_arrays(columns["shares"]), "model_name": pa.array(["bench"] * n),
        names.MODEL_VERSION: pa.array([version] * n), "mlflow_run_id": pa.array(["bench-run"] * n),
        names.SOURCE_VERSION: pa.array([f"sha256:{day.isoformat()}"] * n)})
    return scores, intervals


def _interval_table(found: list[dict], rng: np.random.Generator, version: str) -> pa.Table:
    n = len(found)
    shares = shares_array(rng.dirichlet(np.full(len(CHANNELS), 0.5), size=n), np.arange(n), n, CHANNELS)
    peak = np.array([f["peak_score"] for f in found])
    return lakehouse.conformed(names.ANOMALY_INTERVALS, pa.table({
        "interval_id": [interval_id(f["asset"], f["start_us"], "bench", version) for f in found],
        names.ASSET: [f["asset"] for f in found],
        "start": pa.array([f["start_us"] for f in found]).cast(lakehouse.UTC_US),
        "end": pa.array([f["end_us"] for f in found]).cast(lakehouse.UTC_US),
        "duration_s": [f["duration_s"] for f in found], "n_points": [f["n_points"] for f in found],
        "peak_score": peak, "mean_score": [f["mean_score"] for f in found], "severity": peak / THRESHOLD,
        "top_channel": [row[0]["channel"] for row in shares.to_pylist()], names.CHANNEL_SHARES: shares,
        "attribution": ["forecast_error_share"] * n, names.THRESHOLD: [THRESHOLD] * n,
        "threshold_rule": ["percentile 95 of validation scores"] * n, "model_name": ["bench"] * n, names.MODEL_VERSION: [version] * n,
        "mlflow_run_id": ["bench-run"] * n, names.SOURCE_VERSION: ["sha256:bench"] * n,
        names.SCORED_DATE: [utc_date(f["end_us"]) for f in found]}))


def write_results(lake: Path, assets: int, days: int, step_s: int, rescored_days: int, seed: int = 0,
                  progress: Callable[[str], None] = lambda line: None) -> dict:
    """``days`` of results written as the nightly schedule writes them (a data file and one commit per table
    a night), then the last ``rescored_days`` re-scored by model version 2 in one backfill commit."""
    rng = np.random.default_rng(seed)
    first = dt.date(2025, 1, 1)
    nights = [first + dt.timedelta(days=i) for i in range(days)]

    def write(dates: list[dt.date], version: str) -> tuple[int, int]:
        files, found = [], []
        for day in dates:
            scores, intervals = _night(rng, day, assets, step_s, version)
            files.append(lakehouse.write_data_file(lake, names.ANOMALY_SCORES, scores, day.isoformat()))
            found += intervals
        iso = [d.isoformat() for d in dates]
        lakehouse.commit_files(lake, names.ANOMALY_SCORES, files, iso)
        table = _interval_table(found, rng, version)
        lakehouse.replace_rows(lake, names.ANOMALY_INTERVALS,
                               table.filter(pc.is_in(table.column(names.SCORED_DATE), pa.array(iso))),
                               iso, "interval_id", ())
        return sum(f["num_records"] for f in files), len(found)

    started = time.time()
    n_scores = n_intervals = 0
    for day in nights:
        scored, found = write([day], "1")
        n_scores, n_intervals = n_scores + scored, n_intervals + found
    progress(f"wrote {n_scores} scores and {n_intervals} intervals night by night in {time.time() - started:.0f} s")
    rescored = nights[-rescored_days:]
    write(rescored, "2")
    return {"assets": assets, "days": days, "step_s": step_s, "scores": n_scores, "intervals": n_intervals,
            "commits_per_table": days + 1, "rescored_days": rescored_days, "since": rescored[0].isoformat(),
            "old_table_version": days - 1,
            "range_start": f"{nights[-30].isoformat()} 06:00:00+00", "range_end": f"{nights[-30].isoformat()} 18:00:00+00",
            "write_s": round(time.time() - started, 1)}


def _time_queries(lake: Path, parameters: dict, repeats: int, progress: Callable[[str], None]) -> dict:
    from lstmad.analytics import example_queries
    from lstmad.analytics.sql import query

    timings = {}
    for name in example_queries.EXAMPLES:
        sql = example_queries.render(name, **parameters)
        seconds, rows = [], 0
        for _ in range(repeats):
            begun = time.perf_counter()
            rows = query(lake, sql).num_rows
            seconds.append(time.perf_counter() - begun)
        timings[name] = {"median_s": round(statistics.median(seconds), 4), "min_s": round(min(seconds), 4),
                         "max_s": round(max(seconds), 4), "rows": rows}
        progress(f"  {name}: median {timings[name]['median_s']:.3f} s, {rows} rows")
    return timings


def run(json_path: Optional[Path], assets: int = 100, days: int = 365, step_s: int = 600, repeats: int = 5,
        workdir: Optional[Path] = None, progress: Callable[[str], None] = lambda line: None) -> dict:
    """Write the results, then time each example query ``repeats`` times through `lstmad sql`'s path (open the
    Delta tables, register them in DuckDB, run): median, min and max seconds, and the rows returned; once
    as the nights left the tables, once after `lstmad maintain` compacted them."""
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        lake = Path(folder) / "lake"
        data = write_results(lake, assets, days, step_s, rescored_days=7, progress=progress)
        parameters = {k: data[k] for k in ("range_start", "range_end", "since", "old_table_version")}
        progress("as written night by night:")
        nightly = _time_queries(lake, parameters, repeats, progress)
        begun = time.time()
        maintained = lakehouse.maintain(lake, retention_hours=168)
        progress(f"compacted in {time.time() - begun:.0f} s; after compaction:")
        compacted = _time_queries(lake, parameters, repeats, progress)
    medians = [t["median_s"] for timings in (nightly, compacted) for t in timings.values()]
    result = {"bench": "queries", "data": data, "repeats": repeats, "queries_as_written": nightly,
              "maintenance": maintained, "queries_after_compaction": compacted, "goal_s": 1.0,
              "all_within_goal": all(m <= 1.0 for m in medians)}
    return finish_json(result, json_path)
