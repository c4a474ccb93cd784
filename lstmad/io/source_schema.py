"""The raw source's schema: which files a prepare run reads, what columns and column kinds they have, and
whether that matches the configuration and the schema recorded by earlier runs.

Every check runs before anything is written and fails with one message naming the file and the column.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

import pyarrow as pa

from lstmad.config import SourceConfig

SCHEMA_FILE = "source_schema.json"


class SourceSchemaError(ValueError):
    """The source cannot be read as configured, or its schema changed; names the file and the column."""


def kind_of(arrow_type: pa.DataType) -> str:
    """A coarse column kind: a change of kind is a schema change, int → double is not."""
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_date(arrow_type):
        return "date"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def source_files(source: SourceConfig, location: Path, partitions: Optional[Sequence[str]]) -> list[Path]:
    """Data files of a CSV/Parquet source: those of the given partition dates, or all of an unpartitioned
    file or folder (hidden and ``_``-prefixed files skipped)."""
    suffix = ".csv" if source.format == "csv" else ".parquet"
    if source.partition_column:
        folders = [location / f"{source.partition_column}={d}" for d in partitions or []]
        return sorted(p for f in folders if f.is_dir() for p in f.iterdir()
                      if p.is_file() and p.suffix == suffix and not p.name.startswith((".", "_")))
    if location.is_file():
        return [location]
    if location.is_dir():
        return sorted(p for p in location.rglob(f"*{suffix}")
                      if not any(part.startswith((".", "_")) for part in p.relative_to(location).parts))
    raise SourceSchemaError(f"{location}: source not found (source.path)")


def _columns(source: SourceConfig, file: Path) -> list[tuple[str, pa.DataType]]:
    """One file's columns in file order with their Arrow types (CSV: all strings, values are parsed later, per
    value; names exactly as written, since Spark reads them so). One read of the header or footer."""
    if source.format == "csv":
        # utf-8-sig: a byte-order mark (as spreadsheet programs write it) is not part of the first name
        encoding = "utf-8-sig" if source.csv_encoding.lower().replace("_", "-") in ("utf-8", "utf8") \
            else source.csv_encoding
        with open(file, newline="", encoding=encoding, errors="replace") as handle:
            header = next(csv.reader(handle, delimiter=source.csv_delimiter), None)
        if not header or not any(h.strip() for h in header):
            raise SourceSchemaError(f"{file}: empty file, no header row")
        columns = [(h, pa.string()) for h in header]
    else:
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise SourceSchemaError(f"{file}: not a readable Parquet file ({one_line(error)})") from None
        columns = [(field.name, field.type) for field in schema]
    _check_names(file, [name for name, _ in columns])
    return columns


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _check_names(file: Path, names: list[str]) -> None:
    """Spark resolves column names case-insensitively: two names equal up to case cannot both be read."""
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            other = seen[name.lower()]
            what = "appears more than once" if other == name else f"and '{other}' differ only in case"
            raise SourceSchemaError(f"{file}: column '{name}' {what} in the header; Spark cannot tell them apart "
                                    "(rename one in the source)")
        seen[name.lower()] = name


def is_empty_file(source: SourceConfig, file: Path) -> bool:
    """Zero bytes, or a Parquet file of zero rows (an unreadable one is not empty: _columns names it)."""
    if file.stat().st_size == 0:
        return True
    if source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(file).num_rows == 0
        except (pa.ArrowInvalid, OSError):
            return False
    return False


def split_empty_files(source: SourceConfig, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files with rows, files without: zero bytes, or a Parquet file of zero rows). Empty files are skipped
    (and counted) when others have rows — one empty file written beside good ones must not stop a night;
    when all are empty, all are returned as they are (the run then says there is nothing to read)."""
    flags = [is_empty_file(source, f) for f in files]
    if all(flags):
        return files, []
    return [f for f, e in zip(files, flags) if not e], [f for f, e in zip(files, flags) if e]


def delta_schema(location: Path) -> dict[str, str]:
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(location)):
        raise SourceSchemaError(f"{location}: not a Delta table (source.format is delta)")
    schema = pa.schema(DeltaTable(str(location)).schema().to_arrow())
    return {field.name: kind_of(field.type) for field in schema}


