"""A corpus of malformed and hostile source files, one file (or folder) each: every one ends in a clean run
whose row accounting and quarantine counts match a hand count, or in one clear error that names the file or
column and writes nothing.

All files hold one asset's minute rows of 2026-01-01 (the clean file: 20 rows, 00:00 .. 00:19 UTC) with three
channels: temp (range −40 .. 60 °C, sentinel −273.2), power (−50 .. 2100 kW), speed (0 .. 60 m/s). Window 4,
smoothing ±1, gaps of up to 2 missing steps filled, windows with more than 25 % filled values skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from typer.testing import CliRunner

from lstmad import names, stages
from lstmad.cli import app
from lstmad.config import load_config
from lstmad.io import lakehouse
from lstmad.io.tensor_store import load_stats, read_blocks
from lstmad.layout import Paths, PrepareError
from lstmad.transforms.blocks import unpack_mask, windows_from_blocks
from tests.conftest import write_config

pytestmark = pytest.mark.spark

DAY = dt.date(2026, 1, 1)
HEADER = ["time", "asset", "temp", "power", "speed"]


def clean_rows(n: int = 20, asset: str = "A") -> list[list]:
    return [[f"2026-01-01 00:{i:02d}:00", asset, f"{10 + 0.1 * i:.2f}", f"{500 + 10 * i:.1f}",
             f"{5 + 0.05 * i:.3f}"] for i in range(n)]


def with_value(rows: list[list], index: int, column: str, value: str) -> list[list]:
    rows = [list(r) for r in rows]
    rows[index][HEADER.index(column)] = value
    return rows


def _mixed_zones() -> list[list]:
    rows = clean_rows()
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row[0] = f"2026-01-01T00:{i:02d}:00Z"
        elif i % 3 == 1:
            row[0] = f"2026-01-01T01:{i:02d}:00+01:00"
    return rows


def _bad_timestamps() -> list[list]:
    rows = clean_rows() + clean_rows(3)
    rows[20][0], rows[21][0], rows[22][0] = "not-a-date", "", "2026-13-45 10:00:00"
    return rows


def _conflicting() -> list[list]:
    rows = clean_rows()
    return rows + [with_value(rows, 5, "power", "999.0")[5], with_value(rows, 6, "temp", "11.11")[6]]


def _short_asset() -> list[list]:
    return clean_rows() + clean_rows(2, asset="B")


def _constant_channel() -> list[list]:
    return [r[:4] + ["7.000"] for r in clean_rows()]


def _gap(missing: range) -> list[list]:
    return [r for i, r in enumerate(clean_rows(22)) if i not in missing]


def _null_rows() -> list[list]:
    rows = clean_rows()
    rows[3][2:] = ["", "", ""]
    rows[4][2:] = ["", "", ""]
    return rows


def _null_assets() -> list[list]:
    rows = clean_rows() + clean_rows(2)
    rows[20][1] = ""
    rows[21][1] = " "
    return rows


def _local_time() -> list[list]:
    rows = clean_rows()
    for i, row in enumerate(rows):
        row[0] = f"2026-01-01 01:{i:02d}:00"  # Paris wall clock in winter: UTC + 1 h
    return rows


def _day_first() -> list[list]:
    rows = clean_rows()
    for i, row in enumerate(rows):
        row[0] = f"01/01/2026 00.{i:02d}"
    return rows


FLT_MAX = float(np.finfo(np.float32).max)
UNLIMITED = [{"name": "temp"}, {"name": "power"}, {"name": "speed"}]  # channels without physical limits


def renamed(old: str, new: str) -> dict:
    """Overrides for the clean file with channel ``old`` called ``new`` (header and configuration)."""
    channels = [{"name": "temp", "minimum": -40, "maximum": 60, "sentinels": [-273.2]},
                {"name": "power", "minimum": -50, "maximum": 2100}, {"name": "speed", "minimum": 0, "maximum": 60}]
    for channel in channels:
        if channel["name"] == old:
            channel["name"] = new
    return {"header": [new if h == old else h for h in HEADER], "channels": channels}


def _decimal_comma() -> list[list]:
    return [r[:2] + [v.replace(".", ",") for v in r[2:]] for r in clean_rows()]


def _epoch(unit_per_second: int, fraction: bool = False) -> list[list]:
    def stamp(text: str) -> str:
        seconds = int(pd.Timestamp(text, tz="UTC").timestamp())
        return f"{seconds}.0" if fraction else str(seconds * unit_per_second)
    return [[stamp(r[0])] + r[1:] for r in clean_rows()]


def _labelled(labels: list[str]) -> list[list]:
    return [r + [label] for r, label in zip(clean_rows(), labels)]


def _ragged() -> list[list]:
    rows = clean_rows()
    rows[6] = rows[6][:4]              # the last field missing: speed is a missing value
    rows[13] = rows[13] + ["surplus"]  # one field too many: ignored
    return rows


def clean_frame() -> pd.DataFrame:
    """The clean file as typed columns: UTC timestamps, float64 channels."""
    frame = pd.DataFrame(clean_rows(), columns=HEADER)
    frame["time"] = pd.to_datetime(frame.time, utc=True)
    return frame.astype({c: "float64" for c in HEADER[2:]})


def _parquet(name: str, table_of: callable) -> callable:
    def write(folder: Path) -> Path:
        file = folder / f"{name}.parquet"
        pq.write_table(table_of(), file)
        return file
    return write


def _parquet_folder(name: str, second: callable) -> callable:
    """A folder of the clean file and a second file (written by ``second(path)``)."""
    def write(folder: Path) -> Path:
        target = folder / name
        target.mkdir()
        pq.write_table(pa.Table.from_pandas(clean_frame(), preserve_index=False), target / "part-0.parquet")
        second(target / "part-1.parquet")
        return target
    return write


def _duplicated_column() -> pa.Table:
    table = pa.Table.from_pandas(clean_frame(), preserve_index=False)
    return table.append_column("temp", table.column("temp"))


def _float32_channels() -> pa.Table:
    frame = clean_frame().astype({c: "float32" for c in HEADER[2:]})
    frame.loc[7, "speed"] = np.finfo(np.float32).max  # FLT_MAX, the PLC sentinel
    frame.loc[8, "speed"] = -np.finfo(np.float32).max
    return pa.Table.from_pandas(frame, preserve_index=False)


def _epoch_ms_integers() -> pa.Table:
    frame = clean_frame()
    frame["time"] = frame.time.astype("int64") // 1_000_000
    return pa.Table.from_pandas(frame, preserve_index=False)


def _string_timestamps() -> pa.Table:
    frame = clean_frame()
    frame["time"] = [r[0] for r in clean_rows()]
    return pa.Table.from_pandas(frame, preserve_index=False)


def _null_typed_channel() -> pa.Table:
    table = pa.Table.from_pandas(clean_frame().drop(columns="speed"), preserve_index=False)
    return table.append_column("speed", pa.nulls(20))


def _label_codes() -> pa.Table:
    """Float label codes as a historian writes them (2.0: another fault class, 3.0: unknown)."""
    codes = [0.0] * 15 + [1.0, 2.0, 2.0, 3.0, 0.0]
    return pa.Table.from_pandas(clean_frame().assign(label=codes), preserve_index=False)


def _truncated(folder: Path) -> Path:
    file = folder / "truncated.parquet"
    pq.write_table(pa.Table.from_pandas(clean_frame(), preserve_index=False), file)
    file.write_bytes(file.read_bytes()[:-100])
    return file


def _delta(folder: Path) -> Path:
    from deltalake import write_deltalake

    target = folder / "delta_table"
    write_deltalake(str(target), pa.Table.from_pandas(clean_frame(), preserve_index=False))
    return target


def _delta_partitioned(folder: Path) -> Path:
    """A Delta table partitioned by date (two days: only 2026-01-01's partition is read)."""
    from deltalake import write_deltalake

    target = folder / "delta_partitioned"
    frame = clean_frame().assign(date="2026-01-01")
    other = clean_frame().assign(date="2026-01-02", time=lambda f: f.time + pd.Timedelta(days=1))
    write_deltalake(str(target), pa.Table.from_pandas(pd.concat([frame, other]), preserve_index=False),
                    partition_by=["date"])
    return target


def _empty_rows(path: Path) -> None:
    # an empty frame: pandas writes null/object columns, not the good file's types
    pq.write_table(pa.Table.from_pandas(pd.DataFrame({c: [] for c in HEADER}), preserve_index=False), path)


# name → (rows, source overrides, expected summary subset, or an error fragment); rows: CSV rows, raw bytes,
# None (an empty file) or a writer (folder → path)
CASES: dict[str, tuple] = {
    "clean": (clean_rows(), {}, {"rows_read": 20, "rows_kept": 20, "windows": 17}),
    "bad_timestamps": (_bad_timestamps(), {},
                       {"rows_read": 23, "rows_kept": 20, "quarantined_by_reason": {"null_or_unparseable_timestamp": 3},
                        "windows": 17}),
    "mixed_time_zones": (_mixed_zones(), {}, {"rows_read": 20, "rows_kept": 20, "windows": 17, "same_as_clean": True}),
    "local_time_zone": (_local_time(), {"timezone": "Europe/Paris"},
                        {"rows_read": 20, "rows_kept": 20, "windows": 17, "same_as_clean": True}),
    "custom_timestamp_format": (_day_first(), {"timestamp_format": "dd/MM/yyyy HH.mm"},
                                {"rows_read": 20, "rows_kept": 20, "same_as_clean": True}),
    "strings_in_numeric_columns": (with_value(with_value(clean_rows(), 2, "power", "n/a"), 9, "speed", "fast"), {},
                                   {"rows_kept": 20, "values_masked_by_reason": {"non_numeric_value": 2},
                                    "quarantine_values": {"non_numeric_value": 2}}),
    "nan_and_inf": (with_value(with_value(with_value(clean_rows(), 1, "temp", "NaN"), 7, "power", "inf"),
                               12, "speed", "-Infinity"), {},
                    {"rows_kept": 20, "values_masked_by_reason": {"non_finite_value": 3}}),
    "sentinels": (with_value(with_value(clean_rows(), 4, "temp", "-273.2"), 15, "temp", "-273.20001"), {},
                  {"rows_kept": 20, "values_masked_by_reason": {"sentinel_value": 2},
                   "quarantine_values": {"sentinel_value": 2}}),
    "out_of_range_spikes": (with_value(with_value(clean_rows(), 8, "power", "99999"), 11, "speed", "-5"), {},
                            {"rows_kept": 20, "values_masked_by_reason": {"out_of_range_value": 2}}),
    "duplicates_equal": (clean_rows() + clean_rows()[3:6], {},
                         {"rows_read": 23, "rows_kept": 20, "exact_duplicates_dropped": 3, "windows": 17}),
    "duplicates_conflicting": (_conflicting(), {},
                               {"rows_read": 22, "rows_kept": 18, "rows_quarantined": 4,
                                "quarantined_by_reason": {"conflicting_duplicate": 4}, "grid_rows_filled": 2}),
    "out_of_order_rows": (clean_rows()[::-1][:7] + clean_rows()[:13][::-1], {},
                          {"rows_read": 20, "rows_kept": 20, "windows": 17, "same_as_clean": True}),
    "missing_channel": ([r[:4] for r in clean_rows()], {"header": HEADER[:4]}, "column 'speed' is missing"),
    "empty_file": (None, {}, "empty file"),
    "header_only": ([], {}, "no rows for 2026-01-01"),
    "asset_shorter_than_window": (_short_asset(), {}, {"rows_read": 22, "rows_kept": 22, "windows": 17}),
    "constant_channel": (_constant_channel(), {}, {"rows_kept": 20, "windows": 17, "constant_speed": True}),
    "long_gap": (_gap(range(8, 12)), {}, {"rows_read": 18, "rows_kept": 18, "grid_rows_filled": 0,
                                          "windows": (8 - 3) + (10 - 3)}),
    "short_gap": (_gap(range(10, 12)), {}, {"rows_read": 20, "grid_rows_filled": 2, "grid_rows": 22,
                                            "windows": 16, "windows_skipped_masked": 3}),
    "null_asset": (_null_assets(), {}, {"rows_read": 22, "rows_kept": 20, "quarantined_by_reason": {"null_asset": 2}}),
    "rows_without_any_value": (_null_rows(), {}, {"rows_read": 20, "rows_kept": 18,
                                                  "quarantined_by_reason": {"no_usable_value": 2},
                                                  "grid_rows_filled": 2}),
    "semicolon_delimited": (clean_rows(), {"csv_delimiter": ";", "delimiter": ";"},
                            {"rows_read": 20, "rows_kept": 20, "windows": 17}),
    "header_with_spaces": (clean_rows(), {"header": ["time", "asset", " temp", "power", "speed"]},
                           "column 'temp' is missing"),
    "timestamps_of_another_day": ([[r[0].replace("2026-01-01", "2026-01-02")] + r[1:] for r in clean_rows()], {},
                                  "no rows for 2026-01-01"),
    # values beyond float32 (a PLC's FLT_MAX sentinel, a double written by another system) on channels without
    # physical limits: masked as unrepresentable, not ±inf in the blocks
    "beyond_float32": (with_value(with_value(with_value(clean_rows(), 3, "speed", "3.4028235e38"), 4, "power",
                                             "-1e300"), 5, "temp", repr(FLT_MAX)), {"channels": UNLIMITED},
                       {"rows_kept": 20, "values_masked_by_reason": {"unrepresentable_value": 3},
                        "quarantine_values": {"unrepresentable_value": 3}}),
    "dotted_channel_name": (clean_rows(), renamed("power", "Power.kW"), {"rows_kept": 20, "same_as_clean": True}),
    "channel_name_with_backtick_and_spaces": (clean_rows(), renamed("speed", "wind `speed` (m/s)"),
                                              {"rows_kept": 20, "same_as_clean": True}),
    "channel_named_like_an_internal_column": (clean_rows(), renamed("power", "date"),
                                              {"rows_kept": 20, "same_as_clean": True}),
    "utf8_byte_order_mark": (clean_rows(), {"encoding": "utf-8-sig"}, {"rows_kept": 20, "same_as_clean": True}),
    "latin1_asset_names": (clean_rows(asset="Éole"), {"encoding": "latin-1", "csv_encoding": "latin-1"},
                           {"rows_kept": 20, "same_as_clean": True, "asset": "Éole"}),
    "crlf_line_endings": (clean_rows(), {"newline": "\r\n"}, {"rows_kept": 20, "same_as_clean": True}),
    "quoted_fields_with_delimiters": (clean_rows(asset="A, north"), {"quoting": csv.QUOTE_ALL},
                                      {"rows_kept": 20, "same_as_clean": True, "asset": "A, north"}),
    "ragged_rows": (_ragged(), {}, {"rows_read": 20, "rows_kept": 20, "values_masked_by_reason": {"missing_value": 1}}),
    "decimal_comma_unconfigured": (_decimal_comma(), {"csv_delimiter": ";", "delimiter": ";"},
                                   "'10,00' (a decimal comma? set source.decimal_separator: ',')"),
    "decimal_comma": (_decimal_comma(), {"csv_delimiter": ";", "delimiter": ";", "decimal_separator": ","},
                      {"rows_kept": 20, "same_as_clean": True}),
    "thousands_separator": (with_value(clean_rows(), 2, "power", "1,520.0"), {},
                            {"rows_kept": 20, "values_masked_by_reason": {"non_numeric_value": 1}}),
    "whitespace_and_exponents": (with_value(with_value(clean_rows(), 2, "power", " 5.2e2 "), 3, "temp", "1.03E1"),
                                 {}, {"rows_kept": 20, "same_as_clean": True}),
    "epoch_milliseconds_unconfigured": (_epoch(1000), {}, "'1767225600000', which is not a timestamp (numbers since "
                                                          "1970? set source.timestamp_format: epoch_ms)"),
    "epoch_milliseconds": (_epoch(1000), {"timestamp_format": "epoch_ms"}, {"rows_kept": 20, "same_as_clean": True}),
    "epoch_microseconds": (_epoch(1_000_000), {"timestamp_format": "epoch_us"}, {"rows_kept": 20, "same_as_clean": True}),
    "epoch_nanoseconds": (_epoch(1_000_000_000), {"timestamp_format": "epoch_ns"}, {"rows_kept": 20, "same_as_clean": True}),
    "epoch_seconds_with_fraction": (_epoch(1, fraction=True), {"timestamp_format": "epoch_s"},
                                    {"rows_kept": 20, "same_as_clean": True}),
    "text_labels_unmapped": (_labelled(["normal"] * 18 + ["icing"] * 2), {"label_column": "label"},
                             {"rows_kept": 20, "labels_not_in_domain": 20}),
    "text_labels_mapped": (_labelled(["normal"] * 18 + ["icing", " icing "]),
                           {"label_column": "label", "label_values": {"normal": 0, "icing": 1}},
                           {"rows_kept": 20, "labels_not_in_domain": 0, "labels": [0] * 18 + [1, 1]}),
    "labels_outside_the_domain": (_labelled(["0"] * 14 + ["1", "1.0", "2", "-1", "0.5", ""]),
                                  {"label_column": "label"},
                                  {"rows_kept": 20, "labels_not_in_domain": 3, "labels": [0] * 14 + [1, 1] + [-1] * 4}),
    "all_null_channel": ([r[:4] + [""] for r in clean_rows()], {},
                         "column 'speed' has no usable value in 2026-01-01 .. 2026-01-01 (20 of 20 kept rows masked"),
    "header_differs_in_case": (clean_rows(), {"header": ["time", "asset", "Temp", "power", "speed"]},
                               "column 'temp' is missing"),
    "columns_equal_up_to_case": ([r + ["1"] for r in clean_rows()], {"header": HEADER + ["TEMP"]},
                                 "column 'TEMP' and 'temp' differ only in case"),
    "tab_separated_read_as_comma": (clean_rows(), {"delimiter": "\t"}, "column 'time' is missing"),
    "parquet_duplicated_column": (_parquet("dup", _duplicated_column), {"format": "parquet"},
                                  "column 'temp' appears more than once"),
    "parquet_float32_max_sentinel": (_parquet("f32", _float32_channels), {"format": "parquet", "channels": UNLIMITED},
                                     {"rows_kept": 20, "values_masked_by_reason": {"unrepresentable_value": 2}}),
    "parquet_epoch_millisecond_integers": (_parquet("ms", _epoch_ms_integers),
                                           {"format": "parquet", "timestamp_format": "epoch_ms"},
                                           {"rows_kept": 20, "same_as_clean": True}),
    "parquet_string_timestamps": (_parquet("st", _string_timestamps), {"format": "parquet"},
                                  {"rows_kept": 20, "same_as_clean": True}),
    "parquet_null_typed_channel": (_parquet("nt", _null_typed_channel), {"format": "parquet"},
                                   "column 'speed' has no usable value"),
    "parquet_empty_file_beside_a_good_one": (_parquet_folder("empty_beside", _empty_rows), {"format": "parquet"},
                                             {"rows_kept": 20, "same_as_clean": True, "files_skipped_empty": 1}),
    "parquet_zero_bytes_beside_a_good_one": (_parquet_folder("zero_beside", lambda p: p.write_bytes(b"")),
                                             {"format": "parquet"},
                                             {"rows_kept": 20, "same_as_clean": True, "files_skipped_empty": 1}),
    "parquet_numeric_label_codes": (_parquet("codes", _label_codes),
                                    {"format": "parquet", "label_column": "label", "label_values": {0: 0, 1: 1, 2: 1}},
                                    {"rows_kept": 20, "labels_not_in_domain": 1,
                                     "labels": [0] * 15 + [1, 1, 1, -1, 0]}),
    "parquet_truncated_file": (_truncated, {"format": "parquet"}, "not a readable Parquet file"),
    "delta_table": (_delta, {"format": "delta"}, {"rows_kept": 20, "same_as_clean": True}),
    "delta_table_partitioned": (_delta_partitioned, {"format": "delta", "partition_column": "date"},
                                {"rows_read": 20, "rows_kept": 20, "same_as_clean": True}),
    "binary_garbage": (b"\x00\xff\xfe PK\x03\x04" + bytes(range(256)) * 4, {}, "column 'time' is missing"),
}
# Only the short gap is filled: 10 and 11 are missing; a window holding both is 6/12 filled (> 25 %):
# windows starting at rows 8, 9, 10 of the 22-row grid are skipped, 19 − 3 = 16 remain.


def write_case(folder: Path, name: str) -> Path:
    rows, overrides, _ = CASES[name]
    if callable(rows):
        return rows(folder)
    file = folder / f"{name}.csv"
    if rows is None or isinstance(rows, bytes):
        file.write_bytes(rows or b"")
        return file
    header = overrides.get("header", HEADER + (["label"] if "label_column" in overrides else []))
    with open(file, "w", newline="", encoding=overrides.get("encoding", "utf-8")) as handle:
        writer = csv.writer(handle, delimiter=overrides.get("delimiter", ","),
                            lineterminator=overrides.get("newline", "\n"),
                            quoting=overrides.get("quoting", csv.QUOTE_MINIMAL))
        writer.writerow(header)
        writer.writerows(rows)
    return file


SOURCE_KEYS = ("timezone", "timestamp_format", "csv_delimiter", "decimal_separator", "csv_encoding", "label_column",
               "label_values", "channels", "format", "partition_column")


def corpus_config(home: Path, path: Path, **source) -> dict:
    return {
        "pipeline": "corpus", "home": str(home),
        "source": {"path": str(path), "format": "csv", "timestamp_column": "time", "asset_column": "asset",
                   "label_column": None, "partition_column": None,
                   "channels": [{"name": "temp", "unit": "degC", "minimum": -40, "maximum": 60,
                                 "sentinels": [-273.2]},
                                {"name": "power", "unit": "kW", "minimum": -50, "maximum": 2100},
                                {"name": "speed", "unit": "m/s", "minimum": 0, "maximum": 60}], **source},
        "prepare": {"step_s": 60, "smoothing_half_width": 1, "window": 4, "block_rows": 32, "max_gap_steps": 2,
                    "max_masked_share": 0.25},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
    }


def run_case(tmp: Path, name: str, spark):
    file = write_case(tmp, name)
    source = {k: v for k, v in CASES[name][1].items() if k in SOURCE_KEYS}
    config = load_config(write_config(tmp / "conf.yaml", corpus_config(tmp / "home", file, **source)))
    return config, stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)


