"""``lstmad sql`` in every format over every lstmad table, read back: a lake whose five tables hold a plain row,
a row of awkward values (commas, quotes, newlines, NaN, ±inf, microseconds, nested nulls), a row of nulls and a
row of empty values, each compared with the table as deltalake reads it."""

import base64
import csv
import datetime as dt
import io
import json
import math
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from lstmad import names
from lstmad.analytics.sql import FORMATS, render
from lstmad.cli import app
from lstmad.config import load_config
from lstmad.io import lakehouse
from lstmad.layout import Paths
from tests.conftest import tiny_config_dict, write_config

UTC = dt.timezone.utc
AWKWARD = ['comma, "quote" and\nnewline', "crlf\r\nline", " padded ", "ünï 日本 ✓", "tab\there", "NULL", 'a""b', ",",
           "back\\slash", "nan", '{"looks": "like json"}']
AWKWARD_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e-300, 1 / 3, 1.7976931348623157e308]
KEY = {names.QUARANTINE: "source_row", names.ANOMALY_SCORES: "mlflow_run_id", names.ANOMALY_INTERVALS: "interval_id",
       names.DRIFT_METRICS: names.MODEL_VERSION, names.MODEL_EVALUATIONS: "evaluation_id"}
DATE_COLUMNS = {names.DATE, names.SCORED_DATE}
DATES = ["2026-01-02", "2026-01-03"]
ROWS = ("plain", "awkward", "nulls", "empty")


def value(kind: str, field: pa.Field, index: int, table: str):
    """The value of column ``field`` (the ``index``-th of its table) in the row ``kind``."""
    if field.name == KEY[table]:
        return 'awkward, "key"\nrow' if kind == "awkward" else f"{kind}-{table}"
    if field.name in DATE_COLUMNS:
        return DATES[ROWS.index(kind) % 2]
    if kind == "nulls":
        return None
    t = field.type
    if pa.types.is_string(t):
        return {"plain": f"{field.name} 1", "awkward": AWKWARD[index % len(AWKWARD)], "empty": ""}[kind]
    if pa.types.is_timestamp(t):
        return {"plain": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                "awkward": dt.datetime(2026, 1, 2, 23, 59, 59, 999999, tzinfo=UTC),
                "empty": dt.datetime(1970, 1, 1, tzinfo=UTC)}[kind]
    if pa.types.is_floating(t):
        return {"plain": 0.1, "awkward": AWKWARD_FLOATS[index % len(AWKWARD_FLOATS)], "empty": 0.0}[kind]
    if pa.types.is_int8(t):
        return {"plain": 1, "awkward": -128, "empty": 0}[kind]
    if pa.types.is_integer(t):
        return {"plain": 42, "awkward": 2 ** 53 + 1, "empty": 0}[kind]
    if pa.types.is_boolean(t):
        return {"plain": True, "awkward": False, "empty": False}[kind]
    assert t == lakehouse.CHANNEL_SHARES_TYPE, f"a column type this test does not fill: {field.name} {t}"
    return {"plain": [{"channel": "power", "share": 0.75}, {"channel": "acc_x", "share": 0.25}],
            "awkward": [{"channel": AWKWARD[0], "share": math.nan}, {"channel": None, "share": math.inf},
                        None, {"channel": "", "share": None}],
            "empty": []}[kind]


def rows_of(table: str) -> pa.Table:
    schema = lakehouse.SCHEMAS[table]
    return pa.Table.from_pylist([{f.name: value(kind, f, i, table) for i, f in enumerate(schema)} for kind in ROWS],
                                schema=schema)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Every lstmad table written through lakehouse's own writers (anomaly_scores as scoring writes it: data
    files and one commit)."""
    root = tmp_path_factory.mktemp("formats")
    conf = write_config(root / "tiny.yaml", tiny_config_dict(root / "home"))
    lake = Paths.of(load_config(conf)).lake
    lakehouse.replace_partitions(lake, names.QUARANTINE, rows_of(names.QUARANTINE), DATES)
    scores = rows_of(names.ANOMALY_SCORES)
    files = [lakehouse.write_data_file(lake, names.ANOMALY_SCORES,
                                       scores.filter(pc.equal(scores[names.SCORED_DATE], day)), day)
             for day in DATES]
    lakehouse.commit_files(lake, names.ANOMALY_SCORES, files, DATES)
    lakehouse.replace_rows(lake, names.ANOMALY_INTERVALS, rows_of(names.ANOMALY_INTERVALS), DATES, "interval_id", ())
    lakehouse.replace_partitions(lake, names.DRIFT_METRICS, rows_of(names.DRIFT_METRICS), DATES)
    lakehouse.upsert(lake, names.MODEL_EVALUATIONS, rows_of(names.MODEL_EVALUATIONS), "evaluation_id")
    return {"conf": conf, "lake": lake}


def test_the_lake_holds_every_table_and_every_row(lake):
    assert sorted(t for t, _ in lakehouse.existing_tables(lake["lake"])) == sorted(names.DELTA_TABLES)
    for table in names.DELTA_TABLES:
        assert DeltaTable(str(lake["lake"] / table)).to_pyarrow_table().num_rows == len(ROWS)


def sql(lake, statement: str, output: str):
    result = CliRunner().invoke(app, ["sql", statement, "--conf", str(lake["conf"]), "--format", output])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes.decode()  # not .stdout, which turns a "\r\n" inside a value into "\n"


def strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity, which Python's json reads too, are refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def parse_cell(text: str, kind: pa.DataType):
    """A CSV cell back to a value of ``kind``; an empty field is null (or an empty string: compared alike)."""
    if text == "":
        return None
    if pa.types.is_string(kind):
        return text
    if pa.types.is_timestamp(kind):
        return parse_time(text)
    if pa.types.is_floating(kind):
        return float(text)  # nan, inf, -inf included
    if pa.types.is_integer(kind):
        return int(text)
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[text]
    return strict_json(text)  # nested: JSON text in the cell


def parse_time(text):
    if text is None:
        return None
    moment = dt.datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} has no offset"
    return moment


def as_json(data):
    """What JSON holds for ``data``: NaN and ±inf as null."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, list):
        return [as_json(v) for v in data]
    if isinstance(data, dict):
        return {k: as_json(v) for k, v in data.items()}
    return data


