"""``lstmad benchmark``: the accuracy benchmarks on their published protocols (registered on the app by
lstmad.cli); each writes JSON, a Markdown table and PNG plots and is logged to MLflow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str):
    from lstmad.cli import _fail as fail

    fail(message)


def _date_range(option: str, value: Optional[str], name: str) -> Optional[tuple[dt.date, dt.date]]:
    """``value`` START..END as two ISO dates in order (None when unset); refused in one line otherwise, or when
    ``name`` is not scada-injection, the one benchmark that takes date ranges."""
    if value is None:
        return None
    if name != "scada-injection":
        _fail(f"{option} applies to scada-injection, not {name}")
    try:
        dates = tuple(dt.date.fromisoformat(d) for d in value.split(".."))
        assert len(dates) == 2 and dates[0] <= dates[1]
    except (ValueError, AssertionError):
        _fail(f"{option} must be START..END (ISO dates, in order), got {value!r}")
    return dates


def benchmark(name: str = typer.Argument(..., help="skab, skab-roles, icing, contamination, scada-injection, "
                                                    "farm-nights, scoring-chunk, iae-reproduction or iae-tuning"),
              json_path: Path = typer.Option(..., "--json", help="where to write the JSON result"),
              models: Optional[str] = typer.Option(None, help="comma-separated model names (default: all)"),
              epochs: int = typer.Option(10, help="training epochs of the deep models"),
              profile: str = typer.Option("small", help="IAE-LSTM-KL profile: small, tuned or paper (the IAE "
                                                        "studies use authors_small and small themselves)"),
              seed: int = typer.Option(0), device: str = typer.Option("auto", help="auto, cpu or cuda"),
              cross_fit_folds: Optional[int] = typer.Option(
                  None, help="farm-nights, scada-injection: calibrate the threshold on out-of-fold scores of k folds "
                             "(skab: its in-file figure; 0: off; unset: farm-nights as the pipeline's default, "
                             "the others off)"),
              per_asset_threshold: bool = typer.Option(False, help="farm-nights, scada-injection: calibrate each "
                                                                    "asset's own threshold (threshold.per_asset)"),
              calibration_range: Optional[str] = typer.Option(
                  None, help="scada-injection: calibrate on the normal windows of START..END (ISO dates; "
                             "threshold.calibration_start..calibration_end)"),
              labelled_range: Optional[str] = typer.Option(
                  None, help="scada-injection: faults of their own injected into START..END of the training year "
                             "and labelled, the evaluation range model.candidates and driver_sets choose on; "
                             "training ends the day before"),
              calibration_days: int = typer.Option(
                  0, help="farm-nights: calibrate on the normal windows of this many days before the first night "
                          "(threshold.calibration_start..calibration_end; 0: the pipeline's calibration)"),
              shift_correction: Optional[bool] = typer.Option(
                  None, "--shift-correction/--no-shift-correction",
                  help="farm-nights: threshold.shift_correction on or off (default: the pipeline's)"),
              max_drivers: Optional[int] = typer.Option(
                  None, help="skab-roles: the most driver channels of a candidate (default 2)"),
              threads: int = typer.Option(0, help="torch's CPU threads (0: torch's default); recorded in the JSON, "
                                                  "since some models' figures move with it"),
              track: bool = typer.Option(True, help="log the evaluation to MLflow under $LSTMAD_HOME/benchmarks")) -> None:
    """Run a benchmark on its published protocol; writes JSON, a Markdown table and PNG plots."""
    from lstmad.benchmarks.common import DataMissingError

    chosen = models.split(",") if models else None
    options = dict(models=chosen, epochs=epochs, profile=profile, seed=seed, device=device,
                   progress=lambda line: typer.echo(line, err=True))
    if cross_fit_folds is not None and name not in ("skab", "farm-nights", "scada-injection"):
        _fail(f"--cross-fit-folds applies to skab, farm-nights and scada-injection, not {name}")
    if per_asset_threshold and name not in ("farm-nights", "scada-injection"):
        _fail(f"--per-asset-threshold applies to farm-nights and scada-injection, not {name}")
    later = _date_range("--calibration-range", calibration_range, name)
    if later and cross_fit_folds:
        _fail("--calibration-range and --cross-fit-folds both choose the calibration windows: give one")
    labelled = _date_range("--labelled-range", labelled_range, name)
    if calibration_days and name != "farm-nights":
        _fail(f"--calibration-days applies to farm-nights, not {name}")
    if calibration_days and cross_fit_folds:
        _fail("--calibration-days and --cross-fit-folds both choose the calibration windows: give one")
    if shift_correction is not None and name != "farm-nights":
        _fail(f"--shift-correction applies to farm-nights (skab reports both), not {name}")
    if models and name == "skab-roles":
        _fail("--models does not apply to skab-roles: it fits every normal-behaviour candidate itself")
    if max_drivers is not None and name != "skab-roles":
        _fail(f"--max-drivers applies to skab-roles, not {name}")
    if max_drivers is not None and max_drivers < 0:
        _fail(f"--max-drivers must be 0 or more, got {max_drivers}")
    if threads < 0:
        _fail(f"--threads must be 0 (torch's default) or more, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        if name == "skab":
            from lstmad.benchmarks import skab

            result = skab.run(json_path, cross_fit_folds=cross_fit_folds or 0, **options)
        elif name == "skab-roles":
            from lstmad.benchmarks import skab_roles

            result = skab_roles.run(json_path, epochs=epochs, seed=seed, device=device,
                                    max_drivers=skab_roles.MAX_DRIVERS if max_drivers is None else max_drivers,
                                    progress=options["progress"])
        elif name == "icing":
            from lstmad.benchmarks import icing

            result = icing.run(json_path, **options)
        elif name == "contamination":
            from lstmad.benchmarks import icing

            result = icing.run_contamination(json_path, **options)
        elif name == "scada-injection":
            from lstmad.benchmarks import scada_injection

            result = scada_injection.run(json_path, cross_fit_folds=cross_fit_folds or 0, per_asset=per_asset_threshold,
                                         calibration_range=later, labelled_range=labelled, **options)
        elif name == "farm-nights":
            from lstmad.benchmarks import farm_nights

            result = farm_nights.run(json_path, cross_fit_folds=cross_fit_folds, per_asset=per_asset_threshold,
                                     shift_correction=shift_correction, calibration_days=calibration_days, **options)
        elif name == "scoring-chunk":
            from lstmad.benchmarks import scoring_chunk

            result = scoring_chunk.run(json_path, **options)
        elif name == "iae-reproduction":
            from lstmad.benchmarks import iae_reproduction

            result = iae_reproduction.run(json_path, epochs=epochs, seed=seed, device=device,
                                          progress=options["progress"])
        elif name == "iae-tuning":
            from lstmad.benchmarks import iae_reproduction

            result = iae_reproduction.tune(json_path, seed=seed, device=device, progress=options["progress"])
        else:
            _fail(f"unknown benchmark {name!r}: choose skab, skab-roles, icing, contamination, scada-injection, "
                  "farm-nights, scoring-chunk, iae-reproduction or iae-tuning")
    except (DataMissingError, ValueError) as error:
        _fail(str(error))
    typer.echo(Path(result["files"]["markdown"]).read_text())
    if track:
        from lstmad.config import PipelineConfig
        from lstmad.io import tracking

        benchmarks = PipelineConfig(pipeline="benchmarks")  # its home and tracking store, as any pipeline's
        benchmarks.pipeline_home.mkdir(parents=True, exist_ok=True)
        flat = {f"{model}.{key}": value for model, values in result["models"].items()
                for key, value in values.items() if isinstance(value, (int, float))}
        run_id = tracking.log_evaluation(benchmarks.tracking_uri, "lstmad-benchmarks", name,
                                         {**result.get("protocol", {}), "benchmark": name}, flat,
                                         [f for k, f in result["files"].items()], benchmarks.artifact_location)
        typer.echo(f"logged to MLflow run {run_id} ({benchmarks.tracking_uri})", err=True)