def observed_schema(source: SourceConfig, location: Path, files: list[Path]) -> dict[str, str]:
    """The one schema all files share; a file that differs from the first fails naming the column."""
    if source.format == "delta":
        return delta_schema(location)
    schema: dict[str, str] = {}
    first: Optional[Path] = None
    layout: list = []
    for file in files:
        columns = [(n, t) for n, t in _columns(source, file) if n != source.partition_column]
        this = {name: kind_of(kind) for name, kind in columns}
        # what Spark needs equal across the files it reads together: order (CSV) and exact types (Parquet)
        here = [(name, str(kind)) for name, kind in columns]
        if first is None:
            schema, first, layout = this, file, here
            continue
        _compare(schema, this, f"{file}", f"{first}")
        if here != layout:
            if source.format == "csv":
                raise SourceSchemaError(f"{file}: columns are in another order than in {first} "
                                        f"({[n for n, _ in here]} vs {[n for n, _ in layout]})")
            for (name, kind), (_, first_kind) in zip(sorted(here), sorted(layout)):
                if kind != first_kind:
                    raise SourceSchemaError(f"{file}: column '{name}' is {kind} here but {first_kind} in {first}; "
                                            "Spark cannot read them together")
    return schema


def check_configured(source: SourceConfig, schema: dict[str, str], where: str) -> None:
    """Every configured column exists with a usable kind."""
    for column in source.columns:
        if column not in schema:
            raise SourceSchemaError(f"{where}: column '{column}' is missing (configured in source); the source "
                                    f"has {sorted(schema)}")
    for column in source.channel_names:
        if schema[column] not in ("number", "string", "null"):
            raise SourceSchemaError(f"{where}: column '{column}' has kind {schema[column]}, expected a number")
    if source.label_column and schema[source.label_column] not in ("number", "string", "null", "bool"):
        raise SourceSchemaError(f"{where}: column '{source.label_column}' has kind {schema[source.label_column]}, "
                                "expected labels (numbers, text or true/false)")
    numeric_time = source.timestamp_format.startswith("epoch")
    if schema[source.timestamp_column] not in ("timestamp", "string", "date", *(("number",) if numeric_time else ())):
        raise SourceSchemaError(f"{where}: column '{source.timestamp_column}' has kind "
                                f"{schema[source.timestamp_column]}, expected a timestamp or a string")


def _compare(recorded: dict[str, str], current: dict[str, str], where: str, against: str) -> None:
    for column in current:
        if column not in recorded:
            raise SourceSchemaError(f"{where}: new column '{column}' not in {against}; update source.channels "
                                    f"and re-run with --accept-schema if the change is intended")
    for column, kind in recorded.items():
        if column not in current:
            raise SourceSchemaError(f"{where}: column '{column}' is missing (it is in {against}; renamed or "
                                    f"dropped?)")
        if current[column] != kind and "null" not in (kind, current[column]):
            raise SourceSchemaError(f"{where}: column '{column}' changed type from {kind} to {current[column]} "
                                    f"(against {against})")


def check_recorded(home: Path, schema: dict[str, str], where: str) -> None:
    """Compare with the schema recorded by earlier runs of this pipeline (none recorded: nothing to do)."""
    file = home / SCHEMA_FILE
    if file.exists():
        _compare(json.loads(file.read_text())["columns"], schema, where, f"the recorded source schema ({file})")


def record(home: Path, schema: dict[str, str]) -> None:
    """Remember the schema a successful run read, for the next run to compare with."""
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{SCHEMA_FILE}.tmp"
    tmp.write_text(json.dumps({"columns": schema}, indent=2))
    tmp.replace(home / SCHEMA_FILE)


def naive_nanosecond_timestamps(source: SourceConfig, files: list[Path]) -> bool:
    """Whether the Parquet timestamp column holds nanoseconds without a zone (pandas' default), which Spark
    reads as plain longs: lstmad then reads them in ``source.timezone``."""
    if source.format != "parquet" or not files:
        return False
    import pyarrow.parquet as pq

    kind = pq.read_schema(files[0]).field(source.timestamp_column).type
    return pa.types.is_timestamp(kind) and kind.unit == "ns" and kind.tz is None


def source_files_or_fail(source: SourceConfig, location: Path, history_dates: list[str], dates: list[str]
                         ) -> list[Path]:
    """The files to read (history partitions included), or one error saying where nothing was found."""
    files = source_files(source, location, dates)
    if not files:
        what = (f"raw partitions for {dates[0]} .. {dates[-1]}" if source.partition_column
                else f"*.{source.format} files")
        raise SourceSchemaError(f"{location}: no {what}")
    if source.partition_column and history_dates:
        files = source_files(source, location, history_dates) + files
    return files
