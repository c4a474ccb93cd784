"""The one module that talks to Delta: table schemas, partition-replacing writes and snapshot reads.

delta-rs (``deltalake``) is the embedded default; ``delta.engine: delta-spark`` writes through Spark with
the Delta Lake jars, which must be on the classpath (a cluster setting).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc

from lstmad import names

UTC_US = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    names.QUARANTINE: pa.schema([
        ("pipeline", pa.string()), (names.DATE, pa.string()), (names.ASSET, pa.string()),
        (names.TIMESTAMP, UTC_US), (names.REASON, pa.string()), ("channel", pa.string()),
        ("source_row", pa.string()), ("run_id", pa.string()),
    ]),
    names.ANOMALY_SCORES: pa.schema([
        (names.ASSET, pa.string()), (names.TIMESTAMP, UTC_US), (names.SCORE, pa.float64()),
        (names.THRESHOLD, pa.float64()), (names.FLAG, pa.bool_()), (names.LABEL, pa.int8()),
        ("model_name", pa.string()), (names.MODEL_VERSION, pa.string()), ("mlflow_run_id", pa.string()),
        (names.SCORED_DATE, pa.string()),
    ]),
    names.ANOMALY_INTERVALS: pa.schema([
        ("interval_id", pa.string()), (names.ASSET, pa.string()), ("start", UTC_US), ("end", UTC_US),
        ("duration_s", pa.int64()), ("n_points", pa.int64()), ("peak_score", pa.float64()),
        ("mean_score", pa.float64()), ("severity", pa.float64()), (names.THRESHOLD, pa.float64()),
        ("model_name", pa.string()), (names.MODEL_VERSION, pa.string()), ("mlflow_run_id", pa.string()),
        (names.SCORED_DATE, pa.string()),
    ]),
    names.DRIFT_METRICS: pa.schema([
        (names.SCORED_DATE, pa.string()), (names.MODEL_VERSION, pa.string()), ("n_rows", pa.int64()),
        ("max_psi", pa.float64()), ("max_psi_channel", pa.string()), ("psi_by_channel", pa.string()),
        ("alarm_rate", pa.float64()), ("expected_alarm_rate", pa.float64()), ("retrain", pa.bool_()),
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

PARTITION_COLUMN = {
    names.QUARANTINE: names.DATE,
    names.ANOMALY_SCORES: names.SCORED_DATE,
    names.ANOMALY_INTERVALS: names.SCORED_DATE,
    names.DRIFT_METRICS: names.SCORED_DATE,
}


class LakehouseError(RuntimeError):
    """A Delta table could not be written or read; the message says which and why."""


def table_path(lake: Path, table: str) -> Path:
    return Path(lake) / table


def replace_partitions(lake: Path, table: str, data: pa.Table, partition_values: Sequence[str],
                       engine: str = "delta-rs", spark=None) -> None:
    """Atomically make ``table`` hold exactly ``data`` for the given partition values (dates).

    Rows of other partitions are untouched; re-running with the same data leaves the same rows. ``data``
    must only hold rows of those partitions.
    """
    schema = SCHEMAS[table]
    column = PARTITION_COLUMN[table]
    data = data.select(schema.names).cast(schema)
    stray = set(data.column(column).to_pylist()) - set(partition_values)
    if stray:
        raise LakehouseError(f"{table}: rows for {sorted(stray)[:3]} outside the partitions being replaced")
    quoted = ", ".join(f"'{value}'" for value in sorted(partition_values))
    predicate = f"{column} IN ({quoted})"
    path = table_path(lake, table)
    if engine == "delta-spark":
        _write_with_spark(spark, path, data, column, predicate)
        return
    _with_commit_retries(lambda: _replace_with_delta_rs(path, data, column, predicate), table)


def _replace_with_delta_rs(path: Path, data: pa.Table, column: str, predicate: str) -> None:
    from deltalake import DeltaTable, write_deltalake

    if not DeltaTable.is_deltatable(str(path)):
        path.mkdir(parents=True, exist_ok=True)
        # a writer that created the table first turns this into a conflict (retried as an overwrite of these
        # dates) or an append of these dates only: other dates are untouched either way
        write_deltalake(str(path), data, mode="append", partition_by=[column])
        return
    write_deltalake(str(path), data, mode="overwrite", predicate=predicate, partition_by=[column])


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

    schema = SCHEMAS[table]
    data = data.select(schema.names).cast(schema)
    path = table_path(lake, table)

    def write() -> None:
        if not DeltaTable.is_deltatable(str(path)):
            path.mkdir(parents=True, exist_ok=True)
            write_deltalake(str(path), data, mode="append")
            return
        DeltaTable(str(path)).merge(data, predicate=f"target.{key} = source.{key}", source_alias="source",
                                    target_alias="target").when_matched_update_all() \
            .when_not_matched_insert_all().execute()

    _with_commit_retries(write, table)


def _write_with_spark(spark, path: Path, data: pa.Table, column: str, predicate: str) -> None:
    if spark is None:
        raise LakehouseError("delta.engine is delta-spark but no Spark session was given to the writer")
    frame = spark.createDataFrame(data)
    try:
        (frame.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
         .partitionBy(column).save(str(path)))
    except Exception as error:  # py4j/pyspark raise several types for a missing data source
        if "DATA_SOURCE_NOT_FOUND" in str(error):
            raise LakehouseError(
                "delta.engine is delta-spark but the Delta Lake jars are not on the Spark classpath "
                "(Spark: DATA_SOURCE_NOT_FOUND delta). Add io.delta:delta-spark_2.13:4.x to spark.jars or "
                "spark.jars.packages on the cluster, or set delta.engine: delta-rs") from None
        raise


def read_table(lake: Path, table: str, version: Optional[int] = None) -> pa.Table:
    """The current (or a given version's) snapshot of a table as Arrow; an absent table reads empty."""
    from deltalake import DeltaTable

    path = table_path(lake, table)
    if not DeltaTable.is_deltatable(str(path)):
        return SCHEMAS[table].empty_table()
    return DeltaTable(str(path), version=version).to_pyarrow_table()


AsOf = Union[int, dt.datetime]


def datasets(lake: Path, as_of: Optional[dict[str, AsOf]] = None) -> dict[str, "pa.dataset.Dataset"]:
    """Arrow datasets of every existing lstmad table, for SQL engines to scan: the current snapshot, or for
    the tables in ``as_of`` the snapshot of that version (int) or at that time (aware datetime)."""
    from deltalake import DeltaTable

    as_of = as_of or {}
    unknown = sorted(set(as_of) - set(names.DELTA_TABLES))
    if unknown:
        raise LakehouseError(f"no table {unknown[0]!r}; tables: {', '.join(names.DELTA_TABLES)}")
    found = {}
    for table in names.DELTA_TABLES:
        path = table_path(lake, table)
        if not DeltaTable.is_deltatable(str(path)):
            if table in as_of:
                raise LakehouseError(f"{table}: no such table yet in {lake}, so no version {as_of[table]}")
            continue
        delta = DeltaTable(str(path))
        if table in as_of:
            current = delta.version()
            try:
                delta.load_as_version(as_of[table])
            except Exception as error:  # delta-rs raises its own errors for versions and times it lacks
                raise LakehouseError(f"{table}: cannot read as of {as_of[table]} (versions 0..{current} exist): "
                                     f"{str(error).splitlines()[0]}") from None
        found[table] = delta.to_pyarrow_dataset()
    return found


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