def block_values(config) -> np.ndarray:
    blocks = read_blocks(Paths.of(config).tensors, [DAY.isoformat()])
    windows = windows_from_blocks(blocks, config.prepare.window)
    return windows.series.numpy()


@pytest.fixture(scope="module")
def clean_values(tmp_path_factory, spark):
    config, _ = run_case(tmp_path_factory.mktemp("clean"), "clean", spark)
    return block_values(config)


def test_corpus_has_at_least_forty_hostile_sources():
    assert len(CASES) - 1 >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_ends_in_counted_run_or_one_clear_error(name, tmp_path, spark, clean_values):
    expected = CASES[name][2]
    if isinstance(expected, str):
        with pytest.raises(PrepareError) as error:
            run_case(tmp_path, name, spark)
        message = str(error.value)
        assert expected in message and "\n" not in message
        (written,) = [p for p in tmp_path.iterdir() if p.name not in ("home", "conf.yaml")]
        assert str(written) in message  # names the file or folder
        home = tmp_path / "home" / "corpus"
        assert not (home / names.TENSOR_BLOCKS).exists() and not (home / "lake").exists()
        return
    config, summary = run_case(tmp_path, name, spark)
    assert summary["rows_read"] == (summary["rows_kept"] + summary["rows_quarantined"]
                                    + summary["exact_duplicates_dropped"])
    for key in ("rows_read", "rows_kept", "rows_quarantined", "exact_duplicates_dropped", "grid_rows",
                "grid_rows_filled", "windows", "windows_skipped_masked", "labels_not_in_domain"):
        if key in expected:
            assert summary[key] == expected[key], key
    assert summary["quarantined_by_reason"] == expected.get("quarantined_by_reason", {})
    masked = {k: v for k, v in summary["values_masked_by_reason"].items()}
    assert masked == expected.get("values_masked_by_reason", {})
    quarantine = lakehouse.read_table(Paths.of(config).lake, names.QUARANTINE).to_pandas()
    row_level = quarantine[quarantine.channel.isna()].reason.value_counts().to_dict()
    assert row_level == expected.get("quarantined_by_reason", {})
    if "quarantine_values" in expected:
        assert quarantine[quarantine.channel.notna()].reason.value_counts().to_dict() == expected["quarantine_values"]
    assert all(json.loads(row) for row in quarantine.source_row)
    if expected.get("same_as_clean"):
        np.testing.assert_allclose(block_values(config), clean_values, atol=1e-6)
    assert np.isfinite(block_values(config)).all()
    if "files_skipped_empty" in expected:
        assert len(summary["files_skipped_empty"]) == expected["files_skipped_empty"]
    blocks = read_blocks(Paths.of(config).tensors, [DAY.isoformat()]).to_pylist()
    if "asset" in expected:
        assert {b[names.ASSET] for b in blocks} == {expected["asset"]}
    if "labels" in expected:
        (block,) = blocks
        assert np.frombuffer(block[names.LABELS], dtype=np.int8).tolist() == expected["labels"]
    if expected.get("constant_speed"):
        stats = load_stats(Paths.of(config).tensors)
        assert stats.scale[2] == 1.0 and stats.offset[2] == pytest.approx(7.0)
        assert np.isfinite(block_values(config)).all()


