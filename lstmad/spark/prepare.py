"""Prepare as pure DataFrame → DataFrame transforms: canonicalise, classify faults, dedupe, then per asset
(one Arrow batch per asset, NumPy inside) regular grid → gap fill → smoothing → normalisation → tensor blocks.

Row- and value-level checks are Spark column expressions (no shuffle); duplicates are found with one window
over (asset, timestamp) on data already partitioned by asset, so the per-asset step reuses that partitioning.
Nothing here uses one Spark row window per channel or a global ``orderBy``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmad import names
from lstmad.config import ChannelConfig, SourceConfig
from lstmad.series import NormalisationStats, centered_moving_average, observed_moments, regular_grid
from lstmad.tensors import BLOCK_SCHEMA, build_blocks

TS_US = "timestamp_us"
OWN = "_own"  # the row lies in the dates being prepared (not history)
SOURCE = "_source"  # the raw row as read, for the quarantine
UNDATED = "undated"  # quarantine date of rows without a usable timestamp in an unpartitioned source

# Row-level reasons: the row is set aside (quarantined). First failing rule wins.
REASON_NULL_TIMESTAMP = "null_or_unparseable_timestamp"
REASON_NULL_ASSET = "null_asset"
REASON_OUTSIDE_PARTITION = "timestamp_outside_partition"
REASON_NO_USABLE_VALUE = "no_usable_value"
REASON_CONFLICTING_DUPLICATE = "conflicting_duplicate"
# Value-level faults: only the value is masked, the row is kept.
FAULT_MISSING = "missing_value"
FAULT_NON_NUMERIC = "non_numeric_value"
FAULT_NON_FINITE = "non_finite_value"
FAULT_SENTINEL = "sentinel_value"
FAULT_OUT_OF_RANGE = "out_of_range_value"
RECORDED_FAULTS = (FAULT_NON_NUMERIC, FAULT_NON_FINITE, FAULT_SENTINEL, FAULT_OUT_OF_RANGE)
DUPLICATE = "_duplicate"  # "exact" (an extra copy: dropped and counted) or null


def _fault_column(channel: str) -> str:
    return f"_fault_{channel}"


def parsed_timestamp(raw: DataFrame, source: SourceConfig) -> Column:
    """The timestamp column as an absolute instant (TIMESTAMP), null where it cannot be parsed.

    String timestamps with an offset (``Z``, ``+01:00``) keep it; those without, like naive (NTZ) timestamps,
    are read in ``source.timezone``.
    """
    column = F.col(source.timestamp_column)
    kind = raw.schema[source.timestamp_column].dataType
    naive_to_utc = (lambda c: c) if source.timezone == "UTC" else (lambda c: F.to_utc_timestamp(c, source.timezone))
    if isinstance(kind, T.TimestampType):
        return column
    if isinstance(kind, T.LongType):  # a Parquet TIMESTAMP(NANOS), read as nanoseconds since the epoch
        return F.timestamp_micros(F.floor(column / 1000).cast("long"))
    if isinstance(kind, T.TimestampNTZType):
        return naive_to_utc(column.cast("timestamp"))
    if isinstance(kind, T.DateType):
        return naive_to_utc(column.cast("timestamp"))
    text = F.trim(column.cast("string"))
    if source.timestamp_format:
        parsed = F.try_to_timestamp(text, F.lit(source.timestamp_format))
    else:
        # ISO-8601 with a space or a T; Spark honours an offset when there is one.
        parsed = text.try_cast("timestamp")
    has_offset = text.rlike(r"(Z|[+-]\d{2}:?\d{2})$")
    return F.when(has_offset, parsed).otherwise(naive_to_utc(parsed))


def channel_value_and_fault(raw_value: Column, channel: ChannelConfig, sentinel_tolerance: float
                            ) -> tuple[Column, Column]:
    """(value as double with faults as null, fault code or null) for one channel's raw column."""
    value = raw_value.try_cast("double")
    fault = (F.when(raw_value.isNull(), FAULT_MISSING)
             .when(value.isNull(), FAULT_NON_NUMERIC)
             .when(F.isnan(value) | (F.abs(value) == F.lit(float("inf"))), FAULT_NON_FINITE))
    for sentinel in channel.sentinels:
        tolerance = sentinel_tolerance * max(1.0, abs(sentinel))
        fault = fault.when(F.abs(value - F.lit(float(sentinel))) <= F.lit(tolerance), FAULT_SENTINEL)
    if channel.minimum is not None:
        fault = fault.when(value < F.lit(float(channel.minimum)), FAULT_OUT_OF_RANGE)
    if channel.maximum is not None:
        fault = fault.when(value > F.lit(float(channel.maximum)), FAULT_OUT_OF_RANGE)
    return F.when(fault.isNull(), value), fault