def same(expected, got) -> bool:
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if math.isnan(expected):
            return math.isnan(got)
        return got == expected or math.isclose(got, expected, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same, expected, got))
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(same(expected[k], got[k]) for k in got)
    return type(got) is type(expected) and got == expected  # timestamps: the same instant, any offset


def reference(lake, table: str) -> tuple[pa.Schema, dict]:
    """The table as deltalake reads it: its schema and its rows by key."""
    data = DeltaTable(str(lake["lake"] / table)).to_pyarrow_table()
    return data.schema, {row[KEY[table]]: row for row in data.to_pylist()}


def parsed_rows(text: str, output: str, schema: pa.Schema) -> tuple[list[str], list[dict]]:
    """The column names and rows (values typed per ``schema``) of a csv, json or jsonl output."""
    if output == "csv":
        header, *lines = list(csv.reader(io.StringIO(text, newline="")))
        return header, [{n: parse_cell(c, schema.field(n).type) for n, c in zip(header, line)} for line in lines]
    objects = strict_json(text)["rows"] if output == "json" else [strict_json(line) for line in text.splitlines()]
    rows = [{n: parse_time(v) if pa.types.is_timestamp(schema.field(n).type) else v for n, v in obj.items()}
            for obj in objects]
    return (list(objects[0]) if objects else []), rows


@pytest.mark.parametrize("output", ["csv", "json", "jsonl"])
@pytest.mark.parametrize("table", names.DELTA_TABLES)
def test_every_table_round_trips_in_every_machine_readable_format(lake, table, output):
    schema, expected = reference(lake, table)
    header, rows = parsed_rows(sql(lake, f"select * from {table}", output), output, schema)
    assert header == schema.names
    got = {row[KEY[table]]: row for row in rows}
    assert len(rows) == len(ROWS) and got.keys() == expected.keys()
    for key, row in expected.items():
        for name, want in row.items():
            kind = schema.field(name).type
            if output != "csv" or pa.types.is_nested(kind):
                want = as_json(want)  # JSON, and the JSON text of a nested CSV cell: NaN and ±inf are null
            have = got[key][name]
            if output == "csv" and pa.types.is_string(kind) and want == "":
                want = None  # the csv module reads null and "" alike (the raw text differs: tested below)
            assert same(want, have), f"{table}.{name} of row {key!r} as {output}: {have!r}, expected {want!r}"


@pytest.mark.parametrize("table", names.DELTA_TABLES)
def test_every_table_shows_in_the_table_format(lake, table):
    schema, expected = reference(lake, table)
    lines = sql(lake, f"select * from {table}", "table").splitlines()
    assert [c.strip() for c in lines[0].split(" | ")] == schema.names
    assert lines[-1] == f"({len(expected)} rows)"
    body = "\n".join(lines[2:-1])
    assert "\r" not in body and "\t" not in body  # escaped, so the columns stay aligned
    assert f"plain-{table}" in body and "NULL" in body
    # a multi-line value spans lines, and every line is as wide as the header: the columns stay aligned
    assert {len(line) for line in lines[2:-1]} == {len(lines[0])}


def test_csv_tells_null_from_the_empty_string_and_keeps_quotes_commas_newlines(lake):
    text = sql(lake, "select run_id, channel, reason from quarantine where source_row in ('nulls-quarantine', "
                     "'empty-quarantine') order by source_row", "csv")
    assert text.splitlines() == ['"run_id","channel","reason"', '"","",""', ",,"]  # empty strings, then nulls
    awkward = sql(lake, "select pipeline from quarantine where pipeline like 'comma%'", "csv")
    assert awkward == '"pipeline"\n"comma, ""quote"" and\nnewline"\n'