def test_masked_values_are_interpolated_and_flagged_in_the_blocks(tmp_path, spark):
    config, _ = run_case(tmp_path, "strings_in_numeric_columns", spark)
    blocks = read_blocks(Paths.of(config).tensors, [DAY.isoformat()])
    row = blocks.to_pylist()[0]
    observed = unpack_mask(row[names.MASK], row[names.N_ROWS], row[names.N_CHANNELS])
    assert not observed[2, 1] and not observed[9, 2] and observed.sum() == 20 * 3 - 2
    stats = load_stats(Paths.of(config).tensors)
    values = stats.invert(np.frombuffer(row[names.VALUES], dtype=np.float32).reshape(20, 3).astype(np.float64))
    # power is linear in time (500 + 10 i), so interpolation and the ±1 mean both give it back exactly
    np.testing.assert_allclose(values[1:-1, 1], 500 + 10 * np.arange(1, 19), atol=1e-3)


def test_schema_changes_after_a_recorded_run_fail_naming_the_column(tmp_path, spark):
    file = write_case(tmp_path, "clean")
    raw = corpus_config(tmp_path / "home", file)
    config = load_config(write_config(tmp_path / "conf.yaml", raw))
    stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)
    blocks_before = sorted(p.name for p in (Paths.of(config).tensors / f"date={DAY}").iterdir())
    frame = pd.read_csv(file)
    for change, fragment in [(frame.assign(humidity=50.0), "new column 'humidity'"),
                             (frame.rename(columns={"speed": "wind_speed"}), "column 'speed' is missing")]:
        change.to_csv(file, index=False)
        with pytest.raises(PrepareError, match=fragment):
            stages.prepare(config, DAY, DAY, spark=spark)
    assert sorted(p.name for p in (Paths.of(config).tensors / f"date={DAY}").iterdir()) == blocks_before
    # an intended change is accepted explicitly
    frame.assign(humidity=50.0).to_csv(file, index=False)
    assert stages.prepare(config, DAY, DAY, spark=spark, accept_schema=True)["rows_kept"] == 20


