"""The one module that talks to Delta: table schemas, partition-replacing writes and snapshot reads.

delta-rs (``deltalake``) is the embedded default; ``delta.engine: delta-spark`` writes through Spark with
the Delta Lake jars, which must be on the classpath (a cluster setting).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc

from lstmad import names

UTC_US = pa.timestamp("us", tz="UTC")
# (channel, share) pairs, largest share first, every channel of the model listed (lstmad.serving.scoring builds them)
CHANNEL_SHARES_TYPE = pa.list_(pa.struct([("channel", pa.string()), ("share", pa.float64())]))

SCHEMAS: dict[str, pa.Schema] = {
    names.QUARANTINE: pa.schema([
        ("pipeline", pa.string()), (names.DATE, pa.string()), (names.ASSET, pa.string()),
        (names.TIMESTAMP, UTC_US), (names.REASON, pa.string()), ("channel", pa.string()),
        ("source_row", pa.string()), ("run_id", pa.string()),
    ]),
    # one row per asset and scored timestamp; channel_shares only where flagged (and the detector attributes)
    names.ANOMALY_SCORES: pa.schema([
        (names.ASSET, pa.string()), (names.TIMESTAMP, UTC_US), (names.SCORE, pa.float64()),
        (names.THRESHOLD, pa.float64()), (names.FLAG, pa.bool_()), (names.LABEL, pa.int8()),
        (names.CHANNEL_SHARES, CHANNEL_SHARES_TYPE), ("model_name", pa.string()), (names.MODEL_VERSION, pa.string()),
        ("mlflow_run_id", pa.string()), (names.SOURCE_VERSION, pa.string()), (names.SCORED_DATE, pa.string()),
        (names.OPERATING_STATE, pa.string()),  # null in normal operation, else the configured state's name
    ]),
    # one row per interval, in the partition of the night that last extended it
    names.ANOMALY_INTERVALS: pa.schema([
        ("interval_id", pa.string()), (names.ASSET, pa.string()), ("start", UTC_US), ("end", UTC_US),
        ("duration_s", pa.int64()), ("n_points", pa.int64()), ("peak_score", pa.float64()),
        ("mean_score", pa.float64()), ("severity", pa.float64()), ("top_channel", pa.string()),
        (names.CHANNEL_SHARES, CHANNEL_SHARES_TYPE), ("attribution", pa.string()), (names.THRESHOLD, pa.float64()),
        ("threshold_rule", pa.string()), ("model_name", pa.string()), (names.MODEL_VERSION, pa.string()),
        ("mlflow_run_id", pa.string()), (names.SOURCE_VERSION, pa.string()), (names.SCORED_DATE, pa.string()),
    ]),
    names.DRIFT_METRICS: pa.schema([
        (names.SCORED_DATE, pa.string()), (names.MODEL_VERSION, pa.string()), ("n_rows", pa.int64()),
        ("max_psi", pa.float64()), ("max_psi_channel", pa.string()), ("psi_by_channel", pa.string()),
        ("max_ks", pa.float64()), ("max_ks_channel", pa.string()), ("score_ks", pa.float64()),
        ("model_age_days", pa.float64()), ("alarm_rate", pa.float64()), ("expected_alarm_rate", pa.float64()), ("retrain", pa.bool_()),
        ("retrain_reasons", pa.string()),
    ]),
    # one row per evaluation of a model version on a labelled data range; upserted on evaluation_id
    names.MODEL_EVALUATIONS: pa.schema([
        ("evaluation_id", pa.string()), ("model_name", pa.string()), (names.MODEL_VERSION, pa.string()),
        ("mlflow_run_id", pa.string()), ("purpose", pa.string()), ("data_start", pa.string()),
        ("data_end", pa.string()), ("evaluated_at", UTC_US), ("n_points", pa.int64()), ("n_anomalous", pa.int64()),
        ("auroc", pa.float64()), ("pr_auc", pa.float64()), ("f1", pa.float64()), ("precision", pa.float64()),
        ("recall", pa.float64()), (names.THRESHOLD, pa.float64()), ("metrics", pa.string()),
    ]),
}

# The date column whose values a write replaces (one night, or a backfill's nights)
DATE_COLUMN = {
    names.QUARANTINE: names.DATE,
    names.ANOMALY_SCORES: names.SCORED_DATE,
    names.ANOMALY_INTERVALS: names.SCORED_DATE,
    names.DRIFT_METRICS: names.SCORED_DATE,
}
# Tables partitioned by that column: those with thousands of rows or more a night. The small ones (intervals,
# drift) are not: a partition a night would mean a file a night, and queries over a year would open
# hundreds of tiny files; a replace rewrites only the files holding the replaced rows either way.
PARTITIONED = {names.QUARANTINE, names.ANOMALY_SCORES}


def partition_columns(table: str) -> list[str]:
    return [DATE_COLUMN[table]] if table in PARTITIONED else []


class LakehouseError(RuntimeError):
    """A Delta table could not be written or read; the message says which and why."""


# Columns a writer may leave out (all null): anomaly_scores.operating_state of rows in normal operation.
OPTIONAL = {names.ANOMALY_SCORES: (names.OPERATING_STATE,)}


def with_optional_columns(table: str, data: pa.Table) -> pa.Table:
    """``data`` with the table's OPTIONAL columns it lacks added, all null."""
    for name in OPTIONAL.get(table, ()):
        if name not in data.column_names:
            data = data.append_column(name, pa.nulls(data.num_rows, SCHEMAS[table].field(name).type))
    return data


