"""Configuration loading: defaults, validation errors that name the key and the file."""

import pytest

from lstmad.config import ConfigError, load_config
from tests.conftest import DEMO_CONF


def test_demo_config_loads_typed_values():
    config = load_config(DEMO_CONF)
    assert config.pipeline == "demo"
    assert len(config.source.channel_names) == 26
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


def test_tracking_location_is_per_pipeline_even_after_mlflow_set_its_variable(monkeypatch, tmp_path):
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; another pipeline must not inherit it.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    config = load_config(DEMO_CONF, {"home": str(tmp_path)})
    assert config.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'demo' / 'mlflow.db'}"
    assert config.artifact_location == (tmp_path.resolve() / "demo" / "mlruns").as_uri()
    monkeypatch.setenv("LSTMAD_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    server = load_config(DEMO_CONF, {"home": str(tmp_path)})
    assert server.tracking_uri == "http://mlflow:5000" and server.artifact_location is None


@pytest.mark.parametrize("step", [0, -60, 420])
def test_step_must_divide_a_day(tmp_path, step):
    from tests.conftest import tiny_config_dict, write_config

    raw = tiny_config_dict(tmp_path)
    raw["prepare"]["step_s"] = step
    with pytest.raises(ConfigError, match="prepare.step_s"):
        load_config(write_config(tmp_path / "c.yaml", raw))


@pytest.mark.parametrize("steps", [0, 26])
def test_residual_steps_must_fit_the_window(steps):
    # the demo's windows are 26 rows and it has no drivers: rows 2..26 can be forecast, so 1..25
    with pytest.raises(ConfigError, match=r"model\.residual_steps.*between 1 and 25"):
        load_config(DEMO_CONF, {"model.residual_steps": steps})
    fits = load_config(DEMO_CONF, {"model.residual_steps": 25, "model.detector": "lstm_forecaster"})
    assert fits.model.residual_steps == 25
    with pytest.raises(ConfigError, match=r"model\.residual_steps.*lstm_forecaster"):
        load_config(DEMO_CONF, {"model.residual_steps": 4, "model.detector": "pca_t2q"})



def test_scoring_chunk_reaches_the_forecaster_and_must_be_positive():
    from lstmad.detectors import build_detector

    with pytest.raises(ConfigError, match=r"model\.scoring_chunk.*at least 1"):
        load_config(DEMO_CONF, {"model.scoring_chunk": 0})
    with pytest.raises(ConfigError, match=r"model\.scoring_chunk.*lstm_forecaster"):
        load_config(DEMO_CONF, {"model.detector": "lstm_autoencoder", "model.scoring_chunk": 25})
    model = load_config(DEMO_CONF, {"model.detector": "lstm_forecaster", "model.scoring_chunk": 25}).model
    assert build_detector(model).params.scoring_chunk == 25


def test_residual_spread_needs_a_mahalanobis_forecaster_over_several_rows():
    from lstmad.detectors import build_detector

    mahalanobis = {"model.detector": "lstm_forecaster", "model.error_model": "mahalanobis", "model.residual_steps": 6}
    model = load_config(DEMO_CONF, {**mahalanobis, "model.residual_spread": True}).model
    assert build_detector(model).params.residual_spread is True
    for change in ({"model.residual_steps": 1}, {"model.error_model": "squared"}):
        with pytest.raises(ConfigError, match=r"model\.residual_spread.*mahalanobis"):
            load_config(DEMO_CONF, {**mahalanobis, "model.residual_spread": True, **change})


def test_frozen_channels_is_a_forecaster_setting_on_unless_turned_off():
    from lstmad.detectors import build_detector

    forecaster = load_config(DEMO_CONF, {"model.detector": "lstm_forecaster"}).model
    assert forecaster.frozen_channels is None and build_detector(forecaster).params.frozen_channels is True
    off = load_config(DEMO_CONF, {"model.detector": "lstm_forecaster", "model.frozen_channels": False}).model
    assert build_detector(off).params.frozen_channels is False
    assert load_config(DEMO_CONF, {"model.detector": "pca_t2q"}).model.frozen_channels is None  # unset: no refusal
    with pytest.raises(ConfigError, match=r"model\.frozen_channels.*lstm_forecaster or lstm_autoencoder, not pca_t2q"):
        load_config(DEMO_CONF, {"model.frozen_channels": True, "model.detector": "pca_t2q"})
    with pytest.raises(ConfigError, match=r"model\.frozen_channels"):
        load_config(DEMO_CONF, {"model.frozen_channels": "yes"})


def test_error_regimes_are_a_mahalanobis_forecaster_setting():
    forecaster = {"model.detector": "lstm_forecaster", "model.error_model": "mahalanobis"}
    assert load_config(DEMO_CONF, {**forecaster, "model.error_regimes": 10}).model.error_regimes == 10
    with pytest.raises(ConfigError, match=r"model\.error_regimes' must be 0 .* or at least 2, got 1"):
        load_config(DEMO_CONF, {**forecaster, "model.error_regimes": 1})
    with pytest.raises(ConfigError, match=r"model\.error_regimes' applies to .* not lstm_forecaster with squared"):
        load_config(DEMO_CONF, {**forecaster, "model.error_model": "squared", "model.error_regimes": 4})


def test_driver_sets_name_channels_of_the_source_each_leaving_a_response():
    forecaster = {"model.detector": "lstm_forecaster"}
    config = load_config(DEMO_CONF, {**forecaster, "model.driver_sets": [["wind_speed"], ["wind_speed", "power"]]})
    assert config.model.driver_sets == (("wind_speed",), ("wind_speed", "power"))
    every = list(config.source.channel_names)
    for sets, message in (([["wind_speed"], ["nope"]], r"model\.driver_sets\[1\].*'nope'"),
                          ([["power", "power"]], r"model\.driver_sets\[0\].*twice"),
                          ([every], r"model\.driver_sets\[0\].*every channel a driver")):
        with pytest.raises(ConfigError, match=message):
            load_config(DEMO_CONF, {**forecaster, "model.driver_sets": sets})
    # a forecaster must be among what is tried: the detector itself, or a candidate
    with pytest.raises(ConfigError, match=r"model\.driver_sets.*needs a forecaster"):
        load_config(DEMO_CONF, {"model.detector": "lstm_autoencoder", "model.driver_sets": [["wind_speed"]]})
    load_config(DEMO_CONF, {"model.detector": "lstm_autoencoder", "model.driver_sets": [["wind_speed"]],
                            "model.candidates": ["pca_t2q", "lstm_forecaster_mahalanobis"]})
    # two sets whose names MLflow would log alike; a set too long for a metric name
    # (x's lag-fault AUROC and x_lag's AUROC would both be candidate_..._x_lag_auroc)
    channels = ["wind speed", "wind_speed", "w" * 230, "x", "x_lag", "power"]
    for sets, message in (([["wind speed"], ["wind_speed"]], r"model\.driver_sets\[1\].*same MLflow metric name"),
                          ([["x"], ["x_lag"]], r"model\.driver_sets\[1\].*x_lag_auroc"),
                          ([["w" * 230]], r"model\.driver_sets\[0\].*250 characters")):
        with pytest.raises(ConfigError, match=message):
            load_config(DEMO_CONF, {**forecaster, "source.channels": channels, "model.driver_sets": sets})


def test_residual_steps_are_bounded_by_the_set_without_drivers_among_those_tried(tmp_path):
    from tests.conftest import tiny_config_dict, write_config

    # windows of 12 rows: a normal-behaviour model predicts rows 1..12, a plain forecaster rows 2..12
    raw = tiny_config_dict(tmp_path)
    raw["source"]["channels"][0] = {"name": raw["source"]["channels"][0], "role": "driver"}
    conf = write_config(tmp_path / "c.yaml", raw)
    assert load_config(conf, {"model.residual_steps": 12, "model.driver_sets": [["power"]]}).model.residual_steps == 12
    with pytest.raises(ConfigError, match=r"model\.residual_steps.*between 1 and 11"):
        load_config(conf, {"model.residual_steps": 12, "model.driver_sets": [["power"], []]})


def test_a_source_with_drivers_marks_both_tensor_channels_of_a_circular_driver():
    import dataclasses

    source = load_config(DEMO_CONF).source
    # wind_direction (4th) as an angle: tensor channels wind_speed, generator_speed, power, wind_direction:sin,
    # wind_direction:cos, wind_direction_mean, ...
    angle = dataclasses.replace(source.channels[3], period=360.0)
    source = dataclasses.replace(source, channels=source.channels[:3] + (angle,) + source.channels[4:])
    driven = source.with_drivers(("wind_direction", "power"))
    assert driven.driver_indices == (2, 3, 4)
    assert [c.role for c in driven.channels[:5]] == ["response", "response", "driver", "driver", "response"]
    assert driven.with_drivers(()).driver_indices == ()
