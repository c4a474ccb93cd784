"""Circular channels (lstmad.transforms.circular): an angle enters the tensors as its sine and cosine, roles and
shares follow the source channel, and the configuration names what is wrong with a period."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmad.config import ConfigError, load_config
from lstmad.transforms import circular
from tests.conftest import tiny_config_dict, write_config

PERIODS = (360.0, None, 360.0)


def test_an_angle_becomes_its_sine_and_cosine_and_a_missing_one_stays_missing():
    values = np.array([[359.0, 5.0, 90.0],
                       [1.0, 6.0, -90.0],
                       [np.nan, 7.0, 180.0]])
    out = circular.to_tensor_values(values, PERIODS)
    r = math.radians
    expected = np.array([[math.sin(r(359)), math.cos(r(359)), 5.0, 1.0, 0.0],
                         [math.sin(r(1)), math.cos(r(1)), 6.0, -1.0, 0.0],
                         [np.nan, np.nan, 7.0, 0.0, -1.0]])
    np.testing.assert_allclose(out, expected, atol=1e-12)
    # 359° and 1° are 2° apart, not 358°: the largest step across the wrap is 2π·2/360
    assert np.abs(out[1, :2] - out[0, :2]).max() < 2 * math.pi * 2 / 360
    linear = np.array([[1.0, 2.0]])
    assert circular.to_tensor_values(linear, (None, None)) is linear


def test_names_sources_and_bounds_follow_the_source_channels():
    names = ("Wa", "P", "Ya")
    assert circular.tensor_names(names, PERIODS) == ("Wa:sin", "Wa:cos", "P", "Ya:sin", "Ya:cos")
    assert circular.source_index(PERIODS).tolist() == [0, 0, 1, 2, 2]
    assert circular.source_names(("Wa:sin", "Wa:cos", "P", "Ya:sin", "Ya:cos")) == names
    bounds = circular.source_bounds(np.array([1.0, 2.0, 3e30, 4.0, 5.0]), PERIODS)
    assert bounds.tolist() == [math.inf, 3e30, math.inf]


def test_shares_fold_back_onto_the_source_channels():
    shares = np.array([[0.1, 0.2, 0.3, 0.15, 0.25],
                       [0.0, 0.0, 1.0, 0.0, 0.0]])
    folded = circular.fold_shares(shares, ("Wa:sin", "Wa:cos", "P", "Ya:sin", "Ya:cos"))
    np.testing.assert_allclose(folded, [[0.3, 0.3, 0.4], [0.0, 1.0, 0.0]])
    plain = np.array([[0.5, 0.5]])
    assert circular.fold_shares(plain, ("a", "b")) is plain


def circular_config(tmp_path, **changes):
    raw = tiny_config_dict(tmp_path)
    channels = raw["source"]["channels"]
    raw["source"]["channels"] = [{"name": c} if isinstance(c, str) else c for c in channels]
    raw["source"]["channels"][0].update(period=360, role="driver")
    raw["source"]["channels"][-1].update(changes)
    raw["model"]["detector"] = "lstm_forecaster"
    return write_config(tmp_path / "c.yaml", raw)


def test_the_configuration_expands_circular_channels_with_their_role(tmp_path):
    source = load_config(circular_config(tmp_path)).source
    first = source.channels[0].name
    assert source.tensor_channels[:2] == (f"{first}:sin", f"{first}:cos")
    assert len(source.tensor_channels) == len(source.channels) + 1
    assert source.driver_indices == (0, 1)  # both of the driver's tensor channels drive


@pytest.mark.parametrize("period", [0, -360, "north"])
def test_a_period_that_is_not_a_positive_number_is_refused_by_key(tmp_path, period):
    with pytest.raises(ConfigError, match=r"source\.channels\[\d+\]\.period"):
        load_config(circular_config(tmp_path, period=period))


def test_a_channel_named_like_a_sine_is_refused(tmp_path):
    raw = tiny_config_dict(tmp_path)
    first = raw["source"]["channels"][0]
    name = first if isinstance(first, str) else first["name"]
    raw["source"]["channels"] = [{"name": name, "period": 360}, f"{name}:sin", *raw["source"]["channels"][1:]]
    with pytest.raises(ConfigError, match=rf"source\.channels\[1\]'.*'{name}:sin' ends as a circular channel's sine"):
        load_config(write_config(tmp_path / "c.yaml", raw))


def test_init_takes_a_wrapping_channel_for_an_angle_and_a_wide_ramp_for_none(tmp_path):
    from lstmad.io.source_profile import read_stored_table
    from lstmad.onboarding import config_text, inspect_table

    # hand-made: a heading turning 20° every 10 minutes wraps at 360 five times in 100 rows (steps of −340);
    # the level climbs 0 → 297 and falls back once (a refill); a set-point switches between 20 and 300 every
    # 5 rows (steps of 280, but a range of 280: no angle)
    heading = [(20 * k) % 360 for k in range(100)]
    level = [3.0 * (k % 100) for k in range(100)]
    level[50:] = [3.0 * (k - 50) for k in range(50, 100)]
    setpoint = [20 if (k // 5) % 2 else 300 for k in range(100)]
    rows = ["time,heading_deg,level_mm,setpoint"] + [f"2026-01-01T{k // 6:02d}:{10 * (k % 6):02d}:00Z,{h},{v},{p}"
                                                      for k, (h, v, p) in enumerate(zip(heading, level, setpoint))]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(rows) + "\n")
    findings = inspect_table(read_stored_table(path))
    found = {c.name: (c.period, c.wraps) for c in findings.channels}
    assert found == {"heading_deg": (360.0, 5), "level_mm": (None, 0), "setpoint": (None, 0)}
    assert "period: 360" in next(line for line in config_text(findings, "x").splitlines() if "heading_deg" in line)


def init_config_text(tmp_path, header: str, row_of) -> str:
    """``lstmad init``'s configuration text for a hand-made 10-minute turbine export of 200 rows: ``header``
    names the columns after the timestamp, ``row_of(k, wind speed)`` gives row k's values as text."""
    from lstmad.io.source_profile import read_stored_table
    from lstmad.onboarding import config_text, inspect_table

    rows = [f"timestamp,{header}"]
    for k in range(200):
        speed = 4 + 8 * abs(math.sin(k / 30))
        stamp = np.datetime64("2026-03-01T00:00") + np.timedelta64(10 * k, "m")
        rows.append(f"{stamp}Z,{row_of(k, speed)}")
    path = tmp_path / "turbine.csv"
    path.write_text("\n".join(rows) + "\n")
    return config_text(inspect_table(read_stored_table(path)), "turbine")


