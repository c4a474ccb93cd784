"""``lstmad bench``: speed and memory benchmarks that print JSON (registered on the app by lstmad.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _fail(message: str):
    from lstmad.cli import _fail as fail

    fail(message)


def _print_json(data: dict) -> None:
    from lstmad.cli import _print_json as print_json

    print_json(data)


bench_app = typer.Typer(help="Speed and memory benchmarks (JSON).", no_args_is_help=True)


@bench_app.command("prepare")
def bench_prepare(rows: int = typer.Option(1_000_000, help="rows in the generated archive"),
                  json_path: Optional[Path] = typer.Option(None, "--json", help="where to write the JSON result"),
                  source: str = typer.Option("la_haute_borne", help="la_haute_borne (replicated) or synthetic"),
                  workdir: Optional[Path] = typer.Option(None, help="folder for the archive and outputs (temp)"),
                  baseline: bool = typer.Option(True, help="also run the pandas baseline"),
                  compare_smoothing: bool = typer.Option(False, "--compare-smoothing",
                                                         help="also time smoothing as Spark row windows")) -> None:
    """Prepare N rows with Spark and with a pandas baseline: rows/s, peak memory, storage amplification."""
    from lstmad.benchmarks import prepare as bench

    if source not in ("la_haute_borne", "synthetic"):
        _fail(f"unknown --source {source!r}: choose la_haute_borne or synthetic")
    try:
        result = bench.run(rows, json_path, source, workdir, baseline, compare_smoothing,
                           progress=lambda line: typer.echo(line, err=True))
    except FileNotFoundError as error:
        _fail(str(error))
    _print_json(result)


def _sizes(text: str, option: str = "--pyod-sizes") -> tuple[int, ...]:
    try:
        return tuple(int(float(part)) for part in text.split(",") if part.strip())
    except ValueError:
        _fail(f"{option} must be comma-separated counts such as 1e5,3e5,1e6, got {text!r}")


def _profiles(text: str) -> tuple[str, ...]:
    from lstmad.benchmarks.speed import PROFILES

    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [p for p in chosen if p not in PROFILES]
    if unknown or not chosen:
        _fail(f"--profiles: unknown profile {unknown[0] if unknown else text!r}; choose from {', '.join(PROFILES)}")
    return chosen


@bench_app.command("score")
def bench_score(json_path: Optional[Path] = typer.Option(None, "--json", help="where to write the JSON result"),
                windows: int = typer.Option(1_000_000, help="windows scored per profile (in-process and Spark)"),
                pyod_sizes: str = typer.Option("1e5,3e5,1e6", help="archive sizes of the PyOD LSTMAD comparison"),
                profiles: str = typer.Option("lstm_forecaster,lstm_autoencoder,iae_lstm_kl_small"),
                batch_size: int = typer.Option(4096, help="windows per forward pass"),
                workdir: Optional[Path] = typer.Option(None, help="folder for the archives (temp)")) -> None:
    """Scoring windows/s and peak memory: in-process, Spark local[*], GPU if present, PyOD LSTMAD."""
    from lstmad.benchmarks import speed

    _print_json(speed.run_score(json_path, windows, _sizes(pyod_sizes), _profiles(profiles), batch_size, workdir,
                                progress=lambda line: typer.echo(line, err=True)))


@bench_app.command("train")
def bench_train(json_path: Optional[Path] = typer.Option(None, "--json", help="where to write the JSON result"),
                windows: int = typer.Option(100_000, help="training windows per profile"),
                pyod_sizes: str = typer.Option("1e5", help="archive sizes of the PyOD LSTMAD comparison"),
                profiles: str = typer.Option("lstm_forecaster,lstm_autoencoder,iae_lstm_kl_small"),
                epochs: int = typer.Option(1), batch_size: int = typer.Option(256),
                processes: int = typer.Option(2, help="TorchDistributor CPU processes"),
                workdir: Optional[Path] = typer.Option(None, help="folder for the archives (temp)")) -> None:
    """Training windows/s and peak memory: in-process, TorchDistributor DDP, GPU if present, PyOD LSTMAD."""
    from lstmad.benchmarks import speed

    _print_json(speed.run_train(json_path, windows, _sizes(pyod_sizes), _profiles(profiles), epochs, batch_size,
                                processes, workdir, progress=lambda line: typer.echo(line, err=True)))


@bench_app.command("queries")
def bench_queries(json_path: Optional[Path] = typer.Option(None, "--json", help="where to write the JSON result"),
                  assets: int = typer.Option(100), days: int = typer.Option(365),
                  step_s: int = typer.Option(600, help="seconds between scored timestamps"),
                  repeats: int = typer.Option(5, help="runs of each query (the median is reported)"),
                  workdir: Optional[Path] = typer.Option(None, help="folder for the generated lake (temp)")) -> None:
    """Latency of the example analyst queries on a year of results for 100 synthetic assets."""
    from lstmad.benchmarks import queries

    if days < 30 or assets < 1:
        _fail("--days must be at least 30 (the queries read the last month) and --assets at least 1")
    _print_json(queries.run(json_path, assets, days, step_s, repeats, workdir,
                            progress=lambda line: typer.echo(line, err=True)))


@bench_app.command("night")
def bench_night(assets: str = typer.Option("10,100,1000", help="fleet sizes, comma-separated"),
                channels: int = typer.Option(26, help="channels per asset (the first C of the synthetic 26)"),
                json_path: Optional[Path] = typer.Option(None, "--json", help="where to write the JSON result"),
                workdir: Optional[Path] = typer.Option(None, help="folder for the fleets (temp)"),
                cluster_assets: Optional[int] = typer.Option(
                    None, help="also run this fleet size's night on a loopback standalone cluster and check the "
                    "sizing model's prediction for it (a smaller --assets size runs there too: the cluster's fixed "
                    "cost)"),
                cluster_workers: int = typer.Option(2, help="workers of that cluster (sharing this machine's cores)")
                ) -> None:
    """One night of a synthetic fleet through prepare → score → intervals → commit → drift in a fresh process:
    per-stage seconds, values/s/core, peak memory, and the fixed and per-asset cost of a night."""
    from lstmad.benchmarks import night

    sizes = _sizes(assets, "--assets")
    if not sizes or min(sizes) < 1 or not 1 <= channels <= 26:
        _fail("--assets must be positive counts such as 10,100,1000 and --channels between 1 and 26")
    if cluster_assets is not None and cluster_assets not in sizes:
        _fail(f"--cluster-assets must be one of the --assets sizes ({assets})")
    if cluster_workers < 1:
        _fail("--cluster-workers must be at least 1")
    _print_json(night.run(json_path, sizes, channels, workdir, progress=lambda line: typer.echo(line, err=True),
                          cluster_assets=cluster_assets, cluster_workers=cluster_workers))
