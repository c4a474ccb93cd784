"""The ``lstmad`` command line: demo, prepare, train, score, drift and read-only SQL over the results."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="lstmad: LSTM anomaly detection over sensor archives (Spark, PyTorch, MLflow, Delta).")

DEFAULT_CONF = Path("conf/demo.yaml")
ConfOption = typer.Option(DEFAULT_CONF, "--conf", "-c", help="pipeline YAML (conf/<pipeline>.yaml)")


def _config(conf: Path):
    from lstmad.config import ConfigError, load_config

    try:
        return load_config(conf)
    except ConfigError as error:
        _fail(str(error))


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _date(value: Optional[str], name: str = "--date") -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{name} must be a date YYYY-MM-DD, got {value!r}")


def _run(step, *args, **kwargs):
    """Run a pipeline step; expected failures (bad input, missing model) become one line, not a trace."""
    from lstmad.io.lakehouse import LakehouseError
    from lstmad.io.model_store import ModelStoreError
    from lstmad.io.sources import SourceReadError
    from lstmad.io.tracking import NoChampionError
    from lstmad.layout import PrepareError
    from lstmad.serving.bundle import ModelMismatchError

    try:
        return step(*args, **kwargs)
    except (PrepareError, SourceReadError, NoChampionError, ModelMismatchError, LakehouseError, ModelStoreError,
            FileNotFoundError) as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 — no input may end in a traceback on the terminal
        home = next((a.pipeline_home for a in args if hasattr(a, "pipeline_home")), None)
        _fail(_unexpected(getattr(step, "__name__", "step"), error, home))


def _unexpected(stage: str, error: BaseException, home: Optional[Path]) -> str:
    """One line for an error nobody anticipated, naming the stage; the traceback goes to a log file under the
    pipeline's home (``logs/``, else the temp folder) whose path the line gives."""
    import os
    import tempfile
    import traceback

    folder = (home / "logs") if home else Path(tempfile.gettempdir()) / "lstmad-logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log_file = folder / f"error-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}-{os.getpid()}-{stage}.log"
        log_file.write_text("".join(traceback.format_exception(error)))
        where = f"traceback in {log_file}"
    except OSError:
        where = "the traceback could not be written to a log file"
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else text[:300] + "…"
    return f"{stage} failed unexpectedly: {type(error).__name__}: {text} ({where})"


# Under jobs/ (spark-submit) the result is one JSON line, the last line of stdout (what Airflow and wrappers
# read); at a terminal it is indented.
_JOB_MODE = {"on": False}


def _print_json(data: dict) -> None:
    typer.echo(json.dumps(data, default=str) if _JOB_MODE["on"]
               else json.dumps(data, indent=2, default=str, allow_nan=True))


def run_job(command: str, argv: Optional[list[str]] = None) -> None:
    """The spark-submit entry points (jobs/<command>.py): the same command and options as ``lstmad
    <command>``, with the result as one JSON line; a failure exits non-zero after its one-line message."""
    _JOB_MODE["on"] = True
    try:
        code = app([command, *(sys.argv[1:] if argv is None else argv)], standalone_mode=False)
    except Exception as error:
        # a usage error (typer's own click exceptions): its one line, as the CLI shows it; anything else
        # is one line too, its traceback in a log file
        if not (hasattr(error, "show") and hasattr(error, "exit_code")):
            typer.echo(f"error: {_unexpected(command, error, None)}", err=True)
            raise SystemExit(1) from None
        error.show()
        code = error.exit_code
    finally:
        _JOB_MODE["on"] = False
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _window_end(config, window_end: Optional[str]):
    """The config with its training ranges slid to end at --window-end (with train.window_days set; the DAG
    always sends the night, empty when none)."""
    from lstmad.stages import training_window

    end = _date(window_end or None, "--window-end")
    return training_window(config, end) if end and config.train.window_days > 0 else config


def _results_file(config, name: str) -> Path:
    """Where ``lstmad train --result-name NAME`` leaves its result for ``lstmad promote --trained NAME``."""
    import re

    return config.pipeline_home / "results" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.json"


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="log every step"),
           quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines, only results and errors")
           ) -> None:
    from lstmad import progress

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    # progress of long steps (lstmad.progress) on stderr unless --quiet: a bar at a terminal, lines elsewhere
    progress.log.setLevel(logging.WARNING if quiet else logging.INFO)
    progress.use_bar(not quiet and not _JOB_MODE["on"])


