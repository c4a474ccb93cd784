"""Configuration loading: defaults, validation errors that name the key and the file."""

import pytest

from lstmad.config import ConfigError, load_config
from tests.conftest import DEMO_CONF


def test_demo_config_loads_typed_values():
    config = load_config(DEMO_CONF)
    assert config.pipeline == "demo"
    assert len(config.source.channels) == 26
    assert config.prepare.window == 26 and config.prepare.smoothing_half_width == 5
    assert config.model.hidden_sizes == (64, 32)
    assert config.train.start.isoformat() == "2026-01-01"


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEMO_CONF.read_text().replace("  epochs: 12", "  epochz: 12"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "model.epochz" in str(error.value) and str(path) in str(error.value)


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEMO_CONF.read_text().replace("  window: 26 ", "  window: twenty-six "))
    with pytest.raises(ConfigError, match=r"prepare\.window.*integer"):
        load_config(path)


def test_wrong_choice_and_bad_date(tmp_path):
    with pytest.raises(ConfigError, match=r"delta\.engine"):
        load_config(DEMO_CONF, {"delta.engine": "parquet"})
    with pytest.raises(ConfigError, match=r"train\.start.*date"):
        load_config(DEMO_CONF, {"train.start": "yesterday"})


def test_unknown_top_level_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(DEMO_CONF, {"trian.start": "2026-01-01"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
