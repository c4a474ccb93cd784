"""Read-only SQL over the pipeline's Delta tables: DuckDB scanning each table's Arrow dataset."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import math
import re
from pathlib import Path
from typing import Optional

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lstmad import names
from lstmad.io import lakehouse

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}


class SqlError(ValueError):
    """A statement that is not a read-only query, or one that fails."""


# "anomaly_intervals@12" or "anomaly_intervals@2026-01-20T00:00Z" (a quoted name): that table as of a
# version or a time, beside its current snapshot in the same statement
SNAPSHOT_REFERENCE = re.compile(r'"(' + "|".join(names.DELTA_TABLES) + r')@([^"]+)"', flags=re.IGNORECASE)


def snapshot_references(sql: str) -> dict[str, tuple[str, lakehouse.AsOf]]:
    """The ``"table@VERSION"`` / ``"table@TIME"`` names a statement uses: {name: (table, version or time)}."""
    found = {}
    for match in SNAPSHOT_REFERENCE.finditer(sql):
        table, spec = match.group(1).lower(), match.group(2).strip()
        found[f"{match.group(1)}@{match.group(2)}"] = (table, _version_or_time(spec, f'"{match.group(0)[1:-1]}"'))
    return found


def _version_or_time(text: str, where: str) -> lakehouse.AsOf:
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SqlError(f"{where}: expected a version number or an ISO 8601 time after @") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def referenced_tables(sql: str) -> list[str]:
    """The lstmad tables a statement names (as whole words)."""
    return [t for t in names.DELTA_TABLES if re.search(rf"\b{t}\b", sql, flags=re.IGNORECASE)]


def parse_as_of(text: str, sql: str) -> dict[str, lakehouse.AsOf]:
    """``--as-of`` for a statement: ``N`` (every table the statement names at its version N), ``TIME``
    (ISO 8601; naive means UTC: every named table as it was then) or ``table=N,table=N``."""
    text = text.strip()
    if "=" in text:
        pairs = {}
        for part in text.split(","):
            table, _, version = part.partition("=")
            if not version.strip().isdigit():
                raise SqlError(f"--as-of {part!r}: expected table=VERSION with a whole number")
            pairs[table.strip()] = int(version)
        return pairs
    tables = referenced_tables(sql)
    if not tables:
        raise SqlError(f"--as-of {text}: the statement names none of the tables {', '.join(names.DELTA_TABLES)}")
    if text.isdigit():
        return {t: int(text) for t in tables}
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SqlError(f"--as-of {text!r}: expected a version number, an ISO 8601 time or table=VERSION") from None
    return {t: when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc) for t in tables}



def query(lake: Path, sql: str, as_of: Optional[dict[str, lakehouse.AsOf]] = None) -> pa.Table:
    """Run one read-only statement (SELECT / WITH … SELECT / EXPLAIN) over the lake's tables: their current
    snapshots, or those in ``as_of`` (parse_as_of) at a version or time; a quoted ``"table@VERSION"`` or
    ``"table@TIME"`` names that table's older snapshot in the same statement (comparing two versions)."""
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise SqlError(f"expected one SQL statement, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise SqlError(f"only read-only queries are allowed (SELECT, EXPLAIN); got a {kind} statement")
    try:
        tables = lakehouse.datasets(lake, as_of, referenced_tables(sql))
    except lakehouse.LakehouseError as error:
        raise SqlError(str(error)) from None
    for name, (table, when) in snapshot_references(sql).items():
        try:
            tables[name] = lakehouse.snapshot_dataset(lake, table, when)
        except lakehouse.LakehouseError as error:
            raise SqlError(f'"{name}": {error}') from None
    connection = duckdb.connect(":memory:")
    try:
        # UTC, as every date of the pipeline: date_trunc and printed offsets do not follow the machine's zone
        # (set here: a connect-time setting cannot autoload the icu extension)
        connection.execute("SET TimeZone = 'UTC'")
        for name, dataset in tables.items():
            connection.register(name, dataset)
        # After registering: no file system access from SQL (COPY … TO, read_csv on arbitrary paths).
        connection.execute("SET enable_external_access = false")
        return connection.sql(sql).to_arrow_table()
    except duckdb.Error as error:
        raise SqlError(str(error).splitlines()[0]) from None
    finally:
        connection.close()


FORMATS = ("table", "csv", "json", "jsonl")


def render(table: pa.Table, output: str, max_rows: int = 50) -> str:
    """``table`` as text in one of FORMATS (no final newline); ``max_rows`` limits the ``table`` format only.

    Every Arrow type is written, at any depth (lists, structs and maps hold the same encodings):

    - ``csv``: a header row, then a row per result row (Arrow's CSV writer, ``\\n`` line ends). Strings and
      names are always quoted (``"`` doubled), so commas, quotes and newlines stay in their cell; a null is
      an empty unquoted field, an empty string ``""``. Numbers as written (floats round-trip exactly; NaN and
      ±infinity as ``nan``, ``inf``, ``-inf``), booleans ``true``/``false``. Lists, structs, maps and intervals:
      compact JSON text in the cell (the ``json`` encoding below), which a reader parses back with a JSON
      parser.
    - ``json``: ``{"rows": [...]}``, an object per row (one a line, keys the column names, which must differ);
      ``jsonl``: the same objects, one a line, without the envelope. NaN and ±infinity are ``null`` (JSON has
      neither); decimals are numbers (exact when their scale is 0); maps are objects (keys as text).
    - ``table``: fixed-width text for the terminal: NULL, floats to 6 significant digits, nested values as JSON,
      a multi-line string on several lines (other control characters escaped), at most ``max_rows`` rows.

    In ``csv`` and the JSON formats: timestamps ISO 8601 with fractional digits per unit, ``T`` and their
    offset when they have a time zone (``2026-01-20T03:10:00.000000+00:00``; DuckDB gives a TIMESTAMPTZ in its
    session time zone: the same instant), without one when they have none; dates ``YYYY-MM-DD``, times
    ``HH:MM:SS[.ffffff]``; durations as seconds; binary as base64 text; DuckDB intervals as
    ``{"months", "days", "nanoseconds"}``.
    """
    if output not in FORMATS:
        raise SqlError(f"format must be one of {', '.join(FORMATS)}, got {output!r}")
    try:
        if output == "table":
            return format_table(table, max_rows)
        if output == "csv":
            return format_csv(table)
        lines = [json.dumps(row, ensure_ascii=False, allow_nan=False) for row in _json_rows(table)]
        if output == "jsonl":
            return "\n".join(lines)
        return '{"rows": [\n' + ",\n".join("  " + line for line in lines) + "\n]}" if lines else '{"rows": []}'
    except pa.ArrowException as error:
        raise SqlError(f"cannot write the result as {output}: {str(error).splitlines()[0]}") from None


def format_csv(table: pa.Table) -> str:
    """``table`` as CSV text (render describes the encoding)."""
    columns = []
    for column in table.columns:
        plain = _plain_column(column)
        columns.append(plain if _csv_native(plain.type) else _json_text(plain))
    sink = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(columns, names=table.column_names), sink)
    return sink.getvalue().decode().removesuffix("\n")