def test_parquet_type_change_and_true_non_finite_values(tmp_path, spark):
    frame = pd.read_csv(write_case(tmp_path, "clean"))
    frame["time"] = pd.to_datetime(frame.time, utc=True)
    frame.loc[3, "temp"], frame.loc[4, "power"] = np.inf, np.nan  # a float NaN written as NaN, not as null
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(3, "power", pa.array(frame.power.to_numpy(), from_pandas=False))
    file = tmp_path / "data.parquet"
    pq.write_table(table, file)
    raw = corpus_config(tmp_path / "home", file, format="parquet")
    config = load_config(write_config(tmp_path / "conf.yaml", raw))
    summary = stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)
    assert summary["values_masked_by_reason"] == {"non_finite_value": 2} and summary["rows_kept"] == 20
    pq.write_table(table.set_column(3, "power", pa.array([str(v) for v in frame.power])), file)
    with pytest.raises(PrepareError, match="column 'power' changed type from number to string"):
        stages.prepare(config, DAY, DAY, spark=spark)


def test_cli_reports_a_malformed_file_in_one_line_without_a_trace(tmp_path, spark):
    file = write_case(tmp_path, "missing_channel")
    conf = write_config(tmp_path / "conf.yaml", corpus_config(tmp_path / "home", file))
    result = CliRunner().invoke(app, ["prepare", "--conf", str(conf), "--date", DAY.isoformat()])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "column 'speed' is missing" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_timestamp_offsets_zones_and_naive_nanoseconds(tmp_path, spark):
    """Strings with an offset keep it (Z, +01, +01:00, UTC); naive strings and naive nanosecond Parquet
    timestamps (pandas' default) are read in the configured zone."""
    from lstmad.config import SourceConfig
    from lstmad.spark.prepare import parsed_timestamp

    source = SourceConfig(timestamp_column="t", asset_constant="A", channels=("x",), timezone="Europe/Paris")
    frame = spark.createDataFrame([("2024-01-01T10:00:00+01",), ("2024-01-01 10:00:00",), ("2024-01-01T10:00:00Z",),
                                   ("2024-01-01 10:00:00 UTC",), ("2024-01-01T10:00:00.5+01:00",)], "t string")
    got = [r[0] for r in frame.select(F.unix_micros(parsed_timestamp(frame, source))).collect()]
    nine, ten = 1704099600_000000, 1704103200_000000  # 09:00Z and 10:00Z
    assert got == [nine, nine, ten, ten, nine + 500_000]
    file = write_case(tmp_path, "clean")
    table = pd.read_csv(file)
    table["time"] = pd.to_datetime(table.time) + pd.Timedelta(hours=1)  # Paris wall clock, naive, ns
    table.to_parquet(tmp_path / "naive.parquet")
    raw = corpus_config(tmp_path / "home", tmp_path / "naive.parquet", format="parquet", timezone="Europe/Paris")
    config = load_config(write_config(tmp_path / "naive.yaml", raw))
    summary = stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)
    assert summary["rows_kept"] == 20 and summary["windows"] == 17
    blocks = read_blocks(Paths.of(config).tensors, [DAY.isoformat()])
    assert min(blocks.column(names.BLOCK_START).to_pylist()) == 1767225600_000000  # 2026-01-01 00:00Z