@app.command()
def demo(conf: Path = ConfOption) -> None:
    """Generate a wind farm, train, score it night by night, print a summary and query the results."""
    from lstmad.analytics import example_queries
    from lstmad.analytics.sql import format_table, query
    from lstmad.demo import run_demo
    from lstmad.layout import Paths

    config = _config(conf)
    summary = _run(run_demo, config, typer.echo)
    typer.echo("\n== summary ==")
    typer.echo(f"scored {summary['scored_days']} days ({summary['scored_timestamps']} timestamps) with "
               f"v{summary['model_version']}: AUROC {summary['auroc']:.3f}, PR-AUC {summary['pr_auc']:.3f}, "
               f"F1 {summary['f1']:.3f}; {summary['n_intervals']} anomaly intervals; {summary['elapsed_s']:.0f} s")
    typer.echo(f"alarms on normal rows {summary['false_alarm_rate']:.2%} (calibrated to expect "
               f"{summary['expected_alarm_rate']:.2%}); icing events found {summary['event_recall']:.0%}, "
               f"false intervals per turbine-week {summary['false_intervals_per_asset_week']:.2f}, median delay "
               f"{summary['detection_delay_min']:.0f} min; CARE {summary['care']:.3f}")
    typer.echo("top intervals by peak score:")
    for row in summary["top_intervals"]:
        typer.echo(f"  {row['asset_id']} {row['start']} → {row['end']} ({row['duration_s'] // 60} min, "
                   f"severity {row['severity']}, mostly {row['top_channel']})")
    typer.echo(f"summary written to {summary['home']}/summary.json; MLflow run {summary['mlflow_run_id']}")
    for name in example_queries.EXAMPLES:
        sql = example_queries.render(name, **summary["query_parameters"])
        typer.echo(f"\n-- {example_queries.describe(name, **summary['query_parameters'])}")
        typer.echo(sql)
        typer.echo(format_table(query(Paths.of(config).lake, sql)))
    if not math.isfinite(summary["auroc"]):
        _fail("the scored period has a single class: AUROC is undefined")


@app.command()
def init(source: Path = typer.Option(..., "--source", help="your table: a CSV/Parquet file or folder, or a Delta table"),
         name: Optional[str] = typer.Option(None, help="pipeline name (default: from the file name)"),
         out: Optional[Path] = typer.Option(None, help="config to write (default: conf/<name>.yaml)"),
         format: Optional[str] = typer.Option(None, "--format", help="csv, parquet or delta (default: guessed)"),
         train_days: Optional[int] = typer.Option(None, help="days of the suggested training range (default: "
                                                  "half the archive, 7 to 90 days)"),
         force: bool = typer.Option(False, "--force", help="overwrite an existing config")) -> None:
    """Inspect a table and write a commented pipeline config for it; prints what was seen and what to run next."""
    import re

    from lstmad import progress
    from lstmad.config import ConfigError, load_config
    from lstmad.io.source_profile import SourceProfileError, read_stored_table
    from lstmad.onboarding import InspectionError, config_text, inspect_table, next_commands

    pipeline = name or re.sub(r"[^A-Za-z0-9_]+", "_", source.stem).strip("_").lower() or "my_pipeline"
    target = out or Path("conf") / f"{pipeline}.yaml"
    if target.exists() and not force:
        _fail(f"{target} exists; give --out another path or --force to overwrite it")
    if train_days is not None and train_days < 1:
        _fail("--train-days must be at least 1")
    progress.step("init: inspecting %s", source)
    try:
        findings = inspect_table(read_stored_table(source, format))
    except (SourceProfileError, InspectionError) as error:
        _fail(str(error))
    text = config_text(findings, pipeline, train_days)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    try:
        load_config(tmp)  # what init writes must load: a failure here is lstmad's bug, said in one line
    except ConfigError as error:
        tmp.unlink()
        _fail(f"the config written for {source} does not load ({error}); please report this")
    tmp.replace(target)
    channels = ", ".join(c.name for c in findings.channels)
    typer.echo(f"{source}: {findings.stored.format}, {findings.asset_count} asset(s), {findings.first:%Y-%m-%d} .. "
               f"{findings.last:%Y-%m-%d}, every {findings.step_s} s; timestamps in '{findings.timestamp_column}'"
               f"{', assets in ' + repr(findings.asset_column) if findings.asset_column else ''}; channels {channels}"
               + (f"; left out {findings.ignored}" if findings.ignored else ""))
    typer.echo(f"wrote {target}: check the lines marked CHECK, then run:")
    for command in next_commands(str(target), findings, train_days):
        typer.echo(f"  {command}")


