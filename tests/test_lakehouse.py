"""Delta writes: partition replacement with delta-rs, and the delta-spark switch failing clearly without jars."""

import pyarrow as pa
import pytest

from lstmad import names
from lstmad.io import lakehouse


def drift_rows(date, n):
    return pa.Table.from_pylist([{names.SCORED_DATE: date, names.MODEL_VERSION: "1", "n_rows": i, "max_psi": 0.1,
                                  "max_psi_channel": "a", "psi_by_channel": "{}", "alarm_rate": 0.0,
                                  "expected_alarm_rate": 0.05, "retrain": False, "retrain_reasons": ""}
                                 for i in range(n)], schema=lakehouse.SCHEMAS[names.DRIFT_METRICS])


def test_replace_partitions_touches_only_given_dates(tmp_path):
    lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-01", 2), ["2026-01-01"])
    lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-02", 3), ["2026-01-02"])
    lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-02", 1), ["2026-01-02"])
    table = lakehouse.read_table(tmp_path, names.DRIFT_METRICS).to_pandas()
    assert table.groupby(names.SCORED_DATE).size().to_dict() == {"2026-01-01": 2, "2026-01-02": 1}
    # an empty replacement empties that date only
    lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-02", 0), ["2026-01-02"])
    assert lakehouse.read_table(tmp_path, names.DRIFT_METRICS).num_rows == 2
    assert lakehouse.table_version(tmp_path, names.DRIFT_METRICS) == 3


def test_rows_outside_the_replaced_partitions_are_refused(tmp_path):
    with pytest.raises(lakehouse.LakehouseError, match="outside the dates being replaced"):
        lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-05", 1), ["2026-01-01"])
    assert lakehouse.table_version(tmp_path, names.DRIFT_METRICS) is None


@pytest.mark.spark
def test_delta_spark_without_jars_fails_with_one_clear_message(tmp_path, spark):
    with pytest.raises(lakehouse.LakehouseError) as error:
        lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-01", 1), ["2026-01-01"],
                                     engine="delta-spark", spark=spark)
    message = str(error.value)
    assert "Delta Lake jars are not on the Spark classpath" in message and "delta.engine: delta-rs" in message
    assert not (tmp_path / names.DRIFT_METRICS / "_delta_log").exists()


def test_a_table_from_an_older_layout_is_refused_before_writing(tmp_path):
    from deltalake import write_deltalake

    old = drift_rows("2026-01-01", 1).drop_columns(["retrain_reasons"])  # a column this version writes is missing
    (tmp_path / names.DRIFT_METRICS).mkdir()
    write_deltalake(str(tmp_path / names.DRIFT_METRICS), old, partition_by=[names.SCORED_DATE])
    with pytest.raises(lakehouse.LakehouseError, match=r"drift_metrics at .* partitioned by \['scored_date'\], "
                                                        r"but this lstmad writes .* partitioned by nothing"):
        lakehouse.replace_partitions(tmp_path, names.DRIFT_METRICS, drift_rows("2026-01-02", 1), ["2026-01-02"])
    assert lakehouse.table_version(tmp_path, names.DRIFT_METRICS) == 0


def test_data_file_statistics_bound_every_value_or_are_left_out(tmp_path):
    import json

    import pyarrow as pa

    rows = pa.table({names.ASSET: ["a", "b"], names.TIMESTAMP: pa.array([1_000_500, 2_000_999], lakehouse.UTC_US),
                     names.SCORE: [0.5, 2.0]})
    stats = lakehouse.file_stats(rows)
    assert stats["minValues"] == {names.ASSET: "a", names.TIMESTAMP: "1970-01-01T00:00:01.000Z", names.SCORE: 0.5}
    # the maximum is rounded up to the millisecond so that it still bounds 2.000999 s
    assert stats["maxValues"] == {names.ASSET: "b", names.TIMESTAMP: "1970-01-01T00:00:02.001Z", names.SCORE: 2.0}
    for bad in (float("nan"), float("inf")):
        stats = lakehouse.file_stats(rows.set_column(2, names.SCORE, pa.array([0.5, bad])))
        assert set(stats) == {"numRecords", "nullCount"}  # no bounds at all: a missing one reads as null
        json.dumps(stats, allow_nan=False)