def test_init_makes_a_normal_behaviour_model_when_names_say_what_drives_the_asset(tmp_path):
    # a wind speed, a wind direction that wraps, a power that follows the wind and a bearing temperature
    text = init_config_text(tmp_path, "WindSpeed_mps,wind_dir_deg,power_kw,bearing_temp_c",
                            lambda k, speed: f"{speed:.2f},{(15 * k) % 360},{min(2000.0, 1.2 * speed ** 3):.1f},"
                                             f"{40 + k % 7}")
    conf = tmp_path / "turbine.yaml"
    conf.write_text(text)
    config = load_config(conf)
    roles = {c.name: (c.role, c.period) for c in config.source.channels}
    assert roles == {"WindSpeed_mps": ("driver", None), "wind_dir_deg": ("driver", 360.0),
                     "power_kw": ("response", None), "bearing_temp_c": ("response", None)}
    assert (config.model.error_model, config.model.residual_steps) == ("mahalanobis", 12)
    assert config.operating_states == ()  # the cut-in state is only suggested, commented out


def test_init_suggests_the_cut_in_and_stopped_states_commented_out_and_they_load_once_uncommented(tmp_path):
    # a wind speed, a blade pitch angle (feathered now and then) and a power
    text = init_config_text(tmp_path, "Ws_avg,Ba_avg,P_avg", lambda k, speed: (
        f"{speed:.2f},{90.0 if k % 50 < 3 else -1.0},{min(2000.0, 1.2 * speed ** 3):.1f}"))
    conf = tmp_path / "turbine.yaml"
    conf.write_text(text)
    assert load_config(conf).operating_states == ()
    # uncommented by hand, as the comment asks: the two states, in order, with conditions on the named columns
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("# operating_states:"))
    lines[first:first + 3] = [line[2:] for line in lines[first:first + 3]]
    conf.write_text("\n".join(lines) + "\n")
    states = [(s.name, s.when) for s in load_config(conf).operating_states]
    assert states == [("below_cut_in", "`Ws_avg` < 3.5"), ("stopped", "`Ba_avg` > 45 AND `P_avg` < 50")]


