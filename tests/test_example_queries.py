"""The analysts' example queries (lstmad.analytics.example_queries) on a small lake with hand-worked answers; snapshot
references ("table@VERSION") in SQL; the query latency bench on a tiny year."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from lstmad import names
from lstmad.analytics import example_queries
from lstmad.analytics.sql import SqlError, query
from lstmad.io import lakehouse
from lstmad.serving.scoring import shares_array

UTC = dt.timezone.utc
STEP = 600


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def intervals_table(rows: list[tuple[str, str, str]], version: str = "1") -> pa.Table:
    """(asset, start, end) → anomaly_intervals rows; shares put channel b first, then a, then c."""
    n = len(rows)
    starts, ends = [at(r[1]) for r in rows], [at(r[2]) for r in rows]
    return lakehouse.conformed(names.ANOMALY_INTERVALS, pa.table({
        "interval_id": [f"{r[0]}-{r[1]}" for r in rows], names.ASSET: [r[0] for r in rows],
        "start": pa.array(starts, lakehouse.UTC_US), "end": pa.array(ends, lakehouse.UTC_US),
        "duration_s": [int((e - s).total_seconds()) + STEP for s, e in zip(starts, ends)],
        "n_points": [1] * n, "peak_score": [3.0] * n, "mean_score": [2.0] * n, "severity": [1.5] * n,
        "top_channel": ["b"] * n,
        names.CHANNEL_SHARES: shares_array(np.array([[0.3, 0.5, 0.2]] * n), np.arange(n), n, ("a", "b", "c")),
        "attribution": ["forecast_error_share"] * n, names.THRESHOLD: [2.0] * n, "threshold_rule": ["percentile 95 of validation scores"] * n,
        "model_name": ["m"] * n, names.MODEL_VERSION: [version] * n, "mlflow_run_id": ["r"] * n,
        names.SOURCE_VERSION: ["sha256:x"] * n, names.SCORED_DATE: [e.date().isoformat() for e in ends]}))


def scores_table(day: str, flags: list[bool], scores: list[float], version: str) -> pa.Table:
    n = len(flags)
    start = at(day)
    return lakehouse.conformed(names.ANOMALY_SCORES, pa.table({
        names.ASSET: ["T1"] * n, names.TIMESTAMP: [start + dt.timedelta(seconds=STEP * i) for i in range(n)],
        names.SCORE: scores, names.THRESHOLD: [1.0] * n, names.FLAG: flags, names.LABEL: pa.array([-1] * n, pa.int8()),
        names.CHANNEL_SHARES: pa.nulls(n, lakehouse.CHANNEL_SHARES_TYPE), "model_name": ["m"] * n,
        names.MODEL_VERSION: [version] * n, "mlflow_run_id": ["r"] * n, names.SOURCE_VERSION: ["sha256:x"] * n,
        names.SCORED_DATE: [day] * n}))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = tmp_path_factory.mktemp("lake")
    rows = [("T1", "2026-01-01 00:00", "2026-01-01 01:50"),   # 2 h, long before the last week
            ("T1", "2026-01-09 10:00", "2026-01-09 10:50"),   # 1 h
            ("T1", "2026-01-12 05:00", "2026-01-12 07:50"),   # 3 h, ends last
            ("T2", "2026-01-05 12:00", "2026-01-05 12:20"),   # 0.5 h, crosses the 7-day line (05 11:50)
            ("T2", "2026-01-10 00:00", "2026-01-10 05:50")]   # 6 h
    lakehouse.replace_rows(lake, names.ANOMALY_INTERVALS, intervals_table(rows),
                           sorted({r[2][:10] for r in rows}), "interval_id", ())
    lakehouse.replace_partitions(lake, names.ANOMALY_SCORES,
                                 scores_table("2026-01-12", [True, True, False, False], [2.0, 3.0, 0.5, 0.1], "1"),
                                 ["2026-01-12"])
    lakehouse.replace_partitions(lake, names.ANOMALY_SCORES,
                                 scores_table("2026-01-12", [True, False, True, False], [4.0, 0.9, 1.5, 0.2], "2"),
                                 ["2026-01-12"])
    return lake


def run(lake, name, **parameters):
    return query(lake, example_queries.render(name, **parameters)).to_pylist()


def test_anomaly_hours_over_the_last_7_days_clip_intervals_at_the_window(lake):
    # the window starts at max(end) − 7 days = 2026-01-05 07:50; T2's first interval is wholly inside
    got = {r["asset_id"]: (r["intervals"], r["anomaly_hours"]) for r in run(lake, "anomaly_hours_last_7_days")}
    assert got == {"T1": (2, 4.0), "T2": (2, 6.5)}


def test_the_longest_intervals_come_first_with_their_top_channels(lake):
    got = run(lake, "longest_intervals_with_top_channels")
    assert [(r["asset_id"], r["hours"]) for r in got] == [("T2", 6.0), ("T1", 3.0), ("T1", 2.0), ("T1", 1.0),
                                                          ("T2", 0.5)]
    assert got[0]["top_channels"] == ["b 50%", "a 30%", "c 20%"]


def test_intervals_overlapping_a_range_include_those_that_straddle_it(lake):
    got = run(lake, "intervals_overlapping_a_range", range_start="2026-01-09 10:30:00+00",
              range_end="2026-01-10 00:00:00+00")
    # T1's 10:00–10:50 straddles the start; T2's interval starting at the range's end is outside
    assert [(r["asset_id"], r["start"].isoformat()) for r in got] == [("T1", "2026-01-09T10:00:00+00:00")]


def test_mean_time_between_anomalies_is_end_to_next_start(lake):
    got = {r["asset_id"]: (r["intervals"], r["mean_hours_between"]) for r in run(lake, "mean_time_between_anomalies")}
    # T1: 01-01 01:50 → 01-09 10:00 = 200.17 h; 01-09 10:50 → 01-12 05:00 = 66.17 h; mean 133.17
    # T2: 01-05 12:20 → 01-10 00:00 = 107.67 h
    assert got == {"T1": (3, 133.2), "T2": (2, 107.7)}


def test_the_model_comparison_reads_the_old_version_beside_the_current(lake):
    (row,) = run(lake, "changes_between_model_versions", old_table_version=0, since="2026-01-12")
    assert (row["old_model"], row["new_model"], row["timestamps"]) == ("1", "2", 4)
    assert (row["old_flags"], row["new_flags"], row["flagged_by_both"]) == (2, 2, 1)
    old, new = [2.0, 3.0, 0.5, 0.1], [4.0, 0.9, 1.5, 0.2]
    mo, mn = sum(old) / 4, sum(new) / 4
    cov = sum((a - mo) * (b - mn) for a, b in zip(old, new))
    corr = cov / (sum((a - mo) ** 2 for a in old) * sum((b - mn) ** 2 for b in new)) ** 0.5
    assert row["score_correlation"] == round(corr, 3)


def test_snapshot_references_name_missing_versions_clearly(lake):
    with pytest.raises(SqlError, match=r'"anomaly_scores@9": anomaly_scores: cannot read as of 9 \(versions 0..1'):
        query(lake, 'select count(*) from "anomaly_scores@9"')
    with pytest.raises(SqlError, match="expected a version number or an ISO 8601 time"):
        query(lake, 'select count(*) from "anomaly_scores@yesterday"')
    assert query(lake, 'select count(*) AS n from "anomaly_scores@0" where model_version = \'1\'').to_pylist() == [{"n": 4}]


def test_the_query_bench_times_every_example_on_a_small_year(tmp_path):
    from lstmad.benchmarks import queries

    result = queries.run(tmp_path / "queries.json", assets=3, days=30, step_s=3600, repeats=1, workdir=tmp_path)
    assert json.loads((tmp_path / "queries.json").read_text())["data"]["scores"] == 3 * 30 * 24
    for timings in (result["queries_as_written"], result["queries_after_compaction"]):
        assert set(timings) == set(example_queries.EXAMPLES)
        assert timings["anomaly_hours_last_7_days"]["rows"] == 3 == timings["changes_between_model_versions"]["rows"]
