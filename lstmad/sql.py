"""Read-only SQL over the pipeline's Delta tables: DuckDB scanning each table's Arrow dataset."""

from __future__ import annotations

from pathlib import Path
import duckdb
import pyarrow as pa

from lstmad import lakehouse

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}


class SqlError(ValueError):
    """A statement that is not a read-only query, or one that fails."""


def query(lake: Path, sql: str) -> pa.Table:
    """Run one read-only statement (SELECT / WITH … SELECT / EXPLAIN) over the lake's tables."""
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise SqlError(f"expected one SQL statement, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise SqlError(f"only read-only queries are allowed (SELECT, EXPLAIN); got a {kind} statement")
    connection = duckdb.connect(":memory:")
    try:
        for name, dataset in lakehouse.datasets(lake).items():
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
