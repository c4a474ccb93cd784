"""Reading a sample of a table a user brings (CSV, Parquet or Delta; a file or a folder) for ``lstmad init``:
how it is stored (format, delimiter, encoding, decimal comma) and a pandas sample of its rows, plus the full
range of its timestamp-like columns where that is cheap (columnar formats read one column).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Optional

import pandas as pd
import pyarrow as pa


class SourceProfileError(ValueError):
    """The table cannot be read for inspection; names the path and why."""


@dataclasses.dataclass
class StoredTable:
    """How a table is stored and a sample of its rows (``sample``: at most ``max_rows`` rows, raw columns)."""

    path: Path
    format: str  # csv, parquet or delta
    files: list[Path]
    sample: pd.DataFrame
    rows_total: Optional[int]  # all rows (Parquet/Delta metadata), None when unknown (CSV)
    csv_delimiter: str = ","
    csv_encoding: str = "utf-8"
    decimal_separator: str = "."
    byte_order_mark: bool = False
    column_range: dict = dataclasses.field(default_factory=dict)  # column → (min, max) over all rows


def detect_format(path: Path) -> str:
    if (path / "_delta_log").is_dir():
        return "delta"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".txt", ".tsv"):
            return "csv"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        raise SourceProfileError(f"{path}: cannot tell the format from the name; give --format csv|parquet|delta")
    if path.is_dir():
        if any(path.rglob("*.parquet")):
            return "parquet"
        if any(path.rglob("*.csv")):
            return "csv"
        raise SourceProfileError(f"{path}: a folder without *.parquet or *.csv files and not a Delta table")
    raise SourceProfileError(f"{path}: no such file or folder")


def _data_files(path: Path, suffix: str) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob(f"*{suffix}")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts) and p.stat().st_size)


def _sniff_csv(file: Path) -> tuple[str, str, bool, str]:
    """(delimiter, encoding, byte-order mark, decimal separator) from the first lines of ``file``."""
    head = file.read_bytes()[:65536]
    bom = head.startswith(b"\xef\xbb\xbf")
    try:
        text = head.decode("utf-8-sig" if bom else "utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError as error:
        if error.start > len(head) - 4:  # a character cut at the end of the sample
            text, encoding = head[:error.start].decode("utf-8"), "utf-8"
        else:
            text, encoding = head.decode("latin-1"), "latin-1"
    lines = [line for line in text.splitlines() if line.strip()][:50]
    if not lines:
        raise SourceProfileError(f"{file}: empty file")
    counts = {d: min(line.count(d) for line in lines[: min(len(lines), 20)]) for d in (",", ";", "\t", "|")}
    delimiter = max(counts, key=lambda d: (counts[d], d == ","))
    if counts[delimiter] == 0:
        raise SourceProfileError(f"{file}: no delimiter (, ; tab |) found in its first lines")
    body = "\n".join(lines[1:])
    decimal = ","
    rows = list(csv.reader(body.splitlines(), delimiter=delimiter))
    cells = [c.strip() for r in rows for c in r]
    comma_numbers = sum(1 for c in cells if _is_number(c.replace(",", ".")) and "," in c and "." not in c)
    dot_numbers = sum(1 for c in cells if _is_number(c) and "." in c)
    if delimiter == "," or comma_numbers <= dot_numbers:
        decimal = "."
    return delimiter, encoding, bom, decimal


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_stored_table(path: Path, format: Optional[str] = None, max_rows: int = 500_000) -> StoredTable:
    """Sample of the table at ``path``: the first ``max_rows`` rows in file order, with how it is stored."""
    path = path.expanduser().resolve()
    kind = format or detect_format(path)
    try:
        if kind == "csv":
            return _read_csv(path, max_rows)
        if kind == "parquet":
            import pyarrow.dataset as ds

            files = _data_files(path, ".parquet")
            if not files:
                raise SourceProfileError(f"{path}: no non-empty *.parquet files")
            return _columnar(path, "parquet", files, ds.dataset([str(f) for f in files], format="parquet"), max_rows)
        if kind == "delta":
            from deltalake import DeltaTable

            if not DeltaTable.is_deltatable(str(path)):
                raise SourceProfileError(f"{path}: not a Delta table (no readable _delta_log)")
            return _columnar(path, "delta", [path], DeltaTable(str(path)).to_pyarrow_dataset(), max_rows)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise SourceProfileError(f"{path}: cannot be read as {kind}: {' '.join(str(error).split())[:200]}") from None
    raise SourceProfileError(f"{path}: format must be csv, parquet or delta, got {kind!r}")


def _columnar(path: Path, kind: str, files: list[Path], dataset, max_rows: int) -> StoredTable:
    sample = dataset.head(max_rows).to_pandas()
    import pyarrow.compute as pc

    ranges = {}
    for field in dataset.schema:
        # the full range of time-like and integer columns (one column read): the sample may be the first days
        if pa.types.is_timestamp(field.type) or pa.types.is_date(field.type) or pa.types.is_integer(field.type):
            bounds = pc.min_max(dataset.to_table(columns=[field.name]).column(0)).as_py()
            ranges[field.name] = (bounds["min"], bounds["max"])
    return StoredTable(path, kind, files, sample, dataset.count_rows(), column_range=ranges)


def _read_csv(path: Path, max_rows: int) -> StoredTable:
    files = _data_files(path, ".csv")
    if not files:
        raise SourceProfileError(f"{path}: no non-empty *.csv files")
    delimiter, encoding, bom, decimal = _sniff_csv(files[0])
    per_file = max(1, max_rows // len(files))
    parts = [pd.read_csv(f, sep=delimiter, encoding="utf-8-sig" if encoding == "utf-8" else encoding,
                         dtype=str, keep_default_na=False, nrows=per_file) for f in files[:200]]
    sample = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return StoredTable(path, "csv", files, sample, None, delimiter, encoding, decimal, bom)
