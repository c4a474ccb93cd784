"""Whether a night of raw data has landed (lstmad.io.landing.missing_night), on hand-built landing paths: the
folder of a partition, the timestamp statistics of an unpartitioned Parquet source and of a Delta table."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from lstmad.config import SourceConfig
from lstmad.io.landing import missing_night

UTC = dt.timezone.utc


def stamps(first: dt.datetime, last: dt.datetime, step_s: int = 600) -> pa.Table:
    n = int((last - first).total_seconds() // step_s) + 1
    times = [first + dt.timedelta(seconds=step_s * i) for i in range(n)]
    return pa.table({"ts": pa.array(times, pa.timestamp("us", tz="UTC")), "x": [float(i) for i in range(n)],
                     "date": [t.date().isoformat() for t in times]})


def test_a_partition_needs_a_data_file_with_rows(tmp_path):
    source = SourceConfig(path=str(tmp_path), format="parquet", timestamp_column="ts", partition_column="date",
                          asset_constant="A")
    partition = tmp_path / "date=2026-01-20"
    partition.mkdir()
    pq.write_table(stamps(dt.datetime(2026, 1, 20, tzinfo=UTC), dt.datetime(2026, 1, 20, tzinfo=UTC)).slice(0, 0),
                   partition / "empty.parquet")
    (partition / "zero.parquet").write_bytes(b"")
    assert missing_night(source, tmp_path, "2026-01-20", 600) == (
        f"raw data for 2026-01-20 has not landed: {partition}: only empty *.parquet files in it")
    pq.write_table(stamps(dt.datetime(2026, 1, 20, tzinfo=UTC), dt.datetime(2026, 1, 20, 23, 50, tzinfo=UTC)),
                   partition / "part-0.parquet")
    assert missing_night(source, tmp_path, "2026-01-20", 600) is None


def test_an_unpartitioned_parquet_file_has_landed_when_its_statistics_reach_the_night_s_last_step(tmp_path):
    source = SourceConfig(path=str(tmp_path), format="parquet", timestamp_column="ts", asset_constant="A")
    file = tmp_path / "scada.parquet"
    # two row groups; the archive ends in the middle of 2026-01-21
    pq.write_table(stamps(dt.datetime(2026, 1, 19, tzinfo=UTC), dt.datetime(2026, 1, 21, 12, tzinfo=UTC)), file,
                   row_group_size=100)
    assert missing_night(source, file, "2026-01-20", 600) is None
    assert missing_night(source, file, "2026-01-21", 600) == (
        f"raw data for 2026-01-21 has not landed: {file}: its latest timestamp is 2026-01-21 12:00 UTC, the night "
        "ends at 2026-01-21 23:50 UTC")
    # a folder new files land in: the newest file decides
    folder = tmp_path / "landing"
    folder.mkdir()
    pq.write_table(stamps(dt.datetime(2026, 1, 21, 12, 10, tzinfo=UTC), dt.datetime(2026, 1, 21, 23, 50, tzinfo=UTC)),
                   folder / "b.parquet")
    file.rename(folder / "a.parquet")
    assert missing_night(source, folder, "2026-01-21", 600) is None


def test_a_delta_table_by_partition_or_by_statistics(tmp_path):
    table = stamps(dt.datetime(2026, 1, 20, tzinfo=UTC), dt.datetime(2026, 1, 20, 23, 50, tzinfo=UTC))
    write_deltalake(str(tmp_path / "flat"), table)
    write_deltalake(str(tmp_path / "by_date"), table, partition_by=["date"])
    flat = SourceConfig(format="delta", timestamp_column="ts", asset_constant="A")
    by_date = SourceConfig(format="delta", timestamp_column="ts", asset_constant="A", partition_column="date")
    assert missing_night(flat, tmp_path / "flat", "2026-01-20", 600) is None
    assert "its latest timestamp is 2026-01-20 23:50 UTC" in missing_night(flat, tmp_path / "flat", "2026-01-21", 600)
    assert missing_night(by_date, tmp_path / "by_date", "2026-01-20", 600) is None
    assert missing_night(by_date, tmp_path / "by_date", "2026-01-21", 600) == (
        f"raw data for 2026-01-21 has not landed: {tmp_path / 'by_date'}: no file in partition date=2026-01-21")


def test_sources_that_cannot_be_told_without_reading_rows_count_as_landed_and_a_missing_path_is_an_error(tmp_path):
    csv_file = tmp_path / "scada.csv"
    csv_file.write_text("ts,x\n2026-01-01 00:00:00,1.0\n")
    assert missing_night(SourceConfig(format="csv", timestamp_column="ts", asset_constant="A"), csv_file,
                         "2026-01-20", 600) is None
    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"ts": ["2026-01-01 00:00:00"], "x": [1.0]}), strings)
    assert missing_night(SourceConfig(format="parquet", timestamp_column="ts", asset_constant="A"), strings,
                         "2026-01-20", 600) is None
    with pytest.raises(FileNotFoundError, match="absent: the raw landing path"):
        missing_night(SourceConfig(format="parquet", asset_constant="A"), tmp_path / "absent", "2026-01-20", 600)