def canonical_rows(raw: DataFrame, source: SourceConfig, partition_column: str | None) -> DataFrame:
    """Raw source rows → asset_id, timestamp_us, one double per channel (null where masked), one fault column
    per channel, label, date (the partition's date, else the timestamp's UTC date, else ``undated``),
    reason (row-level, null when usable) and ``_source`` (the raw row, kept for the quarantine).

    Nothing here raises on bad data: unparseable values become faults, never errors.
    """
    ts_us = F.unix_micros(parsed_timestamp(raw, source))
    asset = (F.lit(source.asset_constant) if source.asset_constant
             else F.nullif(F.trim(F.col(source.asset_column).cast("string")), F.lit("")))
    utc_date = F.date_format(F.timestamp_micros(ts_us), "yyyy-MM-dd")
    columns = [asset.alias(names.ASSET), ts_us.alias(TS_US)]
    for channel in source.channels:
        value, fault = channel_value_and_fault(F.col(channel.name), channel, source.sentinel_tolerance)
        columns += [value.alias(channel.name), fault.alias(_fault_column(channel.name))]
    label = F.col(source.label_column).try_cast("int") if source.label_column else F.lit(None).cast("int")
    if partition_column:
        row_date = F.col(partition_column).cast("string")
    else:
        row_date = F.coalesce(utc_date, F.lit(UNDATED))
    source_struct = F.struct(*[F.col(c) for c in raw.columns if c != partition_column])
    columns += [label.alias(names.LABEL), row_date.alias(names.DATE), source_struct.alias(SOURCE)]
    rows = raw.select(*columns)

    no_value = F.lit(True)
    for channel in source.channel_names:
        no_value = no_value & F.col(channel).isNull()
    reason = F.when(F.col(TS_US).isNull(), REASON_NULL_TIMESTAMP).when(F.col(names.ASSET).isNull(), REASON_NULL_ASSET)
    if partition_column:
        reason = reason.when(utc_date_of(F.col(TS_US)) != F.col(names.DATE), REASON_OUTSIDE_PARTITION)
    reason = reason.when(no_value, REASON_NO_USABLE_VALUE)
    return rows.withColumn(names.REASON, reason)


def utc_date_of(ts_us: Column) -> Column:
    return F.date_format(F.timestamp_micros(ts_us), "yyyy-MM-dd")


def classify_duplicates(rows: DataFrame, source: SourceConfig, partitions: int) -> DataFrame:
    """Partition by asset and mark duplicates among the usable rows of each (asset, timestamp).

    Copies identical in every value, fault and label are exact duplicates: the first is kept and the others
    get ``_duplicate = 'exact'`` (dropped, counted). Copies that disagree are all quarantined as
    ``conflicting_duplicate``: there is no telling which one is right.
    """
    content = F.xxhash64(*[F.col(c) for c in source.channel_names],
                         *[F.col(_fault_column(c)) for c in source.channel_names], F.col(names.LABEL))
    group = Window.partitionBy(names.ASSET, TS_US)
    ordered = group.orderBy(F.col(SOURCE).cast("string"))
    usable = F.col(names.REASON).isNull()
    # One window over usable rows only: rows already set aside never make a good row a duplicate.
    keyed = rows.repartition(partitions, names.ASSET).withColumn("_hash", F.when(usable, content))
    conflict = F.min("_hash").over(group) != F.max("_hash").over(group)
    rank = F.row_number().over(ordered)
    marked = (keyed.withColumn("_conflict", usable & conflict)
              .withColumn("_rank", F.when(usable, rank)))
    return (marked
            .withColumn(names.REASON, F.when(F.col("_conflict"), REASON_CONFLICTING_DUPLICATE)
                        .otherwise(F.col(names.REASON)))
            .withColumn(DUPLICATE, F.when(usable & ~F.col("_conflict") & (F.col("_rank") > 1), "exact"))
            .drop("_hash", "_conflict", "_rank"))