def test_scored_shares_name_the_source_channels_a_circular_one_summed_from_its_sine_and_cosine():
    import pyarrow as pa

    from lstmad.detectors.pca_t2q import PCAT2QDetector
    from lstmad.serving.bundle import ModelBundle
    from lstmad.serving.scoring import model_windows, scored_blocks
    from lstmad.transforms.blocks import BLOCK_SCHEMA, build_blocks
    from lstmad.transforms.series import NormalisationStats, segment_ids

    window, step, n = 8, 600, 600
    rng = np.random.default_rng(3)
    degrees = np.cumsum(rng.normal(0, 20, n)) % 360
    values = np.column_stack([*circular.to_tensor_values(degrees[:, None], (360.0,)).T, rng.normal(size=n)])
    channels = ("yaw:sin", "yaw:cos", "power")
    ts = 1_767_225_600_000_000 + np.arange(n, dtype=np.int64) * step * 1_000_000  # 2026-01-01 on
    stats = NormalisationStats("zscore", channels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    blocks = pa.Table.from_pylist(build_blocks("T1", ts, values, segment_ids(ts, step), None, window, 4096, step,
                                               stats.stats_id, int(ts[0]), int(ts[-1]) + 1), schema=BLOCK_SCHEMA)
    detector = PCAT2QDetector()
    windows = model_windows(ModelBundle(detector, channels, window, step, stats, 0.0, "percentile", 0.01, {}),
                            blocks, {})
    detector.fit(windows)
    bundle = ModelBundle(detector, channels, window, step, stats, 0.0, "percentile", 0.01, {})
    threshold = float(np.quantile(detector.score(windows), 0.9))
    table, shares = scored_blocks(bundle, blocks, {stats.stats_id: stats}, threshold=threshold)
    flags = table.column("flag").to_numpy(zero_copy_only=False)
    tensor_shares = detector.channel_shares(windows)[flags]
    expected = np.column_stack([tensor_shares[:, 0] + tensor_shares[:, 1], tensor_shares[:, 2]])
    assert bundle.reported_channels == ("yaw", "power") and flags.sum() > 10
    np.testing.assert_allclose(shares, expected, rtol=1e-12)
    for pairs, row in zip([p for p, f in zip(table.column("channel_shares").to_pylist(), flags) if f], expected):
        assert {p["channel"]: p["share"] for p in pairs} == pytest.approx({"yaw": row[0], "power": row[1]})


def test_init_with_labels_suggests_each_driver_alone_and_none_as_other_driver_sets_commented_out(tmp_path):
    # a wind speed and an outdoor temperature drive a power; the label column makes an evaluation range
    text = init_config_text(tmp_path, "Ws_avg,Ot_avg,P_avg,label", lambda k, speed: (
        f"{speed:.2f},{5 + k % 3},{min(2000.0, 1.2 * speed ** 3):.1f},{int(k % 97 == 0)}"))
    conf = tmp_path / "turbine.yaml"
    conf.write_text(text)
    assert load_config(conf).model.driver_sets == ()
    conf.write_text(text.replace("  # driver_sets:", "  driver_sets:"))
    assert load_config(conf).model.driver_sets == (("Ws_avg",), ("Ot_avg",), ())