@app.command()
def generate(conf: Path = ConfOption) -> None:
    """Write the synthetic wind farm of the config's ``synthetic`` section as the raw landing table."""
    from lstmad.stages import generate as generate_farm

    _print_json(generate_farm(_config(conf)))


@app.command()
def prepare(conf: Path = ConfOption, date: Optional[str] = typer.Option(None, help="one date YYYY-MM-DD"),
            start: Optional[str] = typer.Option(None, help="first date of a range"),
            end: Optional[str] = typer.Option(None, help="last date of a range"),
            fit_stats: bool = typer.Option(False, "--fit-stats", help="fit normalisation on these dates"),
            training: bool = typer.Option(False, "--training", help="the config's training + evaluation range"),
            window_end: Optional[str] = typer.Option(None, "--window-end", help="with --training: the sliding "
                                                     "window (train.window_days) ending at this date"),
            accept_schema: bool = typer.Option(False, "--accept-schema",
                                               help="record a changed source schema instead of failing")) -> None:
    """Clean, regrid, smooth, normalise and block raw rows into tensor blocks; quarantine bad rows and values."""
    from lstmad import stages

    config = _config(conf)
    if training:
        _print_json({"prepared": _run(stages.prepare_training_data, _window_end(config, window_end))})
        return
    first, last = _date(date) or _date(start, "--start"), _date(date) or _date(end, "--end")
    if first is None or last is None:
        _fail("give --date, or --start and --end, or --training")
    summary = _run(stages.prepare, config, first, last, fit_stats, accept_schema=accept_schema)
    typer.echo(f"rows read {summary['rows_read']} = kept {summary['rows_kept']} + quarantined "
               f"{summary['rows_quarantined']} + exact duplicates dropped {summary['exact_duplicates_dropped']}; "
               f"values masked {summary['values_masked_by_reason'] or 'none'}", err=True)
    _print_json(summary)


@app.command()
def train(conf: Path = ConfOption,
          window_end: Optional[str] = typer.Option(None, "--window-end", help="train on the sliding window "
                                                   "(train.window_days, train.eval_days) ending at this date"),
          promote: bool = typer.Option(True, "--promote/--no-promote", help="run the promotion gate after "
                                       "registering (--no-promote: lstmad promote does it)"),
          result_name: Optional[str] = typer.Option(None, "--result-name", help="also keep the result under "
                                                    "this name for lstmad promote --trained")) -> None:
    """Train on the prepared training range, evaluate, log to MLflow, register and maybe promote."""
    from lstmad import stages

    config = _window_end(_config(conf), window_end)
    # each epoch's line (losses, windows/s) comes from the training loop's progress lines
    result = _run(stages.train, config, promote=promote)
    result = {k: v for k, v in result.items() if k != "history"}
    if result_name:
        file = _results_file(config, result_name)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(result, default=str))
    _print_json(result)


@app.command()
def promote(conf: Path = ConfOption,
            trained: Optional[str] = typer.Option(None, help="the --result-name of a lstmad train --no-promote"),
            run_id: Optional[str] = typer.Option(None, "--run-id", help="MLflow run of the registered version"),
            version: Optional[str] = typer.Option(None, help="registered version to put through the gate"),
            window_end: Optional[str] = typer.Option(None, "--window-end", help="the evaluation range of the "
                                                     "sliding window ending at this date")) -> None:
    """Put a registered version through the promotion gate: champion if not worse than the current one."""
    from lstmad import stages

    config = _window_end(_config(conf), window_end)
    if trained:
        file = _results_file(config, trained)
        if not file.exists():
            _fail(f"{file}: no training result named {trained!r}; run lstmad train --result-name {trained}")
        result = json.loads(file.read_text())
        run_id, version = result["run_id"], result["model_version"]
    if not run_id or not version:
        _fail("give --trained NAME, or --run-id and --version")
    _print_json(_run(stages.promote_model, config, run_id, version))


