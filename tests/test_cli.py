"""The command line: one clear line for bad input, never a stack trace."""

import json
from pathlib import Path

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


def test_an_unexpected_error_is_one_line_with_its_traceback_in_a_log_file(tmp_path, monkeypatch):
    from lstmad import stages

    def prepare(*args, **kwargs):  # a stage failing in a way nobody anticipated
        raise RuntimeError("column `x` exploded\n  in a second line")

    monkeypatch.setattr(stages, "prepare", prepare)
    conf = write_config(tmp_path / "tiny.yaml", tiny_config_dict(tmp_path / "home"))
    result = CliRunner().invoke(app, ["prepare", "--conf", str(conf), "--date", "2026-01-03"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output
    line = result.output.strip()
    assert line.startswith("error: prepare failed unexpectedly: RuntimeError: column `x` exploded in a second line")
    log_file = line.split("traceback in ")[1].rstrip(")")
    assert log_file.startswith(str(tmp_path / "home" / "tiny" / "logs"))
    text = open(log_file).read()
    assert text.startswith("Traceback") and "exploded" in text and "def prepare" not in text


def test_the_console_script_turns_any_escaping_error_into_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from lstmad import cli

    def broken():
        raise KeyError("nobody expected this")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setattr(sys, "argv", ["lstmad", "tables", "--conf", "x.yaml"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith("error: tables failed unexpectedly: KeyError: 'nobody expected this' (traceback in ")


def test_a_benchmark_option_given_to_a_benchmark_it_does_not_apply_to_is_one_line(tmp_path):
    out = str(tmp_path / "x.json")
    result = CliRunner().invoke(app, ["benchmark", "skab", "--shift-correction", "--json", out])
    assert result.exit_code == 2 and "--shift-correction applies to farm-nights" in result.output
    result = CliRunner().invoke(app, ["benchmark", "icing", "--per-asset-threshold", "--json", out])
    assert result.exit_code == 2 and "--per-asset-threshold applies to farm-nights and scada-injection" in result.output
    result = CliRunner().invoke(app, ["benchmark", "skab", "--calibration-days", "4", "--json", out])
    assert result.exit_code == 2 and "--calibration-days applies to farm-nights, not skab" in result.output
    result = CliRunner().invoke(app, ["benchmark", "farm-nights", "--calibration-days", "4", "--cross-fit-folds", "5",
                                      "--json", out])
    assert result.exit_code == 2 and "both choose the calibration windows" in result.output
    result = CliRunner().invoke(app, ["benchmark", "farm-nights", "--calibration-range", "2015-07-01..2015-12-31",
                                      "--json", out])
    assert result.exit_code == 2 and "--calibration-range applies to scada-injection, not farm-nights" in result.output
    result = CliRunner().invoke(app, ["benchmark", "scada-injection", "--calibration-range", "2015-12-31..2015-07-01",
                                      "--json", out])
    assert result.exit_code == 2 and "must be START..END (ISO dates, in order), got '2015-12-31..2015-07-01'" in result.output
    result = CliRunner().invoke(app, ["benchmark", "farm-nights", "--labelled-range", "2014-10-01..2014-12-31",
                                      "--json", out])
    assert result.exit_code == 2 and "--labelled-range applies to scada-injection, not farm-nights" in result.output
    result = CliRunner().invoke(app, ["benchmark", "scada-injection", "--labelled-range", "2014-10-01", "--json", out])
    assert result.exit_code == 2 and "--labelled-range must be START..END (ISO dates, in order)" in result.output
    # the labelled range takes days of the training year, after its first: training ends the day before
    for days in ("2015-01-01..2015-02-01", "2014-01-01..2014-03-31"):
        result = CliRunner().invoke(app, ["benchmark", "scada-injection", "--labelled-range", days, "--json", out])
        assert result.exit_code == 2 and "the labelled range must lie within the training year" in result.output
    result = CliRunner().invoke(app, ["benchmark", "skab", "--max-drivers", "3", "--json", out])
    assert result.exit_code == 2 and "--max-drivers applies to skab-roles, not skab" in result.output
    result = CliRunner().invoke(app, ["benchmark", "skab-roles", "--models", "pca_t2q", "--json", out])
    assert result.exit_code == 2 and "--models does not apply to skab-roles" in result.output
    result = CliRunner().invoke(app, ["benchmark", "skab", "--threads", "-1", "--json", out])
    assert result.exit_code == 2 and "--threads must be 0 (torch's default) or more, got -1" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.json").exists()


def test_a_benchmark_records_the_torch_threads_it_ran_with(tmp_path, monkeypatch):
    # the SVDD family's and the convolutions' figures move with the thread count: it belongs to the JSON
    import torch

    from lstmad.benchmarks.common import write_report

    before = torch.get_num_threads()
    monkeypatch.setenv("LSTMAD_DATA_DIR", str(tmp_path))  # no skab/ there: the run stops before any work
    try:
        result = CliRunner().invoke(app, ["benchmark", "skab", "--threads", "1", "--json", str(tmp_path / "x.json")])
        assert result.exit_code == 2 and "anomaly-free run is missing" in result.output
        assert torch.get_num_threads() == 1
        written = write_report("threads", {"models": {}}, tmp_path / "r.json", "", {})
        assert json.loads(Path(written["files"]["json"]).read_text())["machine"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
