"""Read-only SQL over the pipeline's Delta tables: DuckDB scanning each table's Arrow dataset."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Optional

import duckdb
import pyarrow as pa

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
        for name, dataset in tables.items():
            connection.register(name, dataset)
        # After registering: no file system access from SQL (COPY … TO, read_csv on arbitrary paths).
        connection.execute("SET enable_external_access = false")
        return connection.sql(sql).to_arrow_table()
    except duckdb.Error as error:
        raise SqlError(str(error).splitlines()[0]) from None
    finally:
        connection.close()


def format_table(table: pa.Table, max_rows: int = 50) -> str:
    """A fixed-width text rendering of an Arrow table for the terminal."""
    columns = table.column_names
    rows = table.slice(0, max_rows).to_pylist()
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows")
    out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "NULL" if value is None else str(value)
