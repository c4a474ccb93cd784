"""Prepare as pure DataFrame → DataFrame transforms: validate, quarantine, dedupe, smooth, normalise, block.

Series transforms run per asset (``groupBy(asset).applyInPandas``) with the vectorised NumPy functions of
lstmad.series, never as one Spark row window per channel and never with a global ``orderBy``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmad import names
from lstmad.series import NormalisationStats, centered_moving_average, segment_ids
from lstmad.tensors import BLOCK_SCHEMA, build_blocks

TS_US = "timestamp_us"

REASON_NULL_TIMESTAMP = "null_or_unparseable_timestamp"
REASON_NULL_ASSET = "null_asset"
REASON_OUTSIDE_PARTITION = "timestamp_outside_partition"
REASON_NON_FINITE = "non_finite_value"
REASON_DUPLICATE = "duplicate_timestamp"


def canonical_rows(raw: DataFrame, timestamp_column: str, asset_column: str, channels: tuple[str, ...],
                   label_column: str | None, partition_column: str) -> DataFrame:
    """Raw landing rows → canonical columns: asset_id, timestamp_us, the channels as doubles, label, date,
    source_row (the original row as JSON, for the quarantine). Unparseable values become nulls, never errors."""
    columns = [
        F.col(asset_column).cast("string").alias(names.ASSET),
        F.unix_micros(F.col(timestamp_column).try_cast("timestamp")).alias(TS_US),
        *[F.col(c).try_cast("double").alias(c) for c in channels],
        (F.col(label_column).try_cast("int") if label_column else F.lit(None).cast("int")).alias(names.LABEL),
        F.col(partition_column).cast("string").alias(names.DATE),
        F.to_json(F.struct(*[F.col(c) for c in raw.columns if c != partition_column])).alias("source_row"),
    ]
    return raw.select(*columns)


def with_reasons(rows: DataFrame, channels: tuple[str, ...]) -> DataFrame:
    """Adds ``reason``: why a canonical row cannot be used (null when it can). The first failing rule wins;
    of rows sharing (asset, timestamp) the first in a deterministic order is kept, the others are duplicates."""
    non_finite = F.lit(False)
    for c in channels:
        non_finite = non_finite | F.col(c).isNull() | F.isnan(F.col(c)) | \
            (F.abs(F.col(c)) == F.lit(float("inf")))
    row_date = F.date_format(F.timestamp_micros(F.col(TS_US)), "yyyy-MM-dd")
    duplicate_rank = F.row_number().over(
        Window.partitionBy(names.ASSET, TS_US).orderBy(*[F.col(c).asc_nulls_last() for c in channels],
                                                       F.col("source_row")))
    base = (F.when(F.col(TS_US).isNull(), REASON_NULL_TIMESTAMP)
            .when(F.col(names.ASSET).isNull(), REASON_NULL_ASSET)
            .when(row_date != F.col(names.DATE), REASON_OUTSIDE_PARTITION)
            .when(non_finite, REASON_NON_FINITE))
    first_pass = rows.withColumn(names.REASON, base)
    valid = first_pass.where(F.col(names.REASON).isNull()).withColumn("_rank", duplicate_rank)
    valid = valid.withColumn(names.REASON, F.when(F.col("_rank") > 1, REASON_DUPLICATE)).drop("_rank")
    return first_pass.where(F.col(names.REASON).isNotNull()).unionByName(valid)


def quarantine_rows(rows_with_reasons: DataFrame, run_id: str, pipeline: str) -> DataFrame:
    """The rows that cannot be used, with their reason and the run that set them aside."""
    return (rows_with_reasons.where(F.col(names.REASON).isNotNull())
            .select(F.lit(pipeline).alias("pipeline"), F.col(names.DATE), F.col(names.ASSET),
                    F.timestamp_micros(F.col(TS_US)).alias(names.TIMESTAMP), F.col(names.REASON),
                    F.col("source_row"), F.lit(run_id).alias("run_id")))


def smoothed_series(kept: DataFrame, channels: tuple[str, ...], half_width: int, step_s: int) -> DataFrame:
    """Centered moving average (±half_width rows) of every channel, per asset and gap-free segment.

    Output: asset_id, timestamp_us, segment (per-asset segment number), the channels, label, date.
    """
    channel_list = list(channels)

    def smooth(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(TS_US, kind="stable")
        ts = pdf[TS_US].to_numpy(dtype=np.int64)
        segments = segment_ids(ts, step_s)
        smoothed = centered_moving_average(pdf[channel_list].to_numpy(dtype=np.float64), half_width, segments)
        out = pd.DataFrame(smoothed, columns=channel_list, index=pdf.index)
        out.insert(0, "segment", segments)
        out.insert(0, TS_US, ts)
        out.insert(0, names.ASSET, pdf[names.ASSET].to_numpy())
        out[names.LABEL] = pdf[names.LABEL].to_numpy()
        out[names.DATE] = pdf[names.DATE].to_numpy()
        return out

    schema = T.StructType([
        T.StructField(names.ASSET, T.StringType()), T.StructField(TS_US, T.LongType()),
        T.StructField("segment", T.LongType()),
        *[T.StructField(c, T.DoubleType()) for c in channels],
        T.StructField(names.LABEL, T.IntegerType()), T.StructField(names.DATE, T.StringType()),
    ])
    columns = [names.ASSET, TS_US, *channels, names.LABEL, names.DATE]
    return kept.select(*columns).groupBy(names.ASSET).applyInPandas(smooth, schema)


def channel_moments(smoothed: DataFrame, channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-channel count, sum, sum of squares, min and max (each (C,)) for fitting normalisation."""
    aggregates = []
    for c in channels:
        aggregates += [F.count(c), F.sum(c), F.sum(F.col(c) * F.col(c)), F.min(c), F.max(c)]
    row = smoothed.agg(*aggregates).first()
    values = np.array(list(row), dtype=np.float64).reshape(len(channels), 5)
    return {"count": values[:, 0], "total": values[:, 1], "total_sq": values[:, 2],
            "minimum": values[:, 3], "maximum": values[:, 4]}


