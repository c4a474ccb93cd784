"""A fault-injection study on real wind SCADA (La Haute Borne, 4 turbines, 10-minute rows), scored through the
CLI exactly as a user would: prepare → train → score, then the anomaly_scores and anomaly_intervals tables the
pipeline wrote are judged against the injected events.

The study: the first half of 2015 of each turbine gets faults of several classes injected
(lstmad.evaluation.injection, seeded), each on the channel it would strike in a real turbine, plus distractors
that must not alarm: curtailment episodes (power capped, pitch raised, a status column set, as SCADA exports
carry it) that the pipeline's operating-state rule marks. 2014 trains (untouched real data; its latest share
calibrates the threshold to a budget of false intervals per turbine-week).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from lstmad.benchmarks.common import (DataMissingError, by_asset, calibrated_on, fmt, low_high, stored_results,
                                      write_report)
from lstmad.config import data_dir

REPO_CONF = Path(__file__).resolve().parents[2] / "conf" / "la_haute_borne.yaml"
TRAIN = (dt.date(2014, 1, 1), dt.date(2014, 12, 31))
TEST = (dt.date(2015, 1, 1), dt.date(2015, 6, 30))
STEP_S = 600
CHANNELS = ["Ba_avg", "P_avg", "Ws_avg", "Va_avg", "Ot_avg", "Ya_avg", "Wa_avg"]
LABELLED_PER_FAULT = 1  # events of each class per turbine in the labelled range (a quarter holds one of each)
CURTAILMENT_KW = 800.0  # the grid operator's set-point during a curtailment


@dataclasses.dataclass(frozen=True)
class FaultClass:
    """A named fault: an injector of lstmad.evaluation.injection applied to one channel."""

    name: str
    injector: str
    channel: str
    magnitude: float  # in the channel's robust scale (lag: rows)


# What fails on a turbine, on the channel it shows in; magnitudes a maintenance engineer would want caught.
FAULT_CLASSES = (
    FaultClass("anemometer_drift", "drift", "Ws_avg", 1.0),       # reaches ≈ 2.5 m/s at the event's end
    FaultClass("anemometer_offset", "offset", "Ws_avg", 0.6),     # ≈ 1.5 m/s
    FaultClass("power_sensor_gain", "gain", "P_avg", 0.5),
    FaultClass("power_decoupling", "decoupling", "P_avg", 0.0),   # power no longer follows the wind
    FaultClass("pitch_stuck", "stuck", "Ba_avg", 0.0),
    FaultClass("temperature_stuck", "stuck", "Ot_avg", 0.0),
    FaultClass("vane_offset", "offset", "Va_avg", 1.5),           # yaw misalignment
    FaultClass("power_noise", "noise_burst", "P_avg", 1.0),
)
# Alarm rules for 10-minute SCADA and faults of hours to days, set before any run: half of an hour's steps
# above the threshold open an interval, it continues above 80 % of the threshold, across gaps of an hour.
ALARM_RULES = {"min_interval_s": 1800, "merge_gap_s": 3600, "persistence": 3, "persistence_window": 6,
               "hysteresis": 0.8}
DETECTORS = {  # each sets residual_steps (the shipped configuration's differs); frozen_channels, error_regimes,
    # scoring_chunk and residual_spread are off unless set
    "lstm_forecaster": {"model": {"detector": "lstm_forecaster", "error_model": "squared", "residual_steps": 1}},
    "lstm_forecaster_mahalanobis": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                              "residual_steps": 1}},
    "normal_behaviour": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis", "residual_steps": 1},
                         "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # the same, each window scored by the mean residual of its last 12 rows (2 of its 4 hours)
    "normal_behaviour_mean": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                        "residual_steps": 12},
                              "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # and a window scores at least what the stillness of its stillest channel is worth (a stuck sensor)
    "normal_behaviour_mean_frozen": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                               "residual_steps": 12, "frozen_channels": True},
                                     "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # the same, its drivers chosen among these sets and the three above (model.driver_sets): on the labelled
    # range when the study has one (--labelled-range), else by the injection study of the training range
    "normal_behaviour_mean_frozen_roles": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                                     "residual_steps": 12, "frozen_channels": True,
                                                     "driver_sets": [["Ws_avg"], ["Ws_avg", "Ot_avg"],
                                                                     ["Ws_avg", "Wa_avg"], []]},
                                           "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # and each response's root-mean-square residual over the 12 rows beside the mean (model.residual_spread)
    "normal_behaviour_mean_frozen_spread": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                                      "residual_steps": 12, "frozen_channels": True,
                                                      "residual_spread": True},
                                            "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # the same, 25 consecutive windows scored per pass over their rows (model.scoring_chunk)
    "normal_behaviour_mean_frozen_chunked": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                                       "residual_steps": 12, "frozen_channels": True,
                                                       "scoring_chunk": 25},
                                             "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    # and one error Gaussian per operating regime (model.error_regimes)
    "normal_behaviour_mean_frozen_regimes": {"model": {"detector": "lstm_forecaster", "error_model": "mahalanobis",
                                                       "residual_steps": 12, "frozen_channels": True,
                                                       "error_regimes": 10},
                                             "drivers": ["Ws_avg", "Ot_avg", "Wa_avg"]},
    "pca_t2q": {"model": {"detector": "pca_t2q"}},
    "isolation_forest": {"model": {"detector": "isolation_forest"}},
    "lstm_autoencoder": {"model": {"detector": "lstm_autoencoder"}},
}


def load_scada(path: Optional[Path] = None) -> pd.DataFrame:
    path = Path(path or data_dir() / "la_haute_borne" / "scada.parquet")
    if not path.exists():
        raise DataMissingError(f"{path} not present (set LSTMAD_DATA_DIR to the folder holding la_haute_borne/)")
    return pd.read_parquet(path)


def _rows_within(frame: pd.DataFrame, first: dt.date, last: dt.date) -> np.ndarray:
    """(n,) bool: the rows of ``frame`` stamped on the days first .. last."""
    times = frame["Date_time"]
    return ((times >= pd.Timestamp(first, tz="UTC"))
            & (times < pd.Timestamp(last + dt.timedelta(days=1), tz="UTC"))).to_numpy()


def _planned_events(frame: pd.DataFrame, rows: np.ndarray, before: int, per_fault: int, seed: int,
                    rng: np.random.Generator) -> tuple[list, list, list]:
    """(injections, their class names, their slots) for one asset's ``rows`` (positions into ``frame``, time
    order; ``before``: the asset's first position): ``per_fault`` events of each class, where it mostly
    produces."""
    from lstmad.evaluation.injection import Injection, plan_injections

    part = frame.iloc[rows]
    producing = (part[CHANNELS].notna().all(axis=1) & (part["Ws_avg"] > 4) & (part["P_avg"] > 50)).to_numpy()
    eligible = np.convolve(producing, np.ones(36), "same") > 18  # mostly producing over ± 3 h
    # where events go (their classes are dealt out below; the planner's own class is a placeholder)
    slots = plan_injections(len(rows), len(CHANNELS), faults=["offset"], per_fault=per_fault * len(FAULT_CLASSES),
                            seed=seed, min_length=72, max_length=432, gap=144, eligible=eligible)
    dealt = rng.permutation(np.repeat(np.arange(len(FAULT_CLASSES)), per_fault))
    # inject_frame counts positions among all of the asset's rows (time order)
    offset = int(rows[0]) - before
    injections = [Injection(FAULT_CLASSES[w].injector, CHANNELS.index(FAULT_CLASSES[w].channel),
                            offset + slot.start, slot.length, FAULT_CLASSES[w].magnitude) for slot, w in zip(slots, dealt)]
    return injections, [FAULT_CLASSES[w].name for w in dealt], slots


def build_study(scada: pd.DataFrame, seed: int = 0, per_fault: int = 2, curtailments: int = 6,
                labelled: Optional[tuple[dt.date, dt.date]] = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(the table with faults and curtailments injected in TEST and a ``curtailed`` status column, the events
    table of TEST (lstmad.evaluation.injection.EVENT_COLUMNS plus ``class``), the curtailment episodes (asset,
    start, end)). Per turbine ``per_fault`` events of each class lasting 12 h – 3 days, a day apart, starting
    where the turbine mostly produces; ``curtailments`` episodes of 6–24 h at 800 kW, a day clear of every
    event. With ``labelled`` (first, last day), LABELLED_PER_FAULT events of each class per turbine go into
    that range too (another seed, no curtailments), their rows marked 1 in an ``injected`` column (0
    elsewhere): labels to choose on."""
    from lstmad.evaluation.injection import inject_frame, robust_scales

    frame = scada.sort_values(["Wind_turbine_name", "Date_time"]).reset_index(drop=True)
    frame["curtailed"] = 0
    in_test = _rows_within(frame, *TEST)
    in_labelled = _rows_within(frame, *labelled) if labelled else np.zeros(len(frame), bool)
    rng, labelled_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    plans, classes, episodes, scales, labelled_plans, labelled_scales = {}, {}, [], {}, {}, {}
    for k, asset in enumerate(sorted(frame["Wind_turbine_name"].unique())):
        mine = (frame["Wind_turbine_name"] == asset).to_numpy()
        before = int(np.flatnonzero(mine)[0])
        rows = np.flatnonzero(mine & in_test)
        part = frame.iloc[rows]
        plans[asset], classes[asset], slots = _planned_events(frame, rows, before, per_fault, seed * 1000 + k, rng)
        scales[asset] = robust_scales(part[CHANNELS].to_numpy(float))
        if labelled:
            labelled_rows = np.flatnonzero(mine & in_labelled)
            try:
                labelled_plans[asset], _, _ = _planned_events(frame, labelled_rows, before, LABELLED_PER_FAULT,
                                                              (seed + 1) * 1000 + k, labelled_rng)
            except ValueError as error:
                raise ValueError(f"the labelled range {labelled[0]}..{labelled[1]} is too short for one event of "
                                 f"each class on turbine {asset}: {error}") from None
            labelled_scales[asset] = robust_scales(frame.iloc[labelled_rows][CHANNELS].to_numpy(float))
        taken = np.zeros(len(rows), bool)
        for slot in slots:
            taken[max(0, slot.start - 144):slot.start + slot.length + 144] = True
        windy = np.flatnonzero((part["P_avg"] > 900).to_numpy())
        for _ in range(curtailments):
            length = int(rng.integers(36, 145))
            free = [s for s in windy if s + length <= len(rows) and not taken[s:s + length].any()]
            if not free:
                break
            start = int(rng.choice(free))
            taken[max(0, start - 144):start + length + 144] = True
            episodes.append({"asset": asset, "start": part["Date_time"].iloc[start],
                             "end": part["Date_time"].iloc[start + length - 1], "rows": rows[start:start + length]})
    frame, events = inject_frame(frame, "Wind_turbine_name", "Date_time", CHANNELS, plans, scales, seed)
    if labelled:
        # the labelled range's events, after the test half's (which is then as without them): injected into the
        # rows before the test half alone, so that nothing of it (a decoupling's copied stretch, its scales)
        # reaches the rows the drivers are chosen on
        earlier = (frame["Date_time"] < pd.Timestamp(TEST[0], tz="UTC")).to_numpy()
        injected, _ = inject_frame(frame[earlier], "Wind_turbine_name", "Date_time", CHANNELS, labelled_plans,
                                   labelled_scales, seed + 1)
        frame.loc[earlier, CHANNELS] = injected[CHANNELS].to_numpy()
        frame["injected"] = 0
        for asset, injections in labelled_plans.items():
            before = int(np.flatnonzero((frame["Wind_turbine_name"] == asset).to_numpy())[0])
            for injection in injections:
                first = before + injection.start
                frame.iloc[first:first + injection.length, frame.columns.get_loc("injected")] = 1
    # inject_frame lists each asset's events in its plan's order
    events["class"] = [classes[a][i] for a, i in zip(events["asset"], events.groupby("asset").cumcount())]
    for episode in episodes:
        rows = episode["rows"]
        power = frame.loc[rows, "P_avg"].to_numpy()
        frame.loc[rows, "P_avg"] = np.minimum(power, CURTAILMENT_KW)
        # the blades pitch out to shed what the wind would have given
        frame.loc[rows, "Ba_avg"] = frame.loc[rows, "Ba_avg"].to_numpy() + np.clip(power - CURTAILMENT_KW, 0, None) / 100
        frame.loc[rows, "curtailed"] = 1
    curtailed = pd.DataFrame([{k: e[k] for k in ("asset", "start", "end")} for e in episodes],
                             columns=["asset", "start", "end"])
    return frame, events, curtailed


