"""The synthetic wind farm: deterministic, physically coupled, icing visible where labelled."""

import pandas as pd

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
