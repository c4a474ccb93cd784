"""docs/your-data.md followed verbatim on the real La Haute Borne archive: every command of its bash blocks, in
order, from a clean folder (``lstmad …`` through the CLI in this process, ``airflow …`` as a subprocess,
``export`` into the environment); the results checked against pandas on the same file. Also ``lstmad init``
on hostile CSV exports (semicolons, decimal commas, a byte-order mark, Latin-1, epoch milliseconds, one asset).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lstmad import names
from lstmad.cli import app
from lstmad.config import data_dir, load_config
from lstmad.io import lakehouse
from lstmad.layout import Paths
from tests.conftest import REPO

pytestmark = pytest.mark.spark

SCADA = data_dir() / "la_haute_borne" / "scada.parquet"
DOC = REPO / "docs" / "your-data.md"


def doc_commands() -> list[str]:
    """The commands of the page's ```bash blocks, in order (one per line)."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def expand(command: str, env: dict) -> list[str]:
    return [os.path.expandvars(part) if "$" in part else part for part in shlex.split(command)]


@pytest.fixture(scope="module")
def followed(tmp_path_factory, spark):
    """Runs the page; returns (folder, {command: output})."""
    if not SCADA.exists():
        pytest.skip(f"{SCADA} not present (set LSTMAD_DATA_DIR to the folder holding la_haute_borne/)")
    # a repository root beside ../shared/datasets, as the page assumes
    base = tmp_path_factory.mktemp("your_data")
    folder = base / "lstmad"
    folder.mkdir()
    (base / "shared").mkdir()
    (base / "shared" / "datasets").symlink_to(data_dir())
    (folder / "dags").symlink_to(REPO / "dags")
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.environ.pop("LSTMAD_DATA_DIR", None)  # the page exports it
    os.environ.update(LSTMAD_HOME=str(folder / ".lstmad"))
    os.chdir(folder)
    outputs: dict[str, str] = {}
    try:
        for command in doc_commands():
            os.environ["PWD"] = str(folder)
            words = expand(command, dict(os.environ))
            if words[0] == "export":
                os.environ.update(dict(w.split("=", 1) for w in words[1:]))
                continue
            if words[0] == "lstmad":
                result = CliRunner().invoke(app, words[1:], catch_exceptions=False)
                assert result.exit_code == 0, (command, result.output)
                outputs[command] = result.stdout
            elif words[0] == "airflow":
                done = subprocess.run([str(Path(sys.executable).with_name("airflow")), *words[1:]], env=dict(os.environ),
                                      capture_output=True, text=True, timeout=900)
                assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
                outputs[command] = done.stdout + done.stderr
            else:
                raise AssertionError(f"docs/your-data.md: a command this test cannot run: {command}")
        yield folder, outputs
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def output_of(outputs: dict, prefix: str) -> str:
    (found,) = [v for k, v in outputs.items() if k.startswith(prefix)]
    return found


def json_of(text: str) -> dict:
    return json.loads(text[text.index("{"):])


@pytest.fixture(scope="module")
def scada() -> pd.DataFrame:
    return pd.read_parquet(SCADA)


def day_rows(frame: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    t = frame.Date_time
    return frame[(t >= pd.Timestamp(first, tz="UTC")) & (t < pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1))]


def test_the_page_runs_every_step_of_the_walk(followed):
    commands = doc_commands()
    kinds = [c.split()[0] + " " + c.split()[1] for c in commands]
    for step in ("lstmad init", "lstmad prepare", "lstmad train", "lstmad score", "lstmad sql", "airflow dags"):
        assert step in kinds, step


