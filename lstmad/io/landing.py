"""Whether a night of raw data has landed, checked without Spark and without reading rows (the nightly DAG's
sensor pokes this every few minutes): from folders, file sizes and Parquet/Delta file statistics.

- A source partitioned by ``source.partition_column`` (CSV or Parquet): the folder
  ``<partition_column>=<night>`` holds at least one data file with rows (what prepare reads: hidden,
  ``_``-prefixed and empty files do not count; no ``_SUCCESS`` marker is needed).
- A Delta table: a file of the night's partition (partitioned), else files whose timestamp statistics reach
  the night's last step.
- An unpartitioned Parquet file or folder with a timestamp-typed column: its row groups' statistics reach the
  night's last step (a single file appended to, or a folder new files land in).
- Anything else (CSV, string or numeric timestamps, files without statistics) cannot be told without reading
  the rows: it counts as landed, and prepare says plainly when the night holds no row.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

from lstmad.config import SourceConfig


def missing_night(source: SourceConfig, landing: Path, night: str, step_s: int) -> Optional[str]:
    """None when ``night`` (YYYY-MM-DD, UTC) has landed at ``landing``, else one line naming the path checked
    and what is missing. A landing path that does not exist at all is a configuration error (FileNotFoundError),
    never a night to wait for."""
    if not landing.exists():
        raise FileNotFoundError(f"{landing}: the raw landing path (source.path) does not exist")
    day = dt.date.fromisoformat(night)
    last_step = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc) - dt.timedelta(seconds=step_s)
    if source.format == "delta":
        return _delta(source, landing, night, last_step)
    if source.partition_column:
        return _partition(source, landing, night)
    if source.format == "parquet":
        return _parquet_statistics(source, landing, night, last_step)
    return None


def _partition(source: SourceConfig, landing: Path, night: str) -> Optional[str]:
    from lstmad.io.source_schema import is_empty_file, source_files

    partition = landing / f"{source.partition_column}={night}"
    files = source_files(source, landing, [night])
    if any(not is_empty_file(source, f) for f in files):
        return None
    if not partition.is_dir():
        what = "no such folder"
    elif files:
        what = f"only empty *.{source.format} files in it"
    else:
        what = f"no *.{source.format} data file in it"
    return f"raw data for {night} has not landed: {partition}: {what}"


def _as_utc(value, zone: str) -> Optional[dt.datetime]:
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        import zoneinfo

        value = value.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    return value.astimezone(dt.timezone.utc)


def _short_of(path: Path, night: str, latest: Optional[dt.datetime], last_step: dt.datetime) -> Optional[str]:
    if latest is None or latest >= last_step:
        return None
    return (f"raw data for {night} has not landed: {path}: its latest timestamp is {latest:%Y-%m-%d %H:%M} UTC, "
            f"the night ends at {last_step:%Y-%m-%d %H:%M} UTC")


def _parquet_statistics(source: SourceConfig, landing: Path, night: str, last_step: dt.datetime) -> Optional[str]:
    import pyarrow.parquet as pq

    from lstmad.io.source_schema import source_files

    from lstmad.io.source_schema import is_empty_file

    files = [f for f in source_files(source, landing, None) if not is_empty_file(source, f)]
    if not files:
        return f"raw data for {night} has not landed: {landing}: no *.parquet file with rows"
    latest = None
    for file in files:
        try:
            metadata = pq.read_metadata(file)
        except (OSError, ValueError):
            return None  # unreadable: prepare names it
        names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
        if source.timestamp_column not in names:
            return None
        column = names.index(source.timestamp_column)
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(column).statistics
            if statistics is None or not statistics.has_min_max:
                return None
            value = _as_utc(statistics.max, source.timezone)
            if value is None:
                return None  # not a timestamp type: cannot tell
            latest = value if latest is None else max(latest, value)
    return _short_of(landing, night, latest, last_step)


def _delta(source: SourceConfig, landing: Path, night: str, last_step: dt.datetime) -> Optional[str]:
    import pyarrow as pa
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(landing)):
        raise FileNotFoundError(f"{landing}: not a Delta table (source.format is delta)")
    actions = pa.table(DeltaTable(str(landing)).get_add_actions(flatten=True))
    if source.partition_column:
        key = f"partition.{source.partition_column}"
        if key in actions.column_names:
            values = {str(v) for v in actions.column(key).to_pylist()}
            return None if night in values else (f"raw data for {night} has not landed: {landing}: no file in "
                                                 f"partition {source.partition_column}={night}")
    key = f"max.{source.timestamp_column}"
    if key not in actions.column_names:
        return None
    values = [_as_utc(v, source.timezone) for v in actions.column(key).to_pylist()]
    if any(v is None for v in values) or not values:
        return None
    return _short_of(landing, night, max(values), last_step)
