"""`lstmad tables` and `lstmad sql --as-of`: versions, row counts and snapshots of the Delta tables, on a
small lake written here with known contents (no Spark)."""

import datetime as dt
import json
import time

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from lstmad import names
from lstmad.analytics.sql import SqlError, parse_as_of, query
from lstmad.cli import app
from lstmad.io import lakehouse
from tests.conftest import tiny_config_dict, write_config


def scores(day: str, n: int, score: float) -> pa.Table:
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)
    return pa.table({
        names.ASSET: ["T1"] * n, names.TIMESTAMP: [start + dt.timedelta(minutes=i) for i in range(n)],
        names.SCORE: [score] * n, names.THRESHOLD: [1.0] * n, names.FLAG: [score > 1.0] * n, names.LABEL: [0] * n,
        "model_name": ["m"] * n, names.MODEL_VERSION: ["1"] * n, "mlflow_run_id": ["r"] * n,
        names.CHANNEL_SHARES: pa.nulls(n, lakehouse.CHANNEL_SHARES_TYPE), names.SOURCE_VERSION: ["sha256:0"] * n,
        names.SCORED_DATE: [day] * n})


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Version 0: 3 rows of day A (score 0.5); 1: plus 2 rows of day B; 2: day A rewritten as 4 rows of 2.0."""
    home = tmp_path_factory.mktemp("lake_home")
    conf = write_config(home / "tiny.yaml", tiny_config_dict(home))
    from lstmad.config import load_config
    from lstmad.layout import Paths

    lake = Paths.of(load_config(conf)).lake
    lakehouse.replace_partitions(lake, names.ANOMALY_SCORES, scores("2026-01-01", 3, 0.5), ["2026-01-01"])
    time.sleep(1.1)  # commit times are compared; keep clear of coarse file-time resolution
    between = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.1)  # commit times are compared; keep clear of coarse file-time resolution
    lakehouse.replace_partitions(lake, names.ANOMALY_SCORES, scores("2026-01-02", 2, 0.5), ["2026-01-02"])
    lakehouse.replace_partitions(lake, names.ANOMALY_SCORES, scores("2026-01-01", 4, 2.0), ["2026-01-01"])
    return {"lake": lake, "conf": conf, "between": between}


SUM = "select count(*) as n, sum(score) as total from anomaly_scores"


def test_sql_reads_each_version_and_time_of_a_table(lake):
    def at(as_of):
        return query(lake["lake"], SUM, as_of).to_pylist()[0]

    assert at(None) == {"n": 6, "total": 4 * 2.0 + 2 * 0.5}
    assert at(parse_as_of("0", SUM)) == {"n": 3, "total": 1.5}
    assert at(parse_as_of("1", SUM)) == {"n": 5, "total": 2.5}
    assert at(parse_as_of("anomaly_scores=2", SUM)) == {"n": 6, "total": 9.0}
    assert at(parse_as_of(lake["between"].isoformat(), SUM)) == {"n": 3, "total": 1.5}  # after v0, before v1


def test_versions_that_do_not_exist_are_refused_naming_the_table(lake):
    with pytest.raises(SqlError, match=r"anomaly_scores: cannot read as of 7 \(versions 0..2 exist\)"):
        query(lake["lake"], SUM, parse_as_of("7", SUM))
    with pytest.raises(SqlError, match="names none of the tables"):
        parse_as_of("1", "select 1")
    with pytest.raises(SqlError, match="expected a version number"):
        parse_as_of("yesterday", SUM)
    with pytest.raises(SqlError, match="no table 'scores'"):
        query(lake["lake"], SUM, parse_as_of("scores=1", SUM))


def test_tables_cli_lists_versions_rows_and_columns(lake):
    result = CliRunner().invoke(app, ["tables", "--conf", str(lake["conf"]), "--format", "json"])
    assert result.exit_code == 0, result.output
    described = {t["table"]: t for t in json.loads(result.output)["tables"]}
    assert set(described) == {names.ANOMALY_SCORES}  # the only table written
    table = described[names.ANOMALY_SCORES]
    assert (table["version"], table["rows"], table["partition_columns"]) == (2, 6, [names.SCORED_DATE])
    assert [c for c, _ in table["columns"]] == lakehouse.SCHEMAS[names.ANOMALY_SCORES].names
    sql = CliRunner().invoke(app, ["sql", SUM, "--conf", str(lake["conf"]), "--as-of", "1", "--format", "csv"])
    assert sql.exit_code == 0 and sql.output.strip().splitlines() == ['"n","total"', "5,2.5"]


def _write_nights(lake, day, nights, start):
    """One scoring writer: rewrite ``day`` ``nights`` times (score = night number), after ``start``."""
    from lstmad import names
    from lstmad.io import lakehouse

    start.wait()
    for night in range(nights):
        lakehouse.replace_partitions(lake, names.ANOMALY_SCORES, scores(day, 5, float(night)), [day])


def test_two_writers_of_different_dates_at_once_both_land(tmp_path):
    """Two processes (delta-rs cannot be forked: spawned) start together on a lake without the table, so
    they also race to create it; every write lands and each date ends with its last write only."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Manager().Barrier(2)
    writers = [context.Process(target=_write_nights, args=(tmp_path, day, 12, start))
               for day in ("2026-01-01", "2026-01-02")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    table = lakehouse.read_table(tmp_path, names.ANOMALY_SCORES)
    by_date = {r["scored_date"]: (r["score_count"], r["score_max"], r["score_min"])
               for r in table.group_by(names.SCORED_DATE).aggregate(
                   [(names.SCORE, "count"), (names.SCORE, "max"), (names.SCORE, "min")]).to_pylist()}
    assert by_date == {"2026-01-01": (5, 11.0, 11.0), "2026-01-02": (5, 11.0, 11.0)}
    assert lakehouse.table_version(tmp_path, names.ANOMALY_SCORES) == 23  # 24 commits, none lost


def test_compaction_and_vacuum_leave_query_results_unchanged(tmp_path):
    from deltalake import DeltaTable, write_deltalake

    for night in range(4):  # each night rewrites both dates: 6 files become unreachable
        for day in ("2026-01-01", "2026-01-02"):
            lakehouse.replace_partitions(tmp_path, names.ANOMALY_SCORES, scores(day, 3 + night, float(night)), [day])
    path = str(tmp_path / names.ANOMALY_SCORES)
    for part in range(3):  # a third date written as three files (as executors would): compaction's work
        write_deltalake(path, lakehouse.conformed(names.ANOMALY_SCORES, scores("2026-01-03", 2, 1.0)),
                        mode="append", partition_by=[names.SCORED_DATE])
    ask = "select scored_date, count(*) n, sum(score) s from anomaly_scores group by 1 order by 1"
    before = query(tmp_path, ask).to_pylist()
    assert before == [{"scored_date": "2026-01-01", "n": 6, "s": 18.0}, {"scored_date": "2026-01-02", "n": 6, "s": 18.0},
                      {"scored_date": "2026-01-03", "n": 6, "s": 6.0}]
    (report,) = lakehouse.maintain(tmp_path, retention_hours=0)
    assert query(tmp_path, ask).to_pylist() == before
    assert (report["files_before"], report["files_after"], report["files_compacted"]) == (5, 3, 3)
    assert report["files_vacuumed"] == 6 + 3  # the rewritten nights' files and the three compacted ones
    operations = [h["operation"] for h in DeltaTable(path).history()][:report["version_after"] - report["version_before"]]
    assert operations == ["VACUUM END", "VACUUM START", "OPTIMIZE"]  # newest first
    lakehouse.replace_partitions(tmp_path, names.ANOMALY_SCORES, scores("2026-01-01", 1, 9.0), ["2026-01-01"])
    assert query(tmp_path, ask).to_pylist()[0] == {"scored_date": "2026-01-01", "n": 1, "s": 9.0}