def test_init_sees_what_pandas_sees(followed, scada):
    folder, outputs = followed
    config = load_config(folder / "conf" / "my_farm.yaml")
    src = config.source
    assert (src.timestamp_column, src.asset_column, src.format) == ("Date_time", "Wind_turbine_name", "parquet")
    numeric = [c for c in scada.columns if pd.api.types.is_float_dtype(scada[c])]
    assert list(src.channel_names) == numeric
    steps = scada.sort_values(["Wind_turbine_name", "Date_time"]).groupby("Wind_turbine_name").Date_time.diff()
    assert config.prepare.step_s == int(steps.median().total_seconds()) == 600
    # the outdoor temperature's -273.2 is a sentinel; no other channel holds a known one
    sentinels = {c.name: c.sentinels for c in src.channels if c.sentinels}
    # stored as float32: -273.20001
    assert sentinels == {"Ot_avg": (-273.2,)} and int(np.isclose(scada.Ot_avg, -273.2, rtol=1e-6, atol=0).sum()) > 0
    # the vane position, the nacelle angle and the wind direction are the archive's angles (its documentation)
    assert {c.name: c.period for c in src.channels if c.period} == {"Va_avg": 360, "Ya_avg": 360, "Wa_avg": 360}
    # wind speed, outdoor temperature and wind direction drive the turbine: a normal-behaviour model
    assert {c.name for c in src.channels if c.role == "driver"} == {"Ws_avg", "Ot_avg", "Wa_avg"}
    assert (config.model.error_model, config.model.residual_steps) == ("mahalanobis", 12)  # 2 h of 10-min rows
    assert (config.train.start, config.train.end) == (dt.date(2014, 1, 1), dt.date(2014, 1, 14))
    printed = output_of(outputs, "lstmad init")
    assert "4 asset(s), 2014-01-01 .. 2015-12-31, every 600 s" in printed
    assert "lstmad score --conf conf/my_farm.yaml --date 2014-01-15" in printed


def test_prepare_train_score_and_sql_give_what_the_archive_holds(followed, scada):
    folder, outputs = followed
    config = load_config(folder / "conf" / "my_farm.yaml")
    training = json_of(output_of(outputs, "lstmad prepare --conf conf/my_farm.yaml --training"))["prepared"][0]
    assert training["rows_read"] == len(day_rows(scada, "2014-01-01", "2014-01-14"))
    night = json_of(output_of(outputs, "lstmad prepare --conf conf/my_farm.yaml --date"))
    rows = day_rows(scada, "2014-01-15", "2014-01-15")
    assert night["rows_read"] == len(rows)
    trained = json_of(output_of(outputs, "lstmad train"))
    assert trained["model_version"] == "1" and trained["decision"] == "promoted"
    scored = json_of(output_of(outputs, "lstmad score"))
    assert scored["n_scores"] == rows.groupby(["Wind_turbine_name", "Date_time"]).ngroups == 4 * 144
    scores = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_SCORES).to_pandas()
    first_night = scores[scores[names.SCORED_DATE] == "2014-01-15"]
    expected = first_night.groupby(names.ASSET).agg(n=(names.SCORE, "size"), flagged=(names.FLAG, "sum"))
    table = output_of(outputs, "lstmad sql --conf conf/my_farm.yaml 'select asset_id, count(*)")
    lines = [line.split("|") for line in table.strip().splitlines()[2:] if line.count("|") == 2]
    got = {a.strip(): (int(n), int(f)) for a, n, f in lines}
    assert got == {a: (int(r.n), int(r.flagged)) for a, r in expected.iterrows()}
    intervals = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_INTERVALS).to_pandas()
    read_back = list(csv.DictReader(io.StringIO(output_of(outputs, "lstmad sql --conf conf/my_farm.yaml --format csv"))))
    assert len(read_back) == min(10, len(intervals))
    assert sorted(float(r["severity"]) for r in read_back) == sorted(intervals.severity.nlargest(10).tolist())


def test_the_nightly_dag_scores_the_night_before_its_logical_date(followed, scada):
    folder, outputs = followed
    log = output_of(outputs, "airflow dags test")
    # the tasks' progress lines reach the task log
    assert "prepare 2014-01-16..2014-01-16: read 576 rows" in log and "score 2014-01-16: 576 timestamps" in log
    config = load_config(folder / "conf" / "my_farm.yaml")
    scores = lakehouse.read_table(Paths.of(config).lake, names.ANOMALY_SCORES).to_pandas()
    night = scores[scores[names.SCORED_DATE] == "2014-01-16"]
    rows = day_rows(scada, "2014-01-16", "2014-01-16")
    assert len(night) == rows.groupby(["Wind_turbine_name", "Date_time"]).ngroups > 0


# ------------------------------------------------------------------------------------------ hostile exports