def conformed(table: str, data: pa.Table) -> pa.Table:
    """``data`` with exactly the table's columns, in its order and types; a missing column or a value that
    does not fit is refused naming the table and the column, before anything is written."""
    schema = SCHEMAS[table]
    data = with_optional_columns(table, data)
    missing = [name for name in schema.names if name not in data.column_names]
    if missing:
        raise LakehouseError(f"{table}: rows to write lack the column(s) {', '.join(missing)}")
    columns = []
    for field in schema:
        try:
            columns.append(data.column(field.name).cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise LakehouseError(f"{table}: column {field.name} does not fit {field.type}: {error}") from None
    return pa.table(columns, schema=schema)


def table_path(lake: Path, table: str) -> Path:
    return Path(lake) / table


def replace_partitions(lake: Path, table: str, data: pa.Table, partition_values: Sequence[str],
                       engine: str = "delta-rs", spark=None) -> None:
    """Atomically make ``table`` hold exactly ``data`` for the given partition values (dates).

    Rows of other partitions are untouched; re-running with the same data leaves the same rows. ``data``
    must only hold rows of those partitions.
    """
    replace_rows(lake, table, data, partition_values, "", (), engine, spark)


COMMIT_ATTEMPTS = 6


def _with_commit_retries(write, table: str) -> None:
    """Run ``write``, again after a commit conflict (another writer committed the version it wanted, e.g. two
    nights scored at once): delta-rs retries some conflicts itself; these are the ones it gives up on."""
    import random
    import time

    from deltalake.exceptions import CommitFailedError

    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            write()
            return
        except CommitFailedError as error:
            if attempt == COMMIT_ATTEMPTS:
                raise LakehouseError(f"{table}: commit failed {attempt} times on conflicts with other writers: "
                                     f"{str(error).splitlines()[0]}") from None
            time.sleep(random.uniform(0.05, 0.2) * attempt)


def upsert(lake: Path, table: str, data: pa.Table, key: str) -> None:
    """Insert the rows of ``data``, replacing rows with the same ``key`` value, in one commit (delta-rs
    MERGE); writing the same rows again changes nothing but the version."""
    from deltalake import DeltaTable, write_deltalake

    data = conformed(table, data)
    path = table_path(lake, table)
    _check_layout(path, table)

    def write() -> None:
        if not DeltaTable.is_deltatable(str(path)):
            path.mkdir(parents=True, exist_ok=True)
            write_deltalake(str(path), data, mode="append")
            return
        DeltaTable(str(path)).merge(data, predicate=f"target.{key} = source.{key}", source_alias="source",
                                    target_alias="target").when_matched_update_all() \
            .when_not_matched_insert_all().execute()

    _with_commit_retries(write, table)


def _write_with_spark(spark, path: Path, data, partition_by: list[str], predicate: str) -> None:
    """Replace the rows matching ``predicate`` with ``data`` (Arrow table or Spark DataFrame) through
    delta-spark (replaceWhere: one commit, written by the executors)."""
    if spark is None:
        raise LakehouseError("delta.engine is delta-spark but no Spark session was given to the writer")
    frame = spark.createDataFrame(data) if isinstance(data, pa.Table) else data
    try:
        (frame.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
         .partitionBy(*partition_by).save(str(path)))
    except Exception as error:  # py4j/pyspark raise several types for a missing data source
        if "DATA_SOURCE_NOT_FOUND" in str(error):
            raise LakehouseError(
                "delta.engine is delta-spark but the Delta Lake jars are not on the Spark classpath "
                "(Spark: DATA_SOURCE_NOT_FOUND delta). Add io.delta:delta-spark_2.13:4.x to spark.jars or "
                "spark.jars.packages on the cluster, or set delta.engine: delta-rs") from None
        raise


def write_scores_with_spark(spark, lake: Path, rows, partition_values: Sequence[str], constants: dict,
                            source_versions: dict[str, str]) -> None:
    """anomaly_scores through delta-spark: ``rows`` (a Spark DataFrame of asset_id, timestamp_us, score,
    label, flag, channel_shares, scored_date) plus the ``constants`` columns and each date's source version
    replace the dates' partitions in one commit written by the executors."""
    from pyspark.sql import functions as F

    schema = SCHEMAS[names.ANOMALY_SCORES]
    versions = F.create_map(*[F.lit(x) for pair in sorted(source_versions.items()) for x in pair])
    frame = rows.withColumn(names.TIMESTAMP, F.timestamp_micros("timestamp_us")) \
        .withColumn(names.SOURCE_VERSION, versions[F.col(names.SCORED_DATE)])
    for name, value in constants.items():
        frame = frame.withColumn(name, F.lit(value))
    column = DATE_COLUMN[names.ANOMALY_SCORES]
    _write_with_spark(spark, table_path(lake, names.ANOMALY_SCORES), frame.select(*schema.names),
                      partition_columns(names.ANOMALY_SCORES), f"{column} IN ({_sql_list(partition_values)})")


def read_table(lake: Path, table: str, version: Optional[int] = None) -> pa.Table:
    """The current (or a given version's) snapshot of a table as Arrow; an absent table reads empty."""
    from deltalake import DeltaTable

    path = table_path(lake, table)
    if not DeltaTable.is_deltatable(str(path)):
        return SCHEMAS[table].empty_table()
    return DeltaTable(str(path), version=version).to_pyarrow_table()


AsOf = Union[int, dt.datetime]


def datasets(lake: Path, as_of: Optional[dict[str, AsOf]] = None,
             tables: Optional[Sequence[str]] = None) -> dict[str, "pa.dataset.Dataset"]:
    """Arrow datasets of the existing lstmad tables (all, or those in ``tables``), for SQL engines to scan:
    the current snapshot, or for the tables in ``as_of`` the snapshot of that version (int) or at that time
    (aware datetime)."""
    from deltalake import DeltaTable

    as_of = as_of or {}
    for table in as_of:
        _check_table_name(table)
    found = {}
    for table in (names.DELTA_TABLES if tables is None else [t for t in names.DELTA_TABLES if t in tables]):
        if table in as_of:
            found[table] = snapshot_dataset(lake, table, as_of[table])
        elif DeltaTable.is_deltatable(str(table_path(lake, table))):
            found[table] = DeltaTable(str(table_path(lake, table))).to_pyarrow_dataset()
    return found


def _check_table_name(table: str) -> None:
    if table not in names.DELTA_TABLES:
        raise LakehouseError(f"no table {table!r}; tables: {', '.join(names.DELTA_TABLES)}")


def snapshot_dataset(lake: Path, table: str, as_of: AsOf) -> "pa.dataset.Dataset":
    """The Arrow dataset of ``table`` as of a version (int) or a time (aware datetime)."""
    from deltalake import DeltaTable

    _check_table_name(table)
    path = table_path(lake, table)
    if not DeltaTable.is_deltatable(str(path)):
        raise LakehouseError(f"{table}: no such table yet in {lake}, so no version {as_of}")
    delta = DeltaTable(str(path))
    current = delta.version()
    try:
        delta.load_as_version(as_of)
    except Exception as error:  # delta-rs raises its own errors for versions and times it lacks
        raise LakehouseError(f"{table}: cannot read as of {as_of} (versions 0..{current} exist): "
                             f"{str(error).splitlines()[0]}") from None
    return delta.to_pyarrow_dataset()


def existing_tables(lake: Path) -> list[tuple[str, Path]]:
    """(name, path) of the lstmad tables that exist in ``lake``, in names.DELTA_TABLES order."""
    from deltalake import DeltaTable

    return [(t, table_path(lake, t)) for t in names.DELTA_TABLES if DeltaTable.is_deltatable(str(table_path(lake, t)))]


def maintain(lake: Path, retention_hours: int) -> list[dict]:
    """Compact each table's small files (delta-rs optimize: a data-neutral commit per table, queries unchanged)
    and vacuum the files no version younger than ``retention_hours`` refers to (time travel further back
    than that stops working). Returns per table: versions and live files before and after, files removed."""
    from deltalake import DeltaTable

    report = []
    for table, path in existing_tables(lake):
        delta = DeltaTable(str(path))
        before = {"version": delta.version(), "files": len(delta.file_uris())}
        compacted: dict = {}
        _with_commit_retries(lambda: compacted.update(DeltaTable(str(path)).optimize.compact()), table)
        delta = DeltaTable(str(path))
        vacuumed = delta.vacuum(retention_hours=retention_hours, enforce_retention_duration=False, dry_run=False)
        report.append({"table": table, "version_before": before["version"], "version_after": delta.version(),
                       "files_before": before["files"], "files_after": len(delta.file_uris()),
                       "files_compacted": int(compacted.get("numFilesRemoved", 0)),
                       "files_vacuumed": len(vacuumed)})
    return report


def describe(lake: Path) -> list[dict]:
    """Per existing table: name, version, rows, data files and bytes, partition columns, columns
    [(name, Arrow type)], and the last commit's time and operation."""
    from deltalake import DeltaTable

    out = []
    for table, path in existing_tables(lake):
        delta = DeltaTable(str(path))
        files = pa.table(delta.get_add_actions(flatten=True))
        last = delta.history(1)[0]
        schema = pa.schema(delta.schema())
        out.append({"table": table, "version": delta.version(), "rows": int(pc.sum(files.column("num_records")).as_py() or 0),
                    "files": files.num_rows, "bytes": int(pc.sum(files.column("size_bytes")).as_py() or 0),
                    "partition_columns": list(delta.metadata().partition_columns),
                    "columns": [(f.name, str(f.type)) for f in schema],
                    "last_commit": dt.datetime.fromtimestamp(last["timestamp"] / 1000, dt.timezone.utc).isoformat(),
                    "last_operation": last.get("operation")})
    return out


def table_version(lake: Path, table: str) -> Optional[int]:
    from deltalake import DeltaTable

    path = table_path(lake, table)
    return DeltaTable(str(path)).version() if DeltaTable.is_deltatable(str(path)) else None


# --- Data files written by Spark tasks, committed by the driver in one transaction (delta-rs) ---

def write_data_file(lake: Path, table: str, data: pa.Table, partition_value: str) -> dict:
    """Write ``data`` (rows of one partition of ``table``) as a new Parquet data file inside the table's folder
    and return its add action (relative path, size, partition values, modification time, statistics JSON).

    Called on the executors; the file is not part of the table until commit_files commits it, so a task or a
    job that dies here leaves only an unreferenced file (vacuum removes it), never a partial table.
    """
    import json
    import os
    import time
    import uuid

    import pyarrow.parquet as pq

    schema = SCHEMAS[table]
    column = DATE_COLUMN[table]
    data_columns = [name for name in schema.names if name != column]  # Delta keeps partition values in the log
    data = with_optional_columns(table, data).select(data_columns)
    data = data.cast(pa.schema([schema.field(n) for n in data_columns]))
    relative = f"{column}={partition_value}/part-{uuid.uuid4().hex}.parquet"
    target = table_path(lake, table) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, target, compression="zstd")
    return {"path": relative, "size": os.path.getsize(target), "partition_values": {column: partition_value},
            "modification_time": int(time.time() * 1000), "num_records": data.num_rows,
            "stats": json.dumps(file_stats(data), allow_nan=False)}


