"""The synthetic wind farm: deterministic, physically coupled, icing visible where labelled."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from lstmad.data.synthetic import CHANNELS, FarmSpec, generate_farm, power_curve, write_landing_table


def test_deterministic_and_shaped():
    spec = FarmSpec(turbines=2, days=3, step_s=600, seed=5)
    a, b = generate_farm(spec), generate_farm(spec)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 2 * 3 * 144 and list(a.columns) == ["timestamp", "turbine_id", *CHANNELS, "label"]
    assert len(CHANNELS) == 26
    assert not generate_farm(FarmSpec(turbines=2, days=3, step_s=600, seed=6)).equals(a)


def test_physics_and_icing_signature():
    farm = generate_farm(FarmSpec(turbines=4, days=20, step_s=300, seed=9))
    normal, iced = farm[farm.label == 0], farm[farm.label == 1]
    assert len(iced) > 0
    # power follows the curve of wind speed when not iced
    residual = normal.power - power_curve(normal.wind_speed.to_numpy())
    assert abs(residual.median()) < 40
    # above rated wind the blades pitch
    assert normal[normal.wind_speed > 15].pitch1_angle.mean() > normal[normal.wind_speed.between(5, 10)].pitch1_angle.mean() + 5
    # icing: cold, power deficit against the curve, more vibration
    assert iced.environment_tmp.mean() < normal.environment_tmp.mean()
    loaded = iced.wind_speed > 6
    deficit = 1 - iced.power[loaded].sum() / power_curve(iced.wind_speed[loaded].to_numpy()).sum()
    assert deficit > 0.15
    assert iced.acc_x.mean() > normal.acc_x.mean()


def test_landing_table_is_partitioned_by_date(tmp_path):
    farm = generate_farm(FarmSpec(turbines=1, days=2, step_s=3600, seed=1))
    files = write_landing_table(farm, tmp_path)
    assert [f.parent.name for f in files] == ["date=2026-01-01", "date=2026-01-02"]
    assert sum(len(pd.read_parquet(f)) for f in files) == 48


def test_landing_files_hold_row_groups_of_64_ki_rows_and_plain_encoded_readings(tmp_path):
    import pyarrow.parquet as pq

    # 50 turbines × 1,440 minutes = 72,000 rows in one day: one full row group of 65,536 rows and the rest
    farm = generate_farm(FarmSpec(turbines=50, days=1, step_s=60, seed=2))
    (file,) = write_landing_table(farm, tmp_path)
    meta = pq.ParquetFile(file).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [65_536, 72_000 - 65_536]
    columns = {meta.row_group(0).column(j).path_in_schema: meta.row_group(0).column(j) for j in range(meta.num_columns)}
    assert columns["turbine_id"].has_dictionary_page
    assert not any(columns[name].has_dictionary_page for name in CHANNELS)
    back = pd.read_parquet(file)
    pd.testing.assert_frame_equal(back[list(CHANNELS)], farm[list(CHANNELS)].reset_index(drop=True))


def test_a_regime_change_moves_the_recalibrated_channels_and_warms_the_temperatures_from_its_day():
    base = FarmSpec(turbines=1, days=4, step_s=600, seed=3)
    before = generate_farm(base)
    first = before.timestamp < pd.Timestamp(base.start, tz="UTC") + pd.Timedelta(days=2)
    recalibrated = generate_farm(dataclasses.replace(base, change_day=2, recalibrated_channels=("acc_x",),
                                                     recalibration_offset_sd=5.0))
    pd.testing.assert_frame_equal(before[first], recalibrated[first])  # nothing moves before the change day
    np.testing.assert_allclose((recalibrated.acc_x - before.acc_x)[~first], 5.0 * before.acc_x[first].std(ddof=0),
                               rtol=1e-9)
    assert recalibrated.drop(columns="acc_x").equals(before.drop(columns="acc_x"))
    warmer = generate_farm(dataclasses.replace(base, change_day=2, ambient_shift_c=6.0))
    warming = (warmer.environment_tmp - before.environment_tmp)
    assert warming[first].abs().max() < 1e-9 and warming[~first].mean() == pytest.approx(6.0, abs=0.05)
    with pytest.raises(ValueError, match="recalibrated_channels: no channel 'nope'"):
        generate_farm(dataclasses.replace(base, change_day=1, recalibrated_channels=("nope",)))