def study_config(home: Path, source: Path, detector: str, seed: int, epochs: int, cross_fit_folds: int = 0,
                 per_asset: bool = False, calibration_range: Optional[tuple[dt.date, dt.date]] = None,
                 labelled_range: Optional[tuple[dt.date, dt.date]] = None) -> dict:
    """The shipped la_haute_borne configuration, pointed at the study's table, with the curtailment status as an
    operating state besides the configuration's own, the threshold calibrated to false intervals per turbine-week (on the latest 10 % of the
    training windows, with ``cross_fit_folds`` on out-of-fold scores, or on the normal windows of
    ``calibration_range`` (threshold.calibration_start..calibration_end); with ``per_asset`` per turbine), and
    ``detector``'s settings. With ``labelled_range`` (build_study's), training ends the day before it and it
    is the labelled evaluation range (label column ``injected``) that model.candidates and model.driver_sets
    choose on."""
    raw = yaml.safe_load(REPO_CONF.read_text())
    raw["pipeline"] = f"scada_injection_{detector}"
    raw["home"] = str(home)
    raw["source"]["path"] = str(source)
    settings = DETECTORS[detector]
    drivers = set(settings.get("drivers", ()))
    raw["source"]["channels"] = [{**c, "role": "driver" if c["name"] in drivers else "response"}
                                 for c in raw["source"]["channels"]]
    raw["operating_states"] = [*(raw.get("operating_states") or []), {"name": "curtailment", "when": "curtailed = 1"}]
    # the shipped config's forecaster settings are refused for other detectors (residual_steps): reset first
    raw["model"].update({"frozen_channels": False, "error_regimes": 0, "scoring_chunk": 1, "residual_steps": 1,
                         "residual_spread": False, **settings["model"]},
                        seed=seed, epochs=epochs)
    raw["train"].update(start=TRAIN[0], end=TRAIN[1], eval_start=None, eval_end=None)
    if labelled_range:
        raw["source"]["label_column"] = "injected"
        raw["train"].update(end=labelled_range[0] - dt.timedelta(days=1), eval_start=labelled_range[0],
                            eval_end=labelled_range[1])
    raw["threshold"].update(rule="alarms_per_week", budget=0.5,
                            calibration_share=0.0 if cross_fit_folds or calibration_range else 0.1,
                            cross_fit_folds=cross_fit_folds, per_asset=per_asset)
    if calibration_range:
        raw["threshold"].update(calibration_start=calibration_range[0], calibration_end=calibration_range[1])
    raw["score"].update(ALARM_RULES)
    return raw