@app.command()
def score(conf: Path = ConfOption, date: str = typer.Option(..., help="date to score, YYYY-MM-DD"),
          end: Optional[str] = typer.Option(None, help="last date of a backfill range starting at --date"),
          model_version: Optional[str] = typer.Option(None, help="score with this registered version instead "
                                                      "of the champion (compare before promoting; roll back)")) -> None:
    """Score one date (or --date … --end …, in one pass) with the champion model; replace those dates'
    scores and intervals."""
    from lstmad import stages
    from lstmad.io.model_store import version_bundle

    config = _config(conf)
    chosen = _run(version_bundle, config, model_version) if model_version else None
    if end is None:
        _print_json(_run(stages.score, config, _date(date), None, chosen))
    else:
        _print_json(_run(stages.score_range, config, _date(date), _date(end, "--end"), None, chosen))


@app.command()
def drift(conf: Path = ConfOption, date: str = typer.Option(..., help="scored date, YYYY-MM-DD")) -> None:
    """Input and alarm-rate drift of one scored date against the champion's training reference."""
    from lstmad import stages

    _print_json(_run(stages.drift, _config(conf), _date(date)))


@app.command()
def sql(statement: str = typer.Argument(..., help="a read-only SQL query"), conf: Path = ConfOption,
        output: str = typer.Option("table", "--format", help="table, csv, json or jsonl (a JSON object a line)"),
        as_of: Optional[str] = typer.Option(None, "--as-of", help="time travel: VERSION, an ISO 8601 time, or "
                                            "table=VERSION[,table=VERSION]")) -> None:
    """Read-only SQL (DuckDB) over anomaly_scores, anomaly_intervals, drift_metrics, quarantine and
    model_evaluations; the result goes to stdout (encodings: lstmad.analytics.sql.render)."""
    from lstmad.analytics.sql import FORMATS, SqlError, parse_as_of, query, render
    from lstmad.layout import Paths

    if output not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {output!r}")
    config = _config(conf)
    try:
        result = query(Paths.of(config).lake, statement, parse_as_of(as_of, statement) if as_of else None)
        text = render(result, output)
    except SqlError as error:
        _fail(str(error))
    if text:  # jsonl of no rows is no lines
        typer.echo(text)


@app.command()
def tables(conf: Path = ConfOption, output: str = typer.Option("table", "--format", help="table or json")) -> None:
    """The Delta tables: version, rows, files, bytes, partitioning, last commit and columns."""
    from lstmad.io.lakehouse import describe
    from lstmad.layout import Paths

    if output not in ("table", "json"):
        _fail(f"--format must be table or json, got {output!r}")
    described = describe(Paths.of(_config(conf)).lake)
    if output == "json":
        _print_json({"tables": described})
        return
    if not described:
        typer.echo("no tables yet: run lstmad score (or lstmad demo) first")
    for t in described:
        typer.echo(f"{t['table']}: version {t['version']}, {t['rows']} rows in {t['files']} files ({t['bytes']} bytes), "
                   f"partitioned by {', '.join(t['partition_columns']) or 'nothing'}; last commit {t['last_commit']} "
                   f"({t['last_operation']})")
        typer.echo("  " + ", ".join(f"{name} {kind}" for name, kind in t["columns"]))


@app.command()
def maintain(conf: Path = ConfOption, retention_hours: Optional[int] = typer.Option(
        None, help="vacuum files older versions need beyond this many hours (default: delta.retention_hours)")) -> None:
    """Compact and vacuum the Delta tables (query results unchanged); prints what each table went through."""
    from lstmad import stages

    _print_json(_run(stages.maintain, _config(conf), retention_hours))


@app.command()
def package(out: Path = typer.Option(Path("dist"), help="folder for the zip")) -> None:
    """Zip the lstmad package for spark-submit --py-files (airflow.py_files); prints its path."""
    from lstmad.packaging import py_files_zip

    typer.echo(str(py_files_zip(out)))


from lstmad.cli_bench import bench_app  # noqa: E402 — the bench subcommands, in their own module
from lstmad.cli_benchmark import benchmark  # noqa: E402 — the accuracy benchmarks, in their own module

app.command()(benchmark)

app.add_typer(bench_app, name="bench")


def main() -> None:
    """The ``lstmad`` console script: the app, with any error nobody anticipated as one line (exit 1) and its
    traceback in a log file, never on the terminal."""
    try:
        app()
    except Exception as error:  # noqa: BLE001
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "lstmad")
        typer.echo(f"error: {_unexpected(command, error, None)}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