def quarantine_rows(classified: DataFrame, source: SourceConfig, run_id: str, pipeline: str) -> DataFrame:
    """The quarantine records of the own rows: one per row set aside (``channel`` null) and one per recorded
    value-level fault of a kept row (``channel`` names the column; the value was masked)."""
    own = classified.where(F.col(OWN) & F.col(DUPLICATE).isNull())
    common = [F.lit(pipeline).alias("pipeline"), F.col(names.DATE), F.col(names.ASSET),
              F.timestamp_micros(F.col(TS_US)).alias(names.TIMESTAMP)]
    rows = own.where(F.col(names.REASON).isNotNull()).select(
        *common, F.col(names.REASON), F.lit(None).cast("string").alias("channel"),
        F.to_json(F.col(SOURCE)).alias("source_row"), F.lit(run_id).alias("run_id"))
    faults = F.array(*[F.struct(F.lit(c).alias("channel"), F.col(_fault_column(c)).alias("fault"))
                       for c in source.channel_names])
    values = (own.where(F.col(names.REASON).isNull())
              .select(*common, F.explode(faults).alias("_f"), F.col(SOURCE))
              .where(F.col("_f.fault").isin(*RECORDED_FAULTS))
              .select("pipeline", names.DATE, names.ASSET, names.TIMESTAMP, F.col("_f.fault").alias(names.REASON),
                      F.col("_f.channel").alias("channel"), F.to_json(F.col(SOURCE)).alias("source_row"),
                      F.lit(run_id).alias("run_id")))
    return rows.unionByName(values)


def accounting(classified: DataFrame, channels: tuple[str, ...]) -> dict:
    """Counts of the own rows: read, kept, quarantined by reason, exact duplicates dropped, masked values by
    fault, dates with kept rows. One pass over the (cached) classified rows."""
    own = classified.where(F.col(OWN))
    fault_counts = [F.sum(F.when(F.col(_fault_column(c)) == fault, 1).otherwise(0)).alias(f"{c}|{fault}")
                    for c in channels for fault in (FAULT_MISSING, *RECORDED_FAULTS)]
    kept = F.col(names.REASON).isNull() & F.col(DUPLICATE).isNull()
    per_group = (own.groupBy(names.DATE, names.REASON, DUPLICATE)
                 .agg(F.count(F.lit(1)).alias("rows"), *fault_counts).collect())
    rows_kept = rows_quarantined = exact = 0
    by_reason: dict[str, int] = {}
    masked: dict[str, int] = {}
    masked_by_channel: dict[str, int] = {}
    dates_kept: set[str] = set()
    for row in per_group:
        if row[names.REASON] is not None:
            rows_quarantined += row["rows"]
            by_reason[row[names.REASON]] = by_reason.get(row[names.REASON], 0) + row["rows"]
            continue
        if row[DUPLICATE] is not None:
            exact += row["rows"]
            continue
        rows_kept += row["rows"]
        dates_kept.add(row[names.DATE])
        for c in channels:
            for fault in (FAULT_MISSING, *RECORDED_FAULTS):
                count = row[f"{c}|{fault}"] or 0
                if count:
                    masked[fault] = masked.get(fault, 0) + count
                    masked_by_channel[c] = masked_by_channel.get(c, 0) + count
    return {"rows_read": rows_kept + rows_quarantined + exact, "rows_kept": rows_kept,
            "rows_quarantined": rows_quarantined, "exact_duplicates_dropped": exact,
            "quarantined_by_reason": dict(sorted(by_reason.items())),
            "values_masked_by_reason": dict(sorted(masked.items())),
            "values_masked_by_channel": dict(sorted(masked_by_channel.items())), "dates_with_rows": dates_kept}


