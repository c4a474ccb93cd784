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
    with pytest.raises(ConfigError, match=rf"'{name}:sin' is also the name of a circular channel's sine"):
        load_config(write_config(tmp_path / "c.yaml", raw))


def test_init_takes_a_wrapping_channel_for_an_angle_and_a_wide_ramp_for_none(tmp_path):
    from lstmad.io.source_profile import read_stored_table
    from lstmad.onboarding import config_text, inspect_table

    # hand-made: a heading turning 20° every 10 minutes wraps at 360 five times in 100 rows; the level
    # climbs 0 → 300 and falls back once (a refill: one jump of 297, not an angle's repeated wraps)
    heading = [(20 * k) % 360 for k in range(100)]
    level = [3.0 * (k % 100) for k in range(100)]
    level[50:] = [3.0 * (k - 50) for k in range(50, 100)]
    rows = ["time,heading_deg,level_mm"] + [f"2026-01-01T{k // 6:02d}:{10 * (k % 6):02d}:00Z,{h},{v}"
                                             for k, (h, v) in enumerate(zip(heading, level))]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(rows) + "\n")
    findings = inspect_table(read_stored_table(path))
    found = {c.name: (c.period, c.wraps) for c in findings.channels}
    assert found == {"heading_deg": (360.0, 5), "level_mm": (None, 0)}
    assert "period: 360" in next(line for line in config_text(findings, "x").splitlines() if "heading_deg" in line)