def test_nested_cells_are_json_text_and_timestamps_carry_their_offset(lake):
    text = sql(lake, "select start, channel_shares from anomaly_intervals "
                     "where interval_id = 'plain-anomaly_intervals'", "csv")
    header, (start, shares) = list(csv.reader(io.StringIO(text, newline="")))
    # DuckDB gives the instant in its session time zone (UTC here; a laptop's own elsewhere): the offset says which
    assert re.fullmatch(r"2026-01-0[12]T\d\d:\d\d:05\.000000[+-]\d\d:\d\d", start), start
    assert parse_time(start) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert shares == '[{"channel":"power","share":0.75},{"channel":"acc_x","share":0.25}]'


def test_types_beyond_the_tables_in_every_format(lake):
    """What a query can make of the tables' values: dates, binary, maps, naive timestamps, decimals, intervals,
    timestamps inside structs, fixed-size lists, enums, a 128-bit sum."""
    statement = ("select date '2026-01-02' as d, 'a,b'::blob as b, map(['k', 'l'], [1.5, 'nan'::double]) as m, "
                 "timestamp '2026-01-02 03:04:05' as naive, 1.25 as dec, sum(3) as total, interval 3 day as span, "
                 "{'at': timestamptz '2026-01-02 03:04:05+00', 'x': null} as st, [1, 2]::int[2] as pair, "
                 "'x'::enum('x', 'y') as e, time '01:02:03' as tod from range(1)")
    want = {"d": "2026-01-02", "b": base64.b64encode(b"a,b").decode(), "m": {"k": 1.5, "l": None},
            "naive": "2026-01-02T03:04:05.000000", "dec": 1.25, "total": 3,
            "span": {"months": 0, "days": 3, "nanoseconds": 0}, "pair": [1, 2], "e": "x", "tod": "01:02:03.000000"}
    for output in ("json", "jsonl"):
        text = sql(lake, statement, output)
        row = (strict_json(text)["rows"] if output == "json" else [strict_json(text)])[0]
        st = row.pop("st")
        assert parse_time(st["at"]) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and st["x"] is None
        assert row == want
    header, line = list(csv.reader(io.StringIO(sql(lake, statement, "csv"), newline="")))
    cells = dict(zip(header, line))
    assert base64.b64decode(cells["b"]) == b"a,b" and strict_json(cells["m"]) == want["m"]
    assert (cells["d"], cells["naive"], cells["dec"], cells["total"]) == ("2026-01-02", want["naive"], "1.25", "3")
    assert json.loads(cells["span"]) == want["span"] and json.loads(cells["pair"]) == [1, 2]
    table = sql(lake, statement, "table").splitlines()
    assert table[-1] == "(1 row)" and '{"k": 1.5, "l": null}' in table[2]


def test_bad_format_and_unwritable_results_are_one_line(lake):
    for args, message in ([["select 1", "--format", "xml"], "--format must be one of table, csv, json, jsonl"],
                          [["select 1 as a, 2 as a", "--format", "json"], "more than one column named a"]):
        result = CliRunner().invoke(app, ["sql", *args, "--conf", str(lake["conf"])])
        assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert sql(lake, "select 1 as a, 2 as a", "csv") == '"a","a"\n1,2\n'  # CSV and table keep both
    assert sql(lake, "select * from quarantine where false", "jsonl") == ""


def test_render_of_an_empty_result():
    empty = pa.table({"shares": pa.array([], lakehouse.CHANNEL_SHARES_TYPE), "at": pa.array([], lakehouse.UTC_US)})
    assert [render(empty, f) for f in FORMATS] == [
        "shares | at\n--------+----\n(0 rows)", '"shares","at"', '{"rows": []}', ""]



def test_times_are_utc_whatever_the_machine_zone(lake, monkeypatch):
    """date_trunc and printed offsets follow UTC (the pipeline's dates), not the machine's TZ."""
    import datetime as dt
    import time

    from lstmad.analytics.sql import query
    from lstmad.io.lakehouse import read_table

    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: most instants fall on another day there
    time.tzset()
    try:
        got = query(lake["lake"], "select timestamp, date_trunc('day', timestamp) as day from anomaly_scores "
                          "where timestamp is not null order by timestamp").to_pylist()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    stamps = sorted(t for t in read_table(lake["lake"], "anomaly_scores").column("timestamp").to_pylist() if t is not None)
    assert [r["timestamp"] for r in got] == stamps
    assert [r["day"] for r in got] == [dt.datetime.combine(t.astimezone(dt.timezone.utc).date(), dt.time(),
                                                           dt.timezone.utc) for t in stamps]
    assert all(r["day"].utcoffset() == dt.timedelta(0) for r in got)