def kept_rows(classified: DataFrame, channels: tuple[str, ...]) -> DataFrame:
    """Usable rows (own and history) for the per-asset step: asset_id, timestamp_us, channels, label, _own."""
    return (classified.where(F.col(names.REASON).isNull() & F.col(DUPLICATE).isNull())
            .select(names.ASSET, TS_US, *channels, names.LABEL, OWN))


def _asset_arrays(table: pa.Table, channels: list[str]) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    asset = str(table.column(names.ASSET)[0].as_py())
    ts = table.column(TS_US).to_numpy()
    values = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in channels]).astype(np.float64)
    labels = table.column(names.LABEL).fill_null(-1).to_numpy().astype(np.int8)
    return asset, ts, values, labels


def _smoothed_grid(table: pa.Table, channels: list[str], step_s: int, max_gap_steps: int, half_width: int):
    asset, ts, values, labels = _asset_arrays(table, channels)
    grid = regular_grid(ts, values, labels, step_s, max_gap_steps)
    grid.values = centered_moving_average(grid.values, half_width, grid.segments)
    return asset, grid


MOMENT_FIELDS = ("count", "total", "total_sq", "minimum", "maximum")


def asset_moments(kept: DataFrame, channels: tuple[str, ...], step_s: int, max_gap_steps: int, half_width: int,
                  own_from_us: int, own_to_us: int) -> DataFrame:
    """Per asset: moments (observed_moments) of the smoothed own rows in [own_from_us, own_to_us), as one row
    with an array column per moment (C,), for fitting normalisation."""
    channel_list = list(channels)

    def moments(table: pa.Table) -> pa.Table:
        asset, grid = _smoothed_grid(table, channel_list, step_s, max_gap_steps, half_width)
        own = (grid.timestamps_us >= own_from_us) & (grid.timestamps_us < own_to_us)
        result = observed_moments(grid.values[own], grid.observed[own])
        return pa.table({names.ASSET: [asset], **{k: [result[k].tolist()] for k in MOMENT_FIELDS}})

    schema = T.StructType([T.StructField(names.ASSET, T.StringType()),
                           *[T.StructField(k, T.ArrayType(T.DoubleType())) for k in MOMENT_FIELDS]])
    return kept.groupBy(names.ASSET).applyInArrow(moments, schema)


BLOCK_SPARK_SCHEMA = T.StructType([
    T.StructField(names.ASSET, T.StringType()), T.StructField(names.SEGMENT, T.LongType()),
    T.StructField(names.BLOCK_START, T.LongType()), T.StructField(names.STEP_S, T.IntegerType()),
    T.StructField(names.N_ROWS, T.IntegerType()), T.StructField(names.N_HISTORY, T.IntegerType()),
    T.StructField(names.N_CHANNELS, T.IntegerType()), T.StructField(names.VALUES, T.BinaryType()),
    T.StructField(names.MASK, T.BinaryType()), T.StructField(names.LABELS, T.BinaryType()),
    T.StructField(names.STATS_ID, T.StringType()), T.StructField(names.DATE, T.StringType()),
])


def tensor_blocks(kept: DataFrame, channels: tuple[str, ...], stats: NormalisationStats, window: int,
                  block_rows: int, step_s: int, max_gap_steps: int, half_width: int, own_from_us: int,
                  own_to_us: int, has_labels: bool) -> DataFrame:
    """Normalised tensor blocks (lstmad.tensors.BLOCK_SCHEMA) of the grid rows in [own_from_us, own_to_us);
    earlier rows of the same segment serve as history. One Arrow batch per asset, NumPy inside."""
    channel_list = list(channels)
    stats_id = stats.stats_id

    def to_blocks(table: pa.Table) -> pa.Table:
        asset, grid = _smoothed_grid(table, channel_list, step_s, max_gap_steps, half_width)
        values = stats.apply(grid.values, asset)
        values[~np.isfinite(values)] = 0.0  # a channel never observed in its segment: the mean, masked
        blocks = build_blocks(asset, grid.timestamps_us, values, grid.segments, grid.labels if has_labels else None,
                              window, block_rows, step_s, stats_id, own_from_us, own_to_us, observed=grid.observed)
        return pa.Table.from_pylist(blocks, schema=BLOCK_SCHEMA)

    return kept.groupBy(names.ASSET).applyInArrow(to_blocks, BLOCK_SPARK_SCHEMA)
