"""Prepare as pure DataFrame → DataFrame transforms, with one shuffle.

Row- and value-level checks are Spark column expressions on the scan (small integer codes, no shuffle); then
the rows are grouped by asset and one Arrow batch per asset goes through NumPy: duplicates, row accounting,
regular grid, gap filling, centered smoothing, normalisation and tensor blocks (lstmad.transforms.cleaning,
lstmad.transforms.series, lstmad.transforms.blocks), written as files by lstmad.spark.block_files. The
quarantine, which needs the raw rows, is a second, map-only scan that keeps only the rows set aside. Nothing here uses one Spark row window per channel or a global ``orderBy``.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lstmad import names
from lstmad.config import ChannelConfig, SourceConfig
from lstmad.spark.block_files import add_by_date, write_block_files
from lstmad.transforms import circular, cleaning
from lstmad.transforms.cleaning import fault_column, value_column
from lstmad.transforms.blocks import BLOCK_SCHEMA, block_counts, build_blocks
from lstmad.transforms.series import NormalisationStats, centered_moving_average, observed_moments, regular_grid

TS_US = "timestamp_us"
OWN = "_own"  # the row lies in the dates being prepared (not history)
SOURCE = "_source"  # the raw row as read, for the quarantine
SOURCE_ROW = "source_row"  # its JSON, on the rows the quarantine records
CODE = "_reason_code"
LABEL_FAULT = "_label_fault"  # the label is not in the configured domain
UNDATED = "undated"  # quarantine date of rows without a usable timestamp in an unpartitioned source
MOMENT_FIELDS = ("count", "total", "total_sq", "minimum", "maximum")
KIND, INFO = "kind", "info"  # per-asset output: kind 'block', 'counts', 'conflict' or 'moments'


def raw_column(name: str) -> Column:
    """A source column by its exact name (dots, spaces and the like included)."""
    return F.col("`" + name.replace("`", "``") + "`")


# An offset or zone after a time of day: Z, UTC, +01, +0100, +01:00.
_OFFSET = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|UTC|GMT|[+-]\d{2}(:?\d{2})?)$"
_OFFSET_PATTERN_LETTERS = set("XxZOVz")
# source.timestamp_format for numeric timestamps → microseconds per unit
EPOCH_UNITS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": 0.001}


def parsed_timestamp(raw: DataFrame, source: SourceConfig, nanos_are_naive: bool = False) -> Column:
    """The timestamp column as an absolute instant (TIMESTAMP), null where it cannot be parsed.

    Strings with an offset or zone (``Z``, ``+01:00``, ``UTC``) keep it; those without, like naive (NTZ)
    timestamps, are read in ``source.timezone``. With ``timestamp_format``, the format decides: one with an
    offset letter (X, x, Z, O, V, z) is absolute, any other is read in ``source.timezone``. A long is a
    Parquet TIMESTAMP(NANOS) that Spark read as nanoseconds; ``nanos_are_naive`` when it had no zone.
    Relies on the session time zone being UTC (lstmad.spark.session.require_utc).
    """
    column = raw_column(source.timestamp_column)
    kind = raw.schema[source.timestamp_column].dataType
    naive_to_utc = (lambda c: c) if source.timezone == "UTC" else (lambda c: F.to_utc_timestamp(c, source.timezone))
    if isinstance(kind, T.TimestampType):
        return column
    if source.timestamp_format in EPOCH_UNITS:
        # numbers since 1970-01-01 UTC, as numbers or as text ("1767225600000"); fractions of the unit kept
        number = column.try_cast("decimal(38,9)") if not isinstance(kind, T.StringType) else \
            F.trim(column).try_cast("decimal(38,9)")
        micros = (number * F.lit(EPOCH_UNITS[source.timestamp_format])).try_cast("long")
        return F.when(micros.between(-62135596800000000, 253402300799999999), F.timestamp_micros(micros))
    if isinstance(kind, T.LongType):
        micros = F.timestamp_micros(F.expr(f"`{source.timestamp_column.replace('`', '``')}` div 1000"))
        return naive_to_utc(micros) if nanos_are_naive else micros
    if isinstance(kind, (T.TimestampNTZType, T.DateType)):
        return naive_to_utc(column.cast("timestamp"))
    text = F.trim(column.cast("string"))
    if source.timestamp_format:
        parsed = F.try_to_timestamp(text, F.lit(source.timestamp_format))
        has_offset = bool(_OFFSET_PATTERN_LETTERS & set(source.timestamp_format.replace("'", "")))
        return parsed if has_offset else naive_to_utc(parsed)
    parsed = text.try_cast("timestamp")  # ISO-8601 with a space or a T; an offset is honoured
    return F.when(text.rlike(_OFFSET), parsed).otherwise(naive_to_utc(parsed))


def channel_value_and_fault(raw_value: Column, channel: ChannelConfig, sentinel_tolerance: float,
                            decimal_comma: bool = False) -> tuple[Column, Column]:
    """(value as double, as read; fault code, 0 where measured — lstmad.transforms.cleaning.VALUE_FAULTS).
    The caller masks the value where the code is not 0 (canonical_rows does it in a projection of its own,
    so that Spark evaluates each code once per row). ``decimal_comma``: the text writes 12,5 for 12.5."""
    text = F.regexp_replace(raw_value.cast("string"), ",", ".") if decimal_comma else raw_value
    value = text.try_cast("double")
    fault = (F.when(raw_value.isNull(), 1).when(value.isNull(), 2)
             .when(F.isnan(value) | (F.abs(value) == F.lit(float("inf"))), 3))
    for sentinel in channel.sentinels:
        tolerance = sentinel_tolerance * max(1.0, abs(sentinel))
        fault = fault.when(F.abs(value - F.lit(float(sentinel))) <= F.lit(tolerance), 4)
    if channel.minimum is not None:
        fault = fault.when(value < F.lit(float(channel.minimum)), 5)
    if channel.maximum is not None:
        fault = fault.when(value > F.lit(float(channel.maximum)), 5)
    fault = fault.when(F.abs(value) >= F.lit(cleaning.FLOAT32_MAX), 6)  # FLT_MAX itself: a sentinel
    fault = fault.otherwise(0).cast("tinyint")
    return value, fault


def label_and_fault(raw_label: Column | None, label_values: dict[str, int]) -> tuple[Column, Column]:
    """(label: 0 normal, 1 anomalous, null unknown; label fault: true where a value is present but outside the
    domain — ``label_values``' keys when given (compared as numbers when every key is one, so that 2, 2.0 and
    "2" agree; else as trimmed text), else the numbers 0 and 1)."""
    if raw_label is None:
        return F.lit(None).cast("int"), F.lit(False)
    numeric_keys = {}
    for key, value in label_values.items():
        try:
            numeric_keys[float(key)] = int(value)
        except ValueError:
            break
    if label_values and len(numeric_keys) == len(label_values):
        number, label = raw_label.try_cast("double"), F.lit(None)
        for key, value in sorted(numeric_keys.items()):
            label = F.when(number == F.lit(key), F.lit(value)).otherwise(label)
    elif label_values:
        mapping = F.create_map(*[x for k, v in sorted(label_values.items())
                                 for x in (F.lit(str(k).strip()), F.lit(int(v)))])
        label = F.try_element_at(mapping, F.trim(raw_label.cast("string")))
    else:
        number = raw_label.try_cast("double")
        label = F.when(number.isin(0.0, 1.0), number.cast("int"))
    return label.cast("int"), raw_label.isNotNull() & label.isNull()


def operating_state_code(states: tuple = ()):
    """The operating state of each raw row as a tinyint column: k for the first of ``states``
    (lstmad.config.OperatingState) whose condition holds, 0 (normal operation) when none does or a condition
    is null."""
    code = F.lit(0)
    for k, state in reversed(list(enumerate(states, start=1))):
        code = F.when(F.coalesce(F.expr(state.when).cast("boolean"), F.lit(False)), F.lit(k)).otherwise(code)
    return code.cast("tinyint")


def canonical_rows(raw: DataFrame, source: SourceConfig, own_dates: list[str], keep_source: bool | str = False,
                   nanos_are_naive: bool = False, states: tuple = (), overflow_bounds=None) -> DataFrame:
    """Raw source rows → asset_id, timestamp_us, one double per channel (null where faulty), one fault code
    per channel, label, operating state (operating_state_code of ``states``), date (the partition's, else the
    timestamp's UTC date, else ``undated``), the
    row-level reason code (lstmad.transforms.cleaning.ROW_REASONS, 0 = usable) and ``_own`` (date in ``own_dates``);
    with ``keep_source``, ``source_row``: the raw row as JSON where the quarantine will record it, else null
    (``keep_source="all"``: on every row). ``overflow_bounds`` (C,): values at or beyond these magnitudes may
    overflow float32 once normalised (NormalisationStats.overflow_bounds): their rows carry their JSON too, in
    case per_asset finds them unrepresentable.

    Nothing here raises on bad data: unparseable values become fault codes, never errors.
    """
    partition = source.partition_column
    ts_us = F.unix_micros(parsed_timestamp(raw, source, nanos_are_naive))
    asset = (F.lit(source.asset_constant) if source.asset_constant
             else F.nullif(F.trim(raw_column(source.asset_column).cast("string")), F.lit("")))
    utc_date = F.date_format(F.timestamp_micros(ts_us), "yyyy-MM-dd")
    columns = [asset.alias(names.ASSET), ts_us.alias(TS_US)]
    for i, channel in enumerate(source.channels):
        text = isinstance(raw.schema[channel.name].dataType, T.StringType)
        value, fault = channel_value_and_fault(raw_column(channel.name), channel, source.sentinel_tolerance,
                                               decimal_comma=text and source.decimal_separator == ",")
        columns += [value.alias(value_column(i)), fault.alias(fault_column(i))]
    n_channels = len(source.channels)
    label, label_fault = label_and_fault(raw_column(source.label_column) if source.label_column else None,
                                         source.label_values)
    row_date = raw_column(partition).cast("string") if partition else F.coalesce(utc_date, F.lit(UNDATED))
    columns += [label.alias(names.LABEL), label_fault.alias(LABEL_FAULT), operating_state_code(states).alias(names.STATE),
                row_date.alias(names.DATE)]
    if keep_source:
        columns.append(F.struct(*[raw_column(c) for c in raw.columns if c != partition]).alias(SOURCE))
    rows = raw.select(*columns)
    # masked in a projection of their own: Spark keeps it apart (each code is used twice below), so a
    # channel's fault code is evaluated once per row instead of once for the code and again for the value
    rows = rows.select(*[F.when(F.col(fault_column(i)) == 0, F.col(value_column(i))).alias(value_column(i))
                         if name == value_column(i) else F.col(name)
                         for name in rows.columns for i in [_channel_index(name, n_channels)]])

    no_value = F.lit(True)
    for i in range(len(source.channels)):
        no_value = no_value & F.col(value_column(i)).isNull()
    code = F.when(F.col(TS_US).isNull(), 1).when(F.col(names.ASSET).isNull(), 2)
    if partition:
        code = code.when(F.date_format(F.timestamp_micros(F.col(TS_US)), "yyyy-MM-dd") != F.col(names.DATE), 3)
    code = code.when(no_value, 4).otherwise(0).cast("tinyint")
    rows = rows.withColumn(CODE, code).withColumn(OWN, F.col(names.DATE).isin(own_dates))
    if keep_source == "all":
        rows = rows.withColumn(SOURCE_ROW, F.to_json(F.col(SOURCE))).drop(SOURCE)
    elif keep_source:
        # The raw row as JSON, only where the quarantine will record it (set aside, or a recorded value
        # fault): computed on the scan, so the quarantine needs no second pass over the source.
        recorded = F.lit(False)
        for i in range(len(source.channels)):
            recorded = recorded | F.col(fault_column(i)).isin(*cleaning.RECORDED_FAULT_CODES)
            if overflow_bounds is not None:
                recorded = recorded | (F.abs(F.col(value_column(i))) >= F.lit(float(overflow_bounds[i])))
        wanted = F.col(OWN) & ((F.col(CODE) != 0) | recorded)
        rows = rows.withColumn(SOURCE_ROW, F.when(wanted, F.to_json(F.col(SOURCE)))).drop(SOURCE)
    return rows


def _channel_index(column: str, n_channels: int) -> int:
    """The channel a value column holds (value_column(i) → i), −1 for any other column."""
    return next((i for i in range(n_channels) if column == value_column(i)), -1)


# ------------------------------------------------------------------------------------------ per-asset step

PER_ASSET_SCHEMA = T.StructType([
    T.StructField(KIND, T.StringType()),
    T.StructField(names.ASSET, T.StringType()), T.StructField(names.SEGMENT, T.LongType()),
    T.StructField(names.BLOCK_START, T.LongType()), T.StructField(names.STEP_S, T.IntegerType()),
    T.StructField(names.N_ROWS, T.IntegerType()), T.StructField(names.N_HISTORY, T.IntegerType()),
    T.StructField(names.N_CHANNELS, T.IntegerType()), T.StructField(names.VALUES, T.BinaryType()),
    T.StructField(names.MASK, T.BinaryType()), T.StructField(names.LABELS, T.BinaryType()),
    T.StructField(names.STATES, T.BinaryType()),
    T.StructField(names.STATS_ID, T.StringType()), T.StructField(names.DATE, T.StringType()),
    T.StructField(INFO, T.StringType()),
])
_PER_ASSET_ARROW = pa.schema([(KIND, pa.string()), *BLOCK_SCHEMA, (INFO, pa.string())])


def _records(kind: str, asset: str, rows: list[dict]) -> list[dict]:
    return [{KIND: kind, names.ASSET: asset, **row} for row in rows]


def per_asset(rows: DataFrame, channels: tuple[str, ...], stats: NormalisationStats | None, window: int,
              block_rows: int, step_s: int, max_gap_steps: int, half_width: int, own_from_us: int, own_to_us: int,
              has_labels: bool, max_masked_share: float = 1.0, partitions: int = 8, has_states: bool = False,
              write_to: str | None = None, run_id: str = "", periods: tuple = ()) -> DataFrame:
    """Partition ``canonical_rows`` by asset (``partitions`` tasks); per asset (NumPy): classify duplicates, count the own rows, put the
    usable rows on the grid, fill, smooth, and cut tensor blocks of [own_from_us, own_to_us).

    Output rows (PER_ASSET_SCHEMA) by ``kind``: 'block' (BLOCK_SCHEMA columns), 'counts' (date, info: JSON of
    lstmad.transforms.cleaning.account plus lstmad.transforms.blocks.block_counts summed over the date's blocks), 'conflict' (block_start: a timestamp whose copies disagree) and, without
    ``stats``, 'moments' (info: JSON of the observed moments of the smoothed own rows) — the blocks then hold
    smoothed values in source units as float64, for ``normalise_blocks`` once the statistics are fitted.

    With ``write_to`` (a staging folder the executors see) and ``stats``, each task writes its blocks itself,
    one Parquet file per date (write_block_files), and returns 'file' records (date, info: the file's name)
    in their place: the night is prepared in one pass, without caching the blocks in Spark or shuffling them
    again to write them.

    ``channels`` are the source's; ``periods`` (one per channel, None where not circular; empty: none is)
    turn circular channels into their sine and cosine before the grid (lstmad.transforms.circular): blocks,
    moments and ``stats`` are over the tensor channels, the row accounting over the source's.
    """
    channel_list = list(channels)
    periods = tuple(periods) or (None,) * len(channel_list)
    tensor_source = circular.source_index(periods)
    stats_id = stats.stats_id if stats is not None else ""
    # below these magnitudes no value can overflow once normalised: the exact check runs only on rows above
    bounds = circular.source_bounds(stats.overflow_bounds(), periods) if stats is not None else None

    def step(table: pa.Table) -> pa.Table:
        asset = table.column(names.ASSET)[0].as_py()
        ts_column = table.column(TS_US)
        has_ts = ts_column.is_valid().to_numpy(zero_copy_only=False)
        ts = ts_column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = np.column_stack([table.column(value_column(i)).to_numpy(zero_copy_only=False).astype(np.float64)
                                  for i in range(len(channel_list))])
        faults = unpacked_faults(table, len(channel_list))
        label_faults = table.column(LABEL_FAULT).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        with np.errstate(invalid="ignore"):
            suspect = np.flatnonzero((np.abs(values) >= bounds).any(axis=1)) if bounds is not None else []
        if len(suspect):
            # a value float32 can hold may still overflow it once normalised (a large reading on a channel
            # of small scale): masked and counted as unrepresentable, as in canonical_rows
            rows = values[suspect]
            with np.errstate(invalid="ignore", over="ignore"):
                tensor_rows = circular.to_tensor_values(rows, periods)
                too_large = np.isfinite(tensor_rows) & (np.abs(stats.apply(tensor_rows, asset)) >= cleaning.FLOAT32_MAX)
            overflow = np.zeros(rows.shape, dtype=bool)
            np.logical_or.at(overflow.T, tensor_source, too_large.T)  # a source channel's, from its tensor channels'
            rows[overflow] = np.nan
            values[suspect] = rows
            faults[suspect] = np.where(overflow, 6, faults[suspect])
        labels = table.column(names.LABEL).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int8)
        states = table.column(names.STATE).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int8)
        reasons = table.column(CODE).to_numpy(zero_copy_only=False).astype(np.uint8)
        own = table.column(OWN).to_numpy(zero_copy_only=False).astype(bool)
        dates = table.column(names.DATE).to_numpy(zero_copy_only=False).astype(str)
        out: list[dict] = []

        usable = np.flatnonzero(reasons == 0)
        # + 0.0 turns −0.0 into 0.0: "0" and "-0" are the same reading
        content = np.column_stack([values[usable] + 0.0, faults[usable], labels[usable]])
        conflicting, extra = cleaning.classify_duplicates(ts[usable], content)
        reasons[usable[conflicting]] = cleaning.CONFLICTING
        extra_copy = np.zeros(ts.size, dtype=bool)
        extra_copy[usable[extra]] = True
        counts_by_date = cleaning.account(dates, own, reasons, extra_copy, faults, channel_list, label_faults)
        conflict_rows = usable[conflicting]
        conflict_rows = conflict_rows[own[conflict_rows]]
        out += _records("conflict", asset, [{names.BLOCK_START: int(t)} for t in np.unique(ts[conflict_rows])])
        if SOURCE_ROW in table.column_names:
            # Rows for the quarantine (their JSON came with them; conflicting copies get theirs from a keyed
            # re-read); an extra exact copy's faults are recorded on the copy that is kept.
            recorded = np.isin(faults, cleaning.RECORDED_FAULT_CODES).any(axis=1)
            chosen = np.flatnonzero(own & ((reasons != 0) | recorded) & ~extra_copy
                                    & (reasons != cleaning.CONFLICTING))
            if chosen.size:
                json_rows = table.column(SOURCE_ROW).take(pa.array(chosen)).to_pylist()
                payload = [[dates[i], int(ts[i]) if has_ts[i] else None, int(reasons[i]), faults[i].tolist(), j]
                           for i, j in zip(chosen, json_rows)]
                out += _records("quarantine", asset, [{INFO: json.dumps(payload)}])

        keep = (reasons == 0) & ~extra_copy
        grid = regular_grid(ts[keep], circular.to_tensor_values(values[keep], periods), labels[keep], step_s,
                            max_gap_steps, states[keep])
        grid.values = centered_moving_average(grid.values, half_width, grid.segments)
        if stats is None:
            in_range = (grid.timestamps_us >= own_from_us) & (grid.timestamps_us < own_to_us)
            moments = observed_moments(grid.values[in_range], grid.observed[in_range])
            out += _records("moments", asset, [{INFO: json.dumps({k: v.tolist() for k, v in moments.items()})}])
            block_values, dtype = grid.values, np.float64
        else:
            block_values = stats.apply(grid.values, asset)
            block_values[~np.isfinite(block_values)] = 0.0  # never observed in its segment: the mean, masked
            dtype = np.float32
        blocks = build_blocks(asset, grid.timestamps_us, block_values, grid.segments,
                              grid.labels if has_labels else None, window, block_rows, step_s, stats_id, own_from_us,
                              own_to_us, observed=grid.observed, dtype=dtype,
                              states=grid.states if has_states else None)
        out += [{KIND: "block", **block} for block in blocks]
        for block in blocks:
            day = counts_by_date.setdefault(block[names.DATE], {})
            counts_by_date[block[names.DATE]] = cleaning.merge_counts([day, block_counts(block, window,
                                                                                         max_masked_share)])
        out += _records("counts", asset, [{names.DATE: day, INFO: json.dumps(counts)}
                                          for day, counts in counts_by_date.items()])
        return pa.Table.from_pylist(out, schema=_PER_ASSET_ARROW)

    def each_asset(batches):
        # All rows of a partition, split by asset here: a grouped applyInArrow would have Spark sort every row
        # by asset first, which cost more than everything else in prepare.
        import pandas as pd

        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        table = pa.Table.from_batches(batches)

        # assets in name order (not arrival order): a task's block file is the same whatever order the
        # shuffle delivered its rows in
        codes, _ = pd.factorize(table.column(names.ASSET).to_pandas(), sort=True, use_na_sentinel=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        # one take of the whole partition into asset order, then zero-copy slices: a take per asset on the
        # many-chunked table cost two thirds of this step
        table = table.take(order).combine_chunks()
        blocks_by_date: dict[str, list[pa.Table]] = {}
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [order.size]])):
            out = step(table.slice(lo, hi - lo))
            if write_to is None:
                yield from out.to_batches()
                continue
            kinds = out.column(KIND).to_numpy(zero_copy_only=False)
            yield from out.filter(pa.array(kinds != "block")).to_batches()
            add_by_date(out.filter(pa.array(kinds == "block")).select(BLOCK_SCHEMA.names), blocks_by_date)
        if write_to is not None:
            for day, name in write_block_files(blocks_by_date, write_to, run_id):
                yield pa.RecordBatch.from_pylist([{KIND: "file", names.DATE: day, INFO: name}],
                                                 schema=_PER_ASSET_ARROW)

    if write_to is not None and stats is None:
        raise ValueError("per_asset writes blocks itself only with statistics (unnormalised blocks wait for them)")
    return packed_faults(rows, len(channel_list)).repartition(partitions, names.ASSET).mapInArrow(each_asset,
                                                                                             PER_ASSET_SCHEMA)


# Fault codes (0-6: lstmad.transforms.cleaning.VALUE_FAULTS) fit 3 bits: 21 channels' codes in one long.
FAULT_BITS, FAULTS_PER_LONG = 3, 21


def packed_fault_column(k: int) -> str:
    return f"_faults_packed_{k}"


def packed_faults(rows: DataFrame, n_channels: int) -> DataFrame:
    """The channels' fault code columns replaced by ⌈C / 21⌉ longs (3 bits a channel), before the shuffle to
    the per-asset step: Spark's row format gives every tinyint 8 bytes, so 26 codes a row were half of the
    bytes shuffled and sent to Python. unpacked_faults reverses it."""
    packs = []
    for k, lo in enumerate(range(0, n_channels, FAULTS_PER_LONG)):
        # a null code (there is none: codes end in otherwise(0)) would null the other 20 channels' codes
        terms = [f"shiftleft(coalesce(cast(`{fault_column(i)}` as bigint), 0), {FAULT_BITS * (i - lo)})"
                 for i in range(lo, min(lo + FAULTS_PER_LONG, n_channels))]
        packs.append(F.expr(" | ".join(terms)).alias(packed_fault_column(k)))
    faults = {fault_column(i) for i in range(n_channels)}
    return rows.select(*[F.col(c) for c in rows.columns if c not in faults], *packs)


def unpacked_faults(table: pa.Table, n_channels: int) -> np.ndarray:
    """(rows, C) uint8 fault codes from the packed columns of packed_faults."""
    faults = np.empty((table.num_rows, n_channels), dtype=np.uint8)
    for k, lo in enumerate(range(0, n_channels, FAULTS_PER_LONG)):
        hi = min(lo + FAULTS_PER_LONG, n_channels)
        packed = table.column(packed_fault_column(k)).to_numpy(zero_copy_only=False).astype(np.int64)
        shifts = FAULT_BITS * np.arange(hi - lo, dtype=np.int64)
        faults[:, lo:hi] = (packed[:, None] >> shifts) & ((1 << FAULT_BITS) - 1)
    return faults


def block_rows(per_asset_rows: DataFrame) -> DataFrame:
    return per_asset_rows.where(F.col(KIND) == "block").select(*[f.name for f in BLOCK_SCHEMA])


def side_records(per_asset_rows: DataFrame) -> list:
    """The small non-block records ('counts', 'conflict', 'quarantine', 'moments' and, when the tasks wrote
    the blocks themselves, 'file') to the driver."""
    return (per_asset_rows.where(F.col(KIND) != "block")
            .select(KIND, names.ASSET, names.DATE, names.BLOCK_START, INFO).collect())


# ------------------------------------------------------------------------------------------ quarantine


def quarantine_candidates(side: list, channels: tuple[str, ...]) -> pa.Table:
    """The 'quarantine' records of ``per_asset`` as one table for lstmad.transforms.cleaning.quarantine_records:
    date, asset_id, timestamp_us, reason code, fault codes, source_row."""
    columns: dict[str, list] = {names.DATE: [], names.ASSET: [], TS_US: [], CODE: [], SOURCE_ROW: [],
                                **{fault_column(i): [] for i in range(len(channels))}}
    for record in side:
        if record[KIND] != "quarantine":
            continue
        for day, ts, code, faults, source_row in json.loads(record[INFO]):
            columns[names.DATE].append(day)
            columns[names.ASSET].append(record[names.ASSET])
            columns[TS_US].append(ts)
            columns[CODE].append(code)
            columns[SOURCE_ROW].append(source_row)
            for i, fault in enumerate(faults):
                columns[fault_column(i)].append(fault)
    schema = pa.schema([(names.DATE, pa.string()), (names.ASSET, pa.string()), (TS_US, pa.int64()),
                        (CODE, pa.int8()), (SOURCE_ROW, pa.string()),
                        *[(fault_column(i), pa.int8()) for i in range(len(channels))]])
    return pa.table(columns, schema=schema)


def conflicting_rows(raw: DataFrame, source: SourceConfig, own_dates: list[str], conflicts: list[tuple[str, int]],
                     nanos_are_naive: bool = False) -> DataFrame:
    """Every usable own copy of the (asset, timestamp) pairs in ``conflicts``, re-read from the source with its
    JSON, in the columns of quarantine_candidates (reason: conflicting duplicate). Only the pairs' rows go
    through the per-channel checks; the rest of the source is matched on asset and timestamp alone."""
    keys = raw.sparkSession.createDataFrame(conflicts, "_k_asset string, _k_ts long")
    asset = (F.lit(source.asset_constant) if source.asset_constant
             else F.nullif(F.trim(raw_column(source.asset_column).cast("string")), F.lit("")))
    ts = F.unix_micros(parsed_timestamp(raw, source, nanos_are_naive))
    keyed = (raw.withColumn("_k_asset", asset).withColumn("_k_ts", ts)
             .join(F.broadcast(keys), ["_k_asset", "_k_ts"], "left_semi").drop("_k_asset", "_k_ts"))
    rows = canonical_rows(keyed, source, own_dates, keep_source="all", nanos_are_naive=nanos_are_naive)
    return (rows.where(F.col(OWN) & (F.col(CODE) == 0))
            .select(names.DATE, names.ASSET, TS_US, F.lit(cleaning.CONFLICTING).cast("tinyint").alias(CODE),
                    SOURCE_ROW, *[F.col(fault_column(i)) for i in range(len(source.channels))]))