def test_a_night_after_the_fit_masks_values_that_overflow_once_normalised(tmp_path, spark):
    """3e38 fits float32, but not once divided by speed's scale (≈ 0.3): masked and counted as
    unrepresentable on the nightly path (statistics already fitted), never ±inf in the blocks."""
    file = write_case(tmp_path, "clean")
    config = load_config(write_config(tmp_path / "conf.yaml",
                                      corpus_config(tmp_path / "home", file, channels=UNLIMITED)))
    stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)
    stats = load_stats(Paths.of(config).tensors)
    assert 3e38 / stats.scale[2] > FLT_MAX > 3e38
    with open(file, "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *with_value(clean_rows(), 7, "speed", "3e38")])
    summary = stages.prepare(config, DAY, DAY, spark=spark)
    assert summary["values_masked_by_reason"] == {"unrepresentable_value": 1} and summary["rows_kept"] == 20
    assert np.isfinite(block_values(config)).all()
    quarantine = lakehouse.read_table(Paths.of(config).lake, names.QUARANTINE).to_pandas()
    (record,) = quarantine[quarantine.reason == "unrepresentable_value"].itertuples()
    assert record.channel == "speed" and json.loads(record.source_row)["speed"] == "3e38"


def test_a_night_where_nothing_parses_keeps_no_block_quarantines_every_row_and_says_why(tmp_path, spark):
    """After the fit, a night of epoch-millisecond timestamps: prepared (its stale blocks go, its 20 rows are
    quarantined), its warnings say what could not be parsed; scoring it then says where to look."""
    file = write_case(tmp_path, "clean")
    config = load_config(write_config(tmp_path / "conf.yaml", corpus_config(tmp_path / "home", file)))
    stages.prepare(config, DAY, DAY, fit_stats=True, spark=spark)
    assert (Paths.of(config).tensors / f"date={DAY}").is_dir()
    with open(file, "w", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *_epoch(1000)])
    summary = stages.prepare(config, DAY, DAY, spark=spark)
    assert summary["rows_kept"] == 0 and summary["quarantined_by_reason"] == {"null_or_unparseable_timestamp": 20}
    assert summary["warnings"][0].startswith("no usable rows: 20 rows read, 0 kept; set aside: "
                                             "null_or_unparseable_timestamp 20; column 'time' holds e.g. "
                                             "'1767225600000', which is not a timestamp")
    assert "set source.timestamp_format: epoch_ms" in summary["warnings"][0]
    assert summary["blocks"] == 0 and not (Paths.of(config).tensors / f"date={DAY}").exists()
    quarantine = lakehouse.read_table(Paths.of(config).lake, names.QUARANTINE).to_pandas()
    assert len(quarantine) == 20 and set(quarantine.reason) == {"null_or_unparseable_timestamp"}