def tensor_blocks(smoothed: DataFrame, channels: tuple[str, ...], stats: NormalisationStats, window: int,
                  block_rows: int, step_s: int, own_from_us: int, own_to_us: int, has_labels: bool) -> DataFrame:
    """Normalised tensor blocks (lstmad.tensors.BLOCK_SCHEMA) of the rows in [own_from_us, own_to_us),
    with earlier rows of the same segment as history."""
    channel_list = list(channels)
    stats_id = stats.stats_id
    block_columns = [f.name for f in BLOCK_SCHEMA]

    def to_blocks(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values(TS_US, kind="stable")
        values = stats.apply(pdf[channel_list].to_numpy(dtype=np.float64))
        labels = pdf[names.LABEL].fillna(-1).to_numpy(dtype=np.int8) if has_labels else None
        blocks = build_blocks(str(pdf[names.ASSET].iloc[0]), pdf[TS_US].to_numpy(dtype=np.int64), values,
                              pdf["segment"].to_numpy(dtype=np.int64), labels, window, block_rows, step_s,
                              stats_id, own_from_us, own_to_us)
        return pd.DataFrame(blocks, columns=block_columns)

    schema = T.StructType([
        T.StructField(names.ASSET, T.StringType()), T.StructField(names.SEGMENT, T.LongType()),
        T.StructField(names.BLOCK_START, T.LongType()), T.StructField(names.STEP_S, T.IntegerType()),
        T.StructField(names.N_ROWS, T.IntegerType()), T.StructField(names.N_HISTORY, T.IntegerType()),
        T.StructField(names.N_CHANNELS, T.IntegerType()), T.StructField(names.VALUES, T.BinaryType()),
        T.StructField(names.MASK, T.BinaryType()), T.StructField(names.LABELS, T.BinaryType()),
        T.StructField(names.STATS_ID, T.StringType()), T.StructField(names.DATE, T.StringType()),
    ])
    return smoothed.groupBy(names.ASSET).applyInPandas(to_blocks, schema)
