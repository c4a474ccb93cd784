"""Reading a raw source (CSV, Parquet or Delta; wide) into a DataFrame of its raw columns.

Partitioned landing folders are read by naming the partitions (pruning, no listing of other dates);
an unpartitioned Parquet source is filtered on its timestamp column so row groups outside the range are
skipped by their statistics.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmad.config import SourceConfig


class SourceReadError(ValueError):
    """The source cannot be read; names the location."""


def read_source(spark: SparkSession, source: SourceConfig, location: Path, files: list[Path],
                partitions: list[str], read_from: dt.datetime, read_to: dt.datetime, delta_engine: str) -> DataFrame:
    """Raw rows of the source (all columns as stored; CSV columns as strings).

    ``files``: the CSV/Parquet files to read (from lstmad.io.source_schema.source_files); ``partitions``: the
    dates to read from a partitioned Delta table. [read_from, read_to) bounds the timestamps wanted from an
    unpartitioned source; rows whose timestamp is not a timestamp type are all read (filtered after parsing).
    """
    if source.format == "delta":
        frame = _read_delta(spark, source, location, partitions, delta_engine)
    elif source.format == "csv":
        reader = (spark.read.option("header", True).option("sep", source.csv_delimiter)
                  .option("mode", "PERMISSIVE").option("enforceSchema", False)
                  .option("encoding", source.csv_charset or "utf-8"))
        if source.partition_column:
            reader = reader.option("basePath", str(location))
        frame = reader.csv([str(f) for f in files])
        # a UTF-8 byte-order mark (spreadsheet exports) is not part of the first column's name
        frame = frame.toDF(*[c.lstrip("\ufeff") for c in frame.columns])
        if source.partition_column:
            frame = _with_partition(frame, source.partition_column)
    else:
        reader = spark.read
        if source.partition_column:
            reader = reader.option("basePath", str(location))
        frame = reader.parquet(*[str(f) for f in files])
        if source.partition_column:
            frame = _with_partition(frame, source.partition_column)
    if not source.partition_column:
        kind = frame.schema[source.timestamp_column].dataType
        if isinstance(kind, T.TimestampType):
            ts = F.col("`" + source.timestamp_column.replace("`", "``") + "`")
            # Pushed down to Parquet: row groups entirely outside the range are not read. Null timestamps
            # stay (they are quarantined as undated rows).
            frame = frame.where(ts.isNull() | ((ts >= F.lit(read_from)) & (ts < F.lit(read_to))))
    return frame


def _with_partition(frame: DataFrame, column: str) -> DataFrame:
    """Partition discovery may type ``date=2026-01-01`` as a date; the pipeline keeps dates as strings."""
    return frame.withColumn(column, F.date_format(F.col(column).cast("date"), "yyyy-MM-dd"))


def _read_delta(spark: SparkSession, source: SourceConfig, location: Path, partitions: list[str],
                engine: str) -> DataFrame:
    if engine == "delta-spark":
        try:
            frame = spark.read.format("delta").load(str(location))
        except Exception as error:  # py4j raises several types for a missing data source
            if "DATA_SOURCE_NOT_FOUND" in str(error):
                raise SourceReadError(f"{location}: delta.engine is delta-spark but the Delta Lake jars are not on "
                                      "the Spark classpath; set delta.engine: delta-rs") from None
            raise
        if source.partition_column:
            frame = frame.where(F.col(source.partition_column).cast("string").isin(partitions))
        return frame
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    dataset = DeltaTable(str(location)).to_pyarrow_dataset()
    condition = None
    if source.partition_column:
        condition = ds.field(source.partition_column).cast("string").isin(partitions)
    # delta-rs reads on the driver (no Delta jars on the executors): fine for nightly partitions; use
    # delta.engine: delta-spark on a cluster for large backfills.
    table = dataset.to_table(filter=condition)
    return spark.createDataFrame(table)
