"""The command line: one clear line for bad input, never a stack trace."""

import pytest
from typer.testing import CliRunner

from lstmad.cli import app
from lstmad.spark import session
from tests.conftest import tiny_config_dict, write_config


def test_prepare_without_raw_data_is_one_line(tmp_path):
    conf = write_config(tmp_path / "tiny.yaml", tiny_config_dict(tmp_path / "home"))
    result = CliRunner().invoke(app, ["prepare", "--conf", str(conf), "--date", "2026-01-03"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "no raw partitions for 2026-01-03" in result.output
    assert "Traceback" not in result.output


def test_bad_config_and_bad_date_name_the_problem(tmp_path):
    raw = tiny_config_dict(tmp_path / "home")
    raw["model"]["epochz"] = 3
    conf = write_config(tmp_path / "bad.yaml", raw)
    result = CliRunner().invoke(app, ["score", "--conf", str(conf), "--date", "2026-01-03"])
    assert result.exit_code == 2 and "unknown key 'model.epochz'" in result.output
    good = write_config(tmp_path / "good.yaml", tiny_config_dict(tmp_path / "home"))
    result = CliRunner().invoke(app, ["score", "--conf", str(good), "--date", "03/01/2026"])
    assert result.exit_code == 2 and "--date must be a date YYYY-MM-DD" in result.output


def test_score_without_a_champion_says_what_to_run(tmp_path):
    conf = write_config(tmp_path / "tiny.yaml", tiny_config_dict(tmp_path / "home"))
    result = CliRunner().invoke(app, ["score", "--conf", str(conf), "--date", "2026-01-03"])
    assert result.exit_code == 2 and "run lstmad train first" in result.output


def test_missing_java_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(session.JavaMissingError, match="Java 17\\+.*openjdk-17-jre-headless"):
        session.require_java()