def file_stats(data: pa.Table) -> dict:
    """Delta per-file statistics (numRecords, null counts, min/max of the flat columns): readers skip files by
    them (a time-range query opens only the files whose timestamps overlap).

    delta-rs reads a missing bound of a column that has values as null, and a filter on that column then
    skips the file; so bounds go in for every flat column with values, or (a float column holding NaN, which
    has no order, or ±inf, which JSON cannot hold) for none.
    """
    minimum, maximum, nulls = {}, {}, {}
    for field in data.schema:
        column = data.column(field.name)
        nulls[field.name] = column.null_count
        if pa.types.is_nested(field.type) or column.null_count == len(column):
            continue
        if pa.types.is_floating(field.type) and not pc.all(pc.is_finite(column.drop_null())).as_py():
            return {"numRecords": data.num_rows, "nullCount": nulls}  # NaN has no order; ±inf is not JSON
        low, high = pc.min_max(column).values()
        if pa.types.is_timestamp(field.type):
            # milliseconds as Delta writes them; the maximum rounded up so that it still bounds the data
            minimum[field.name] = _iso_ms(low.value // 1000)
            maximum[field.name] = _iso_ms(-(-high.value // 1000))
        else:
            minimum[field.name], maximum[field.name] = low.as_py(), high.as_py()
    return {"numRecords": data.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls}


def _iso_ms(ms: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def commit_files(lake: Path, table: str, files: Sequence[dict], partition_values: Sequence[str]) -> None:
    """One atomic commit: the partitions ``partition_values`` of ``table`` now hold exactly ``files`` (add
    actions from write_data_file; their rows must belong to those partitions). Creates the table on the
    first commit; retried on conflicts with concurrent writers (the files stay valid, only the commit is
    redone). Readers see the old partitions or the new ones, nothing in between."""
    from deltalake import DeltaTable, Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    if table not in PARTITIONED:
        raise LakehouseError(f"{table}: data files are committed by partition, and this table has none")
    column = DATE_COLUMN[table]
    stray = {f["partition_values"][column] for f in files} - set(partition_values)
    if stray:
        raise LakehouseError(f"{table}: files for {sorted(stray)[:3]} outside the partitions being replaced")
    path = table_path(lake, table)
    _check_layout(path, table)
    actions = [AddAction(f["path"], f["size"], f["partition_values"], f["modification_time"], True, f["stats"])
               for f in files]

    def commit() -> None:
        if not DeltaTable.is_deltatable(str(path)):
            try:
                create_table_with_add_actions(str(path), Schema.from_arrow(SCHEMAS[table]), actions, mode="error",
                                              partition_by=[column])
                return
            except Exception as error:  # another writer created it first: commit to that table instead
                if "already exists" not in str(error):
                    raise
        DeltaTable(str(path)).create_write_transaction(
            actions, mode="overwrite", schema=SCHEMAS[table], partition_by=[column],
            partition_filters=[(column, "in", sorted(set(partition_values)))])

    _with_commit_retries(commit, table)


def replace_rows(lake: Path, table: str, data: pa.Table, partition_values: Sequence[str], key: str,
                 moved_keys: Sequence[str], engine: str = "delta-rs", spark=None) -> None:
    """One atomic commit: the partitions ``partition_values`` hold exactly ``data``, and rows of other
    partitions whose ``key`` is in ``moved_keys`` are removed (rows that moved into these partitions, such as
    an interval continued from an earlier night into a later one)."""
    from deltalake import DeltaTable, write_deltalake

    column = DATE_COLUMN[table]
    data = conformed(table, data)
    moving = pc.is_in(data.column(key), pa.array(sorted(set(moved_keys)), pa.string())) if moved_keys else None
    outside = pc.invert(pc.is_in(data.column(column), pa.array(sorted(set(partition_values)), pa.string())))
    if moving is not None:
        outside = pc.and_(outside, pc.invert(moving))
    stray = set(data.filter(outside).column(column).to_pylist())
    if stray:
        raise LakehouseError(f"{table}: rows for {sorted(stray)[:3]} outside the dates being replaced")
    predicate = f"{column} IN ({_sql_list(partition_values)})"
    if moved_keys:
        predicate = f"({predicate}) OR {key} IN ({_sql_list(moved_keys)})"
    path = table_path(lake, table)
    _check_layout(path, table)
    if engine == "delta-spark":
        _write_with_spark(spark, path, data, partition_columns(table), predicate)
        return

    def write() -> None:
        if not DeltaTable.is_deltatable(str(path)):
            path.mkdir(parents=True, exist_ok=True)
            write_deltalake(str(path), data, mode="append", partition_by=partition_columns(table) or None)
            return
        write_deltalake(str(path), data, mode="overwrite", predicate=predicate,
                        partition_by=partition_columns(table) or None)

    _with_commit_retries(write, table)


def _check_layout(path: Path, table: str) -> None:
    """Refuse to write to an existing table whose columns or partitioning differ from what this lstmad
    writes (a table an older version created), naming what differs, before anything is written."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(path)):
        return
    delta = DeltaTable(str(path))
    found = [f.name for f in pa.schema(delta.schema())]
    partitions = list(delta.metadata().partition_columns)
    if found != SCHEMAS[table].names or partitions != partition_columns(table):
        raise LakehouseError(
            f"{table} at {path} has columns {found} partitioned by {partitions or 'nothing'}, but this lstmad "
            f"writes {SCHEMAS[table].names} partitioned by {partition_columns(table) or 'nothing'} (a table from "
            f"an older version): move the folder aside and re-score the dates it held")


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in sorted(set(values)))


def scan(lake: Path, table: str, columns: Sequence[str], filter_expression=None) -> pa.Table:
    """Columns of the current snapshot's rows matching a pyarrow ``filter_expression`` (partition values and
    file statistics prune what is read); an absent table reads empty."""
    return next(scan_each(lake, table, columns, [filter_expression]))


def scan_each(lake: Path, table: str, columns: Sequence[str], filter_expressions: Sequence) -> Iterator[pa.Table]:
    """scan() for each of ``filter_expressions`` in turn (one date's rows at a time, say), the table's log read
    once: one table per expression, each read when the one before has been taken."""
    from deltalake import DeltaTable

    path = table_path(lake, table)
    if not DeltaTable.is_deltatable(str(path)):
        for _ in filter_expressions:
            yield SCHEMAS[table].empty_table().select(list(columns))
        return
    dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    for expression in filter_expressions:
        yield dataset.to_table(columns=list(columns), filter=expression)