def _export(folder: Path, name: str, rows: list[list[str]], header: list[str], delimiter: str = ",",
            encoding: str = "utf-8") -> Path:
    file = folder / f"{name}.csv"
    with open(file, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return file


def _minutes(n: int, asset: str = "A") -> list[list[str]]:
    rng = np.random.default_rng(0)
    return [[f"2026-01-{1 + i // 1440:02d} {i // 60 % 24:02d}:{i % 60:02d}:00", asset, f"{10 + rng.normal():.3f}",
             f"{500 + 10 * rng.normal():.2f}", "7.0"] for i in range(n)]


def test_init_reads_a_spreadsheet_export_and_what_it_writes_prepares(tmp_path, spark):
    """Semicolons, decimal commas, a byte-order mark, Latin-1 asset names, two assets, a constant column."""
    rows = [[t, "Éole 1" if k == 0 else "Éole 2", a.replace(".", ","), b.replace(".", ","), c.replace(".", ",")]
            for k in (0, 1) for t, _, a, b, c in _minutes(3 * 1440)]
    file = _export(tmp_path, "export", rows, ["Zeit", "Anlage", "Temp [degC]", "Power_kW", "Status"], ";", "latin-1")
    file.write_bytes(file.read_bytes())  # Latin-1: no BOM possible; the BOM case is below
    conf = tmp_path / "conf" / "export.yaml"
    result = CliRunner().invoke(app, ["init", "--source", str(file), "--out", str(conf), "--train-days", "2"])
    assert result.exit_code == 0, result.output
    config = load_config(conf)
    src = config.source
    assert (src.csv_delimiter, src.decimal_separator, src.csv_encoding) == (";", ",", "latin-1")
    assert (src.timestamp_column, src.asset_column) == ("Zeit", "Anlage")
    assert [(c.name, c.unit) for c in src.channels] == [("Temp [degC]", "degC"), ("Power_kW", "kW")]
    assert "Status" in conf.read_text() and "constant" in conf.read_text()  # left out, with the reason
    assert config.prepare.step_s == 60
    # the suggested later calibration range, taken as its comment says: the day after the two training days
    text = conf.read_text().replace("  calibration_share: 0.1\n", "").replace("  # calibration_", "  calibration_")
    later = load_config(_write(tmp_path / "later.yaml", text)).threshold
    assert (later.calibration_start, later.calibration_end) == (dt.date(2026, 1, 3), dt.date(2026, 1, 3))
    assert config.train.end == dt.date(2026, 1, 2)
    from lstmad import stages

    summary = stages.prepare(config, config.train.start, config.train.end, fit_stats=True, spark=spark)
    assert summary["rows_read"] == summary["rows_kept"] == 2 * 2 * 1440
    assert summary["values_masked_by_reason"] == {}


def test_init_reads_epoch_milliseconds_of_one_asset_with_a_byte_order_mark(tmp_path, spark):
    rows = [[str(int(pd.Timestamp(t, tz="UTC").timestamp() * 1000)), a, b] for t, _, a, b, _ in _minutes(2 * 1440)]
    file = _export(tmp_path, "epoch", rows, ["timestamp", "temp", "power"], encoding="utf-8-sig")
    conf = tmp_path / "epoch.yaml"
    result = CliRunner().invoke(app, ["init", "--source", str(file), "--out", str(conf), "--train-days", "1"])
    assert result.exit_code == 0, result.output
    config = load_config(conf)
    assert config.source.timestamp_format == "epoch_ms" and config.source.asset_constant
    assert config.source.timestamp_column == "timestamp"
    from lstmad import stages

    summary = stages.prepare(config, dt.date(2026, 1, 1), dt.date(2026, 1, 1), fit_stats=True, spark=spark)
    assert summary["rows_read"] == summary["rows_kept"] == 1440


def test_init_refuses_in_one_line(tmp_path):
    file = _export(tmp_path, "no_time", [["a", "1.0"], ["b", "2.0"]], ["name", "value"])
    result = CliRunner().invoke(app, ["init", "--source", str(file), "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "no column holds timestamps" in result.output and str(file) in result.output
    missing = CliRunner().invoke(app, ["init", "--source", str(tmp_path / "absent.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.output and missing.output.count("\n") == 1
    assert not (tmp_path / "x.yaml").exists()


def _write(path, text: str):
    path.write_text(text)
    return path