def run_cli(conf: Path, *args: str) -> dict:
    """``lstmad <args> --conf conf`` in a fresh process; its JSON result."""
    done = subprocess.run([sys.executable, "-m", "lstmad.cli", *args, "--conf", str(conf)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lstmad {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    out = done.stdout.strip()
    return json.loads(out[out.index("{"):])  # the command prints its result as (indented) JSON


def evaluate(lake: Path, version: str, events: pd.DataFrame, curtailed: pd.DataFrame, min_interval_s: int) -> dict:
    """What the pipeline wrote for model ``version`` over TEST, judged against the injected events: row metrics
    (AUROC, PR-AUC, VUS-ROC/PR, realized false-alarm rate on normal rows), interval metrics (events found,
    false intervals per turbine-week, delay), CARE, per fault class, and what the curtailments received."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from lstmad import names
    from lstmad.evaluation.care import care_score
    from lstmad.evaluation.injection import event_labels
    from lstmad.evaluation.metrics import judge_intervals
    from lstmad.evaluation.vus import vus_metrics

    scores, spans = stored_results(lake, version)
    assets = np.asarray(scores.column(names.ASSET).to_pylist(), dtype=object)
    stamps = pd.Series(scores.column(names.TIMESTAMP).to_pandas())
    micros = scores.column(names.TIMESTAMP).cast("int64").to_numpy()
    score = scores.column(names.SCORE).to_numpy()
    flags = scores.column(names.FLAG).to_numpy(zero_copy_only=False)
    in_state = np.asarray(scores.column(names.OPERATING_STATE).is_valid())
    state = np.asarray(scores.column(names.OPERATING_STATE).to_pylist(), dtype=object)
    curtailed_rows = state == "curtailment"
    event = event_labels(assets, stamps, events)
    fault_class = np.where(event >= 0, events["class"].to_numpy()[np.clip(event, 0, None)] if len(events) else "", "")
    normal = (event < 0) & ~in_state
    labels = np.where(in_state, -1, (event >= 0).astype(int))
    judged = labels >= 0
    out = {"auroc": float(roc_auc_score(labels[judged], score[judged])),
           "pr_auc": float(average_precision_score(labels[judged], score[judged])),
           **vus_metrics(labels, score), "realized_far": float(flags[normal].mean()),
           "rows_normal": int(normal.sum()), "rows_in_events": int((event >= 0).sum()),
           "rows_curtailed": int(curtailed_rows.sum()), "flags_in_curtailment": int(flags[curtailed_rows].sum()),
           # rows outside normal operation are not judged; the configuration's own states among them
           "rows_by_operating_state": {str(k): int(n) for k, n in zip(*np.unique(state[in_state].astype(str),
                                                                                 return_counts=True))},
           "fault_rows_judged": int(((event >= 0) & ~in_state).sum())}
    out.update(care_score(micros, assets, labels, flags, max(1, min_interval_s // STEP_S)))

    def runs(table: pd.DataFrame) -> dict:
        found: dict = {}
        for row in table.itertuples(index=False):
            found.setdefault(row.asset, []).append((int(row.start.value // 1000), int(row.end.value // 1000)))
        return found

    weeks = len(set(assets)) * ((TEST[1] - TEST[0]).days + 1) / 7
    out.update(judge_intervals(spans, runs(events), weeks))
    hit_curtailment = judge_intervals(spans, runs(curtailed), weeks)
    out["intervals_on_curtailment"] = hit_curtailment["n_detected"]
    out["curtailments"] = int(len(curtailed))
    per_class = {}
    for name in sorted(set(events["class"])):
        mine = events[events["class"] == name]
        rows = (fault_class == name) | normal
        per_class[name] = {"auroc": float(roc_auc_score(fault_class[rows] == name, score[rows])),
                           **{k: v for k, v in judge_intervals(spans, runs(mine), weeks).items()
                              if k in ("interval_recall", "detection_delay_min", "n_events", "n_detected")}}
    out["classes"] = per_class
    out["asset_weeks"] = weeks
    # each turbine's false alarms: does the budget hold for each, not only for the fleet
    out["by_asset"] = by_asset(assets, flags, normal, spans, runs(events), weeks / len(set(assets)))
    return out


def run(json_path: Path, models: Optional[list[str]] = None, epochs: int = 6, seed: int = 0,
        workdir: Optional[Path] = None, cross_fit_folds: int = 0, per_asset: bool = False,
        calibration_range: Optional[tuple[dt.date, dt.date]] = None,
        labelled_range: Optional[tuple[dt.date, dt.date]] = None, progress=print, **_) -> dict:
    """Build the study, run the pipeline's CLI for each detector (prepare once, then train and score each),
    judge what it wrote; JSON, Markdown and a per-class figure next to ``json_path``. ``labelled_range``: days
    of TRAIN given labelled faults of their own to choose on (build_study, study_config)."""
    import tempfile

    models = models or list(DETECTORS)
    unknown = sorted(set(models) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {sorted(DETECTORS)}")
    if labelled_range and not TRAIN[0] < labelled_range[0] <= labelled_range[1] <= TRAIN[1]:
        raise ValueError(f"the labelled range must lie within the training year {TRAIN[0]}..{TRAIN[1]}, after its "
                         f"first day, got {labelled_range[0]}..{labelled_range[1]}")
    train = (TRAIN[0], labelled_range[0] - dt.timedelta(days=1)) if labelled_range else TRAIN
    work = Path(workdir or tempfile.mkdtemp(prefix="lstmad-scada-injection-"))
    work.mkdir(parents=True, exist_ok=True)
    frame, events, curtailed = build_study(load_scada(), seed, labelled=labelled_range)
    source = work / "scada_injected.parquet"
    frame.to_parquet(source)
    events.to_csv(work / "events.csv", index=False)
    results, prepared = {}, False
    for name in models:
        started = time.time()
        raw = study_config(work / "home", source, name, seed, epochs, cross_fit_folds, per_asset, calibration_range,
                           labelled_range)
        raw["pipeline"] = "scada_injection"  # one home: the tensor blocks are prepared once for every detector
        conf = work / f"{name}.yaml"
        conf.write_text(yaml.safe_dump(raw, sort_keys=False))
        if not prepared:
            # the normalisation's statistics from the training days alone, not the labelled range's faults
            run_cli(conf, "prepare", "--start", train[0].isoformat(), "--end", train[1].isoformat(), "--fit-stats")
            for first, last in [labelled_range] if labelled_range else []:
                run_cli(conf, "prepare", "--start", first.isoformat(), "--end", last.isoformat())
            run_cli(conf, "prepare", "--start", TEST[0].isoformat(), "--end", TEST[1].isoformat())
            if calibration_range:
                run_cli(conf, "prepare", "--start", calibration_range[0].isoformat(), "--end",
                        calibration_range[1].isoformat())
            prepared = True
            progress(f"scada injection: prepared in {time.time() - started:.0f} s")
        trained = run_cli(conf, "train")
        version = str(trained["model_version"])
        run_cli(conf, "score", "--date", TEST[0].isoformat(), "--end", TEST[1].isoformat(), "--model-version", version)
        lake = work / "home" / "scada_injection" / "lake"
        result = evaluate(lake, version, events, curtailed, raw["score"]["min_interval_s"])
        result.update(seconds=round(time.time() - started, 1), model_version=version,
                      calibration_intervals_per_asset_week=trained["metrics"].get("calibration_intervals_per_asset_week"),
                      notes=trained.get("notes", {}))
        if trained.get("candidates"):  # what model.candidates / model.driver_sets compared, and chose
            result.update(candidates=trained["candidates"]["compared"], chosen=trained["candidates"]["chosen"],
                          chosen_by=trained["candidates"]["by"])
        results[name] = result
        progress(f"scada injection {name}: AUROC {result['auroc']:.3f}, events found {result['interval_recall']:.2f}, "
                 f"false intervals/turbine-week {result['false_intervals_per_asset_week']:.2f}, "
                 f"on curtailment {result['intervals_on_curtailment']} ({result['seconds']} s)")
    protocol = {"train": [d.isoformat() for d in train],
                "labelled_range": [d.isoformat() for d in labelled_range] if labelled_range else None, "test": [d.isoformat() for d in TEST], "seed": seed,
                "epochs": epochs, "classes": [dataclasses.asdict(f) for f in FAULT_CLASSES],
                "events": int(len(events)), "curtailments": int(len(curtailed)),
                "threshold": "alarms_per_week 0.5 on " + (
                    f"the normal windows of {calibration_range[0]}..{calibration_range[1]}" if calibration_range else
                    calibrated_on(cross_fit_folds, "the latest 10 % of the training windows"))
                + (", per turbine" if per_asset else ""),
                "workdir": str(work)}
    return write_report("scada_injection", {"models": results, "protocol": protocol}, json_path,
                        markdown(results, protocol), {"classes": lambda ax: _plot(ax, results)})


def markdown(results: dict, protocol: dict) -> str:
    lines = [f"La Haute Borne fault-injection study: {protocol['events']} injected events, {protocol['curtailments']} "
             f"curtailments, trained on {protocol['train'][0]}..{protocol['train'][1]}, scored "
             f"{protocol['test'][0]}..{protocol['test'][1]} through the CLI", "",
             "| model | AUROC | PR-AUC | VUS-PR | events found | false intervals / turbine-week | delay (h) | CARE "
             "| FAR normal rows | intervals on curtailment | false intervals / week, lowest–highest turbine |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {fmt(m['auroc'])} | {fmt(m['pr_auc'])} | {fmt(m['vus_pr'])} | "
                     f"{fmt(m['interval_recall'], 2)} | {fmt(m['false_intervals_per_asset_week'], 2)} | "
                     f"{fmt(m['detection_delay_min'] / 60 if m['detection_delay_min'] == m['detection_delay_min'] else None, 1)} | "
                     f"{fmt(m['care'])} | {fmt(m['realized_far'], percent=True)} % | {m['intervals_on_curtailment']} | "
                     f"{low_high(m.get('by_asset', {}), 'false_intervals_per_asset_week')} |")
    classes = sorted({c for m in results.values() for c in m["classes"]})
    lines += ["", "Per fault class: AUROC / events found", "",
              "| class | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for c in classes:
        cells = [f"{fmt(results[n]['classes'][c]['auroc'])} / {fmt(results[n]['classes'][c]['interval_recall'], 2)}"
                 for n in results]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for name, m in results.items():
        if m.get("candidates"):
            compared = ", ".join(f"{k} {fmt(v)}" for k, v in m["candidates"].items())
            lines += ["", f"{name}: {m['chosen']} chosen by the {m['chosen_by']} (AUROC there: {compared})"]
    return "\n".join(lines) + "\n"


def _plot(ax, results: dict) -> None:
    classes = sorted({c for m in results.values() for c in m["classes"]})
    width = 0.8 / max(len(results), 1)
    for i, (name, m) in enumerate(results.items()):
        ax.bar(np.arange(len(classes)) + i * width, [m["classes"][c]["auroc"] for c in classes], width, label=name)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
    ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=7)
    ax.axhline(0.85, ls=":", color="k")
    ax.set_ylabel("AUROC")
    ax.set_title("La Haute Borne injection study: AUROC per fault class")
    ax.legend(fontsize=7)