def _json_text(column: pa.ChunkedArray) -> pa.Array:
    """Each value of ``column`` as compact JSON text; nulls stay null (only the values are converted)."""
    texts = iter([json.dumps(_jsonable(v), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
                  for v in column.drop_null().to_pylist(maps_as_pydicts="lossy")])
    if not column.null_count:
        return pa.array(list(texts), pa.string())
    return pa.array([next(texts) if valid else None for valid in column.is_valid().to_pylist()], pa.string())


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """A fixed-width text rendering of an Arrow table for the terminal."""
    shown = table.slice(0, max_rows)
    values = [_plain_column(c, human=True).to_pylist(maps_as_pydicts="lossy") for c in shown.columns]
    header = [_escape(name) for name in table.column_names]
    rows = [[_cell(v).split("\n") for v in row] for row in zip(*values)]
    widths = [max([len(h)] + [len(line) for r in rows for line in r[i]]) for i, h in enumerate(header)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    for r in rows:
        for k in range(max(len(cell) for cell in r)):
            out.append(" | ".join((cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(r, widths)))
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows")
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def _json_rows(table: pa.Table) -> list[dict]:
    names_ = table.column_names
    repeated = sorted({n for n in names_ if names_.count(n) > 1})
    if repeated:
        raise SqlError(f"the result has more than one column named {', '.join(repeated)}: JSON needs distinct "
                       f"names (SELECT … AS another_name)")
    columns = []
    for column in table.columns:
        plain = _plain_column(column)
        if pa.types.is_floating(plain.type):  # NaN and ±inf: null
            plain = pc.if_else(pc.is_finite(plain), plain, pa.scalar(None, plain.type))
        values = plain.to_pylist(maps_as_pydicts="lossy")
        if not _json_native(plain.type):
            values = [_jsonable(v) for v in values]
        columns.append(values)
    return [dict(zip(names_, row)) for row in zip(*columns)]


def _plain_column(column: pa.ChunkedArray, human: bool = False) -> pa.ChunkedArray:
    chunks = [_plain(chunk, human) for chunk in (column.chunks or [column.combine_chunks()])]
    return pa.chunked_array(chunks, type=chunks[0].type)


def _plain(array: pa.Array, human: bool = False) -> pa.Array:
    """``array`` with the types text cannot hold as they are turned into text, at any depth: timestamps, dates
    and times to ISO 8601 (``human``: a space for the ``T``, no all-zero fraction), durations to seconds,
    binary to base64; dictionaries decoded, extension types as their storage."""
    kind = array.type
    if isinstance(kind, pa.BaseExtensionType):
        return _plain(array.storage, human)
    if pa.types.is_dictionary(kind):
        return _plain(array.dictionary_decode(), human)
    if pa.types.is_timestamp(kind):
        return _timestamps(array, human)
    if pa.types.is_date(kind) or pa.types.is_time(kind):
        return array.cast(pa.string())
    if pa.types.is_duration(kind):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        return pc.divide(array.cast(pa.int64()).cast(pa.float64()), per_second)
    if (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
            or pa.types.is_binary_view(kind)):
        return pa.array([None if b is None else base64.b64encode(b).decode("ascii") for b in array.to_pylist()],
                        pa.string())
    if pa.types.is_string_view(kind):
        return array.cast(pa.string())
    if pa.types.is_float16(kind):
        return array.cast(pa.float32())
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list_view(kind):
        return _plain(array.cast(pa.list_(kind.value_field)), human)
    if pa.types.is_large_list_view(kind):
        return _plain(array.cast(pa.large_list(kind.value_field)), human)
    mask = array.is_null() if array.null_count else None
    if pa.types.is_map(kind):
        offsets, first, size = _offsets(array)
        return pa.MapArray.from_arrays(offsets, _plain(array.keys.slice(first, size), human),
                                       _plain(array.items.slice(first, size), human), mask=mask)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets, first, size = _offsets(array)
        build = pa.ListArray if pa.types.is_list(kind) else pa.LargeListArray
        return build.from_arrays(offsets, _plain(array.values.slice(first, size), human), mask=mask)
    if pa.types.is_struct(kind):
        if kind.num_fields == 0:
            return array
        return pa.StructArray.from_arrays([_plain(array.field(i), human) for i in range(kind.num_fields)],
                                          names=[kind.field(i).name for i in range(kind.num_fields)], mask=mask)
    return array


UTC_NAMES = {"UTC", "Etc/UTC", "+00:00", "Z", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Zulu"}


def _timestamps(array: pa.Array, human: bool) -> pa.Array:
    """ISO 8601 text: ``2026-01-20T03:10:00.000000+00:00`` (fraction digits per unit, the offset where there
    is a time zone); ``human``: ``2026-01-20 03:10:00+00:00`` (the fraction only where it is not zero)."""
    kind = array.type
    if not human and (kind.tz is None or kind.tz in UTC_NAMES):  # numpy: several times faster than strftime
        moments = array.cast(pa.int64()).fill_null(0).to_numpy().astype(f"datetime64[{kind.unit}]")
        text = pa.array(np.datetime_as_string(moments, unit=kind.unit), pa.string(),
                        mask=array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None)
        return pc.binary_join_element_wise(text, "+00:00", "") if kind.tz else text
    text = pc.strftime(array, format=("%Y-%m-%d %H:%M:%S" if human else "%Y-%m-%dT%H:%M:%S")
                       + ("%Ez" if kind.tz else ""))
    return pc.replace_substring_regex(text, pattern=r"\.0+([+-]\d\d:\d\d)?$", replacement=r"\1") if human else text


def _offsets(array: pa.Array) -> tuple[pa.Array, int, int]:
    """A list or map array's offsets from 0, and the slice of its child values they index."""
    offsets = array.offsets
    first = offsets[0].as_py()
    return pc.subtract(offsets, pa.scalar(first, offsets.type)), first, offsets[-1].as_py() - first


def _csv_native(kind: pa.DataType) -> bool:
    return (pa.types.is_null(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_decimal(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind))


def _json_native(kind: pa.DataType) -> bool:
    """Types whose Python values (floats already without NaN) json.dumps writes as they are."""
    return (pa.types.is_null(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _jsonable(value):
    """A Python value of an Arrow array (after _plain) as JSON data."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, pa.MonthDayNano):
        return {"months": value.months, "days": value.days, "nanoseconds": value.nanoseconds}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return str(value)


def _escape(text: str) -> str:
    """Control characters other than newlines as escapes (``\\t``, ``\\r``, ``\\x00``)."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, (dict, list, tuple, pa.MonthDayNano)):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    return str(value)
