"""Integration on a tiny farm: prepare → train → score → drift → SQL, asserting on the rows written."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lstmad import names, stages
from lstmad.config import load_config
from lstmad.dates import date_range
from lstmad.detectors import build_detector
from lstmad.io import lakehouse, model_store
from lstmad.io.evaluations import record_evaluation
from lstmad.io.tensor_store import block_digests, load_stats, read_blocks
from lstmad.layout import Paths, PrepareError
from lstmad.stages.promote import decide
from lstmad.training import fitting
from tests.conftest import REPO, tiny_config_dict, write_config

pytestmark = pytest.mark.spark

SCORED = dt.date(2026, 1, 7)
BAD_DAY = "2026-01-02"


def inject_bad_rows(raw_root) -> dict[str, int]:
    """Add known-bad rows to one raw partition; returns the quarantine reasons we expect, counted by hand."""
    file = raw_root / f"date={BAD_DAY}" / "part-0.parquet"
    frame = pd.read_parquet(file)
    null_ts = frame.iloc[[10]].assign(timestamp=pd.NaT)
    nan_value = frame.iloc[[20]].assign(power=np.nan)          # replaces row 20 (original dropped below)
    inf_value = frame.iloc[[21]].assign(acc_x=np.inf)           # replaces row 21
    duplicate = frame.iloc[[30, 31]].assign(power=lambda f: f.power + 1.0)  # conflicting copies of 30, 31
    exact = frame.iloc[[50]]                                    # an exact copy of row 50
    outside = frame.iloc[[40]].assign(timestamp=frame.timestamp.iloc[40] + pd.Timedelta(days=3))
    frame = pd.concat([frame.drop(index=[20, 21]), null_ts, nan_value, inf_value, duplicate, exact, outside],
                      ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), file, coerce_timestamps="us")
    # Rows set aside: rows 30, 31 and their conflicting copies all go (no telling which is right). The NaN
    # and the inf are value faults: masked in rows that are kept, and recorded.
    return {"null_or_unparseable_timestamp": 1, "conflicting_duplicate": 4, "timestamp_outside_partition": 1}


def run_job(name: str, argv: list[str]) -> dict:
    """Run jobs/<name>.py's main() in this process (sharing the Spark session); returns its JSON line."""
    import contextlib
    import importlib.util
    import io
    import sys

    sys.path.insert(0, str(REPO / "jobs"))
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.main(argv)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("home")
    conf = write_config(home / "tiny.yaml", tiny_config_dict(home))
    config = load_config(conf)
    paths = Paths.of(config)
    stages.generate(config)
    clean_day = pd.read_parquet(paths.raw / "date=2026-01-03" / "part-0.parquet")
    expected_reasons = inject_bad_rows(paths.raw)
    prepared = stages.prepare_training_data(config)
    trained = stages.train(config)
    nightly = stages.prepare(config, SCORED, SCORED)
    worker_folders = set(Path(tempfile.gettempdir()).glob("lstmad-worker-model-*"))
    first = stages.score(config, SCORED)
    snapshot = {t: lakehouse.read_table(paths.lake, t) for t in (names.ANOMALY_SCORES, names.ANOMALY_INTERVALS)}
    versions = {t: lakehouse.table_version(paths.lake, t) for t in snapshot}
    second = run_job("score", ["--conf", str(conf), "--date", SCORED.isoformat()])  # the spark-submit entry point
    drifted = stages.drift(config, SCORED)
    left_worker_folders = set(Path(tempfile.gettempdir()).glob("lstmad-worker-model-*")) - worker_folders
    # a second model of another kind, through the promotion gate against the champion
    challenger_config = load_config(conf, {"model.detector": "iae_lstm_kl", "model.variant": "iaead_soft",
                                           "model.epochs": 2})
    challenger = stages.train(challenger_config)
    return dict(challenger=challenger, config=config, conf=conf, paths=paths, prepared=prepared, trained=trained, nightly=nightly,
                first=first, second=second, drifted=drifted, snapshot=snapshot, versions=versions,
                expected_reasons=expected_reasons, clean_day=clean_day,
                left_worker_folders=left_worker_folders)


def test_rows_read_equal_kept_plus_quarantined(run):
    train_range = run["prepared"][0]
    assert train_range["rows_read"] == (train_range["rows_kept"] + train_range["rows_quarantined"]
                                        + train_range["exact_duplicates_dropped"])
    assert train_range["quarantined_by_reason"] == run["expected_reasons"]
    assert train_range["exact_duplicates_dropped"] == 1
    # pandas writes its NaN as a Parquet null (a missing value, masked, not recorded); the inf stays inf
    assert train_range["values_masked_by_reason"] == {"missing_value": 1, "non_finite_value": 1}
    assert train_range["values_masked_by_channel"] == {"acc_x": 1, "power": 1}
    # 2 turbines × 4 days × 288 five-minute rows, minus the 2 rows replaced, plus the 7 injected rows
    assert train_range["rows_read"] == 2 * 4 * 288 - 2 + 7
    quarantine = lakehouse.read_table(run["paths"].lake, names.QUARANTINE).to_pandas()
    assert quarantine.reason.value_counts().to_dict() == {**run["expected_reasons"], "non_finite_value": 1}
    assert quarantine.channel.dropna().tolist() == ["acc_x"]
    assert (quarantine.date == BAD_DAY).all()
    assert all(json.loads(row) for row in quarantine.source_row)


@pytest.mark.parametrize("date", ["2026-01-03", SCORED.isoformat()])
def test_blocks_hold_smoothed_normalised_values_equal_to_numpy_reference(run, date):
    """A training date (blocks cached until the statistics are fitted, then written) and the scored night
    (statistics known: each task writes its blocks in the one pass) against the same NumPy reference."""
    config, paths = run["config"], run["paths"]
    stats = load_stats(paths.tensors)
    day = run["clean_day"] if date == "2026-01-03" else pd.read_parquet(paths.raw / f"date={date}" / "part-0.parquet")
    turbine = day[day.turbine_id == "T01"].sort_values("timestamp")
    blocks = read_blocks(paths.tensors, [date]).to_pandas()
    blocks = blocks[blocks.asset_id == "T01"].sort_values("block_start")
    # 288 own rows in blocks of at most 100 rows, W−1 = 11 of which repeat the previous block: 89 own per block
    assert len(blocks) == 4 and (blocks.n_rows <= config.prepare.block_rows).all()
    own = np.concatenate([np.frombuffer(b["values"], np.float32).reshape(b["n_rows"], b["n_channels"])[b["n_history"]:]
                          for _, b in blocks.iterrows()])
    assert own.shape == (288, 26)
    raw = turbine[list(config.source.channel_names)].to_numpy()
    smoothed = pd.DataFrame(raw).rolling(5, center=True, min_periods=1).mean().to_numpy()
    # interior rows have all ±2 neighbours inside day 3
    expected = (smoothed[2:-2] - np.array(stats.offset)) / np.array(stats.scale)
    np.testing.assert_allclose(own[2:-2], expected, rtol=1e-5, atol=1e-5)
    assert set(blocks.stats_id) == {stats.stats_id}


def test_window_counts_follow_segments(run):
    # Scored day: full history from the previous day, so one window per own row: 2 turbines × 288.
    assert run["nightly"]["windows"] == 2 * 288
    # Training range, independently with pandas: keep the usable rows (conflicting copies all go, exact
    # copies once), put them on the 5-minute grid, fill gaps of up to max_gap_steps (filled rows count as fully
    # masked), cut runs at longer gaps, and count the windows of each run with at most max_masked_share of
    # masked values.
    prep = run["config"].prepare
    window = prep.window
    raw = pd.concat([pd.read_parquet(run["paths"].raw / f"date=2026-01-0{d}").assign(date=f"2026-01-0{d}")
                     for d in range(1, 5)])
    channels = list(run["config"].source.channel_names)
    usable = raw.dropna(subset=["timestamp"])
    usable = usable[usable.timestamp.dt.strftime("%Y-%m-%d") == usable.date].drop_duplicates()
    copies = usable.groupby(["turbine_id", "timestamp"]).timestamp.transform("size")
    usable = usable[copies == 1]
    expected = 0
    for _, series in usable.groupby("turbine_id"):
        series = series.sort_values("timestamp")
        steps = ((series.timestamp - series.timestamp.iloc[0]) // pd.Timedelta(seconds=prep.step_s)).to_numpy()
        masked = (~np.isfinite(series[channels].to_numpy())).sum(axis=1)
        cuts = np.flatnonzero(np.diff(steps) - 1 > prep.max_gap_steps) + 1
        for run_steps, run_masked in zip(np.split(steps, cuts), np.split(masked, cuts)):
            grid = np.full(run_steps[-1] - run_steps[0] + 1, len(channels))
            grid[run_steps - run_steps[0]] = run_masked
            share = pd.Series(grid).rolling(window).sum().to_numpy()[window - 1:] / (window * len(channels))
            expected += int((share <= prep.max_masked_share + 1e-12).sum())
    assert run["prepared"][0]["windows"] == expected
    assert expected < 2 * (4 * 288 - (window - 1))  # the bad rows did cost windows


def test_training_logged_and_registered(run):
    trained = run["trained"]
    assert trained["model_version"] == "1" and trained["decision"] == "promoted"
    metrics = trained["metrics"]
    assert np.isfinite(metrics["eval_auroc"]) and 0.0 <= metrics["eval_auroc"] <= 1.0
    assert metrics["excluded_windows"] > 0  # day 4 has labelled icing
    from lstmad.io import tracking

    config = run["config"]
    # the first model scored the date (the challenger trained later may have replaced it since)
    scores = run["snapshot"][names.ANOMALY_SCORES].to_pandas()
    assert set(scores.model_version) == {"1"} and set(scores.mlflow_run_id) == {trained["run_id"]}
    logged = tracking.run_metrics(config.tracking_uri, trained["run_id"])
    assert logged["eval_auroc"] == pytest.approx(metrics["eval_auroc"])
    assert "val_loss" in logged and "threshold" in logged
    import mlflow

    mlflow.set_tracking_uri(config.tracking_uri)
    stats = mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/normalisation.json")
    assert stats["stats_id"] == load_stats(run["paths"].tensors).stats_id
    assert mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/threshold.json")["value"] == pytest.approx(metrics["threshold"])
    bundle_json = json.loads((run["paths"].models / "v1" / "bundle.json").read_text())
    assert bundle_json["channels"] == list(config.source.channel_names)
    assert bundle_json["stats"]["stats_id"] == load_stats(run["paths"].tensors).stats_id


def test_the_pyfunc_model_normalises_each_asset_with_its_own_statistics_and_refuses_gaps(run):
    from lstmad.serving.pyfunc import WindowScorer
    from lstmad.transforms.blocks import Windows

    _, bundle = model_store.champion_bundle(run["config"])
    s = bundle.stats
    offset, scale = np.asarray(s.offset), np.asarray(s.scale)
    own_offset, own_scale = offset + 1.0, scale * 2.0
    per_asset = dataclasses.replace(s, per_asset=(("T01", tuple(own_offset), tuple(own_scale)),))
    scorer = WindowScorer(dataclasses.replace(bundle, stats=per_asset))
    x = offset + np.random.default_rng(0).normal(size=(5, bundle.window, len(s.channels))) * scale
    expected_t01 = bundle.detector.score(Windows.from_array((x - own_offset) / own_scale))
    expected_global = bundle.detector.score(Windows.from_array((x - offset) / scale))
    assert not np.allclose(expected_t01, expected_global)
    np.testing.assert_allclose(scorer.predict(x, {"asset": "T01"}), expected_t01, rtol=1e-6)
    np.testing.assert_allclose(scorer.predict(x, {"asset": "T09"}), expected_global, rtol=1e-6)  # unseen: global
    np.testing.assert_allclose(scorer.predict({"windows": x}), expected_global, rtol=1e-6)
    x[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite values in windows \[2\]"):
        scorer.predict(x)


def test_training_run_logs_figures_signature_and_lineage(run):
    """The run holds the ROC and score-timeline plots, the input signature, and lineage: the tensor table,
    its content versions for the training and evaluation dates (recomputed here from the files' bytes), the
    date ranges and the code's commit."""
    import hashlib
    import subprocess

    import mlflow

    from lstmad.io import tracking

    config, trained, paths = run["config"], run["trained"], run["paths"]
    mlflow.set_tracking_uri(config.tracking_uri)
    client = tracking.mlflow_client(config.tracking_uri)
    listed = {a.path for a in client.list_artifacts(trained["run_id"], "plots")}
    assert listed == {"plots/roc.png", "plots/score_timeline.png"}
    for name in listed:
        with open(mlflow.artifacts.download_artifacts(f"runs:/{trained['run_id']}/{name}"), "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    # The registered version is an MLflow model: its signature and metadata state window and channel order,
    # and mlflow.pyfunc scores windows of the prepared series in source units as the Spark job scored them.
    uri = f"models:/{config.registered_model_name}/{trained['model_version']}"
    info = mlflow.models.get_model_info(uri)
    window, channels = config.prepare.window, list(config.source.channel_names)
    assert info.signature.inputs.inputs[0].shape == (-1, window, len(channels))
    assert info.signature.outputs.inputs[0].shape == (-1,) and info.signature.params.params[0].name == "asset"
    assert info.metadata["channels"] == channels and info.metadata["window"] == window
    assert info.metadata["normalisation"] == client.get_run(trained["run_id"]).data.params["stats_id"]
    model = mlflow.pyfunc.load_model(uri)
    blocks = read_blocks(paths.tensors, [SCORED.isoformat()]).to_pylist()
    block = min((b for b in blocks if b[names.ASSET] == "T01"), key=lambda b: b[names.BLOCK_START])
    n_rows, n_ch = block[names.N_ROWS], block[names.N_CHANNELS]
    normalised = np.frombuffer(block[names.VALUES], np.float32).reshape(n_rows, n_ch)
    source = load_stats(paths.tensors, block[names.STATS_ID]).invert(normalised.astype(np.float64), "T01")
    windows = np.stack([source[i:i + window] for i in range(n_rows - window + 1)]).astype(np.float32)
    ends = block[names.BLOCK_START] + (np.arange(window - 1, n_rows) * block[names.STEP_S]) * 1_000_000
    written = lakehouse.read_table(paths.lake, names.ANOMALY_SCORES).to_pandas()
    written = written[(written.scored_date == SCORED.isoformat()) & (written[names.ASSET] == "T01")
                      & (written.model_version == trained["model_version"])]
    by_time = dict(zip((written.timestamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us"), written.score))
    predicted = model.predict(windows, params={"asset": "T01"})
    pairs = [(predicted[i], by_time[t]) for i, t in enumerate(ends) if t in by_time]
    assert len(pairs) >= n_rows - window - 5
    np.testing.assert_allclose(*np.array(pairs).T, rtol=1e-4, atol=1e-6)
    with pytest.raises(Exception, match=rf"does not match expected shape \(-1, {window}, {len(channels)}\)"):
        model.predict(windows[:, :5])  # MLflow enforces the signature before lstmad sees the input
    data = client.get_run(trained["run_id"]).data

    def version(days):
        lines = []
        for day in days:
            # the date's blocks (each block hashed: tests/test_tensors.py checks that digest by hand)
            digests = sorted(d for f in (paths.tensors / f"date={day}").glob("*.parquet")
                             for d in block_digests(pq.read_table(f)))
            lines.append(f"{day}=sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest())
        return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()

    t = config.train
    assert data.params["tensor_table"] == str(paths.tensors)
    assert data.params["train_range"] == f"{t.start}..{t.end}" and data.params["eval_range"] == f"{t.eval_start}..{t.eval_end}"
    assert data.params["eval_data_version"] == version([d.isoformat() for d in date_range(t.eval_start, t.eval_end)])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert data.tags["git_commit"].startswith(head) and data.tags["lstmad_version"]


def test_scores_and_intervals_written(run):
    scores = run["snapshot"][names.ANOMALY_SCORES].to_pandas()
    assert len(scores) == 2 * 288 == run["first"]["n_scores"]
    assert set(scores.scored_date) == {SCORED.isoformat()}
    assert scores.timestamp.dt.date.eq(SCORED).all()
    assert (scores.flag == (scores.score > scores.threshold)).all()
    assert scores.groupby("asset_id").timestamp.nunique().to_dict() == {"T01": 288, "T02": 288}
    intervals = run["snapshot"][names.ANOMALY_INTERVALS].to_pandas()
    assert len(intervals) == run["first"]["n_intervals"]
    for interval in intervals.itertuples():
        inside = scores[(scores.asset_id == interval.asset_id) & scores.timestamp.between(interval.start, interval.end)]
        assert inside.flag.sum() == interval.n_points
        assert inside.score.max() == pytest.approx(interval.peak_score)
        assert interval.duration_s >= run["config"].score.min_interval_s
        assert interval.severity == pytest.approx(interval.peak_score / interval.threshold)
        assert interval.model_version == "1" and interval.mlflow_run_id == run["trained"]["run_id"]


def test_scoring_workers_leave_no_model_folders_behind(run):
    # each Python worker unpacks the broadcast model into a temporary folder; a nightly job that left them
    # would fill the temp dir of a long-running cluster, one folder per worker per model version
    assert run["left_worker_folders"] == set()


def test_scoring_the_same_date_twice_leaves_identical_tables(run):
    paths = run["paths"]
    for table, before in run["snapshot"].items():
        after = lakehouse.read_table(paths.lake, table)
        keys = [names.ASSET, names.TIMESTAMP] if table == names.ANOMALY_SCORES else ["interval_id"]
        assert after.sort_by([(k, "ascending") for k in keys]).equals(before.sort_by([(k, "ascending") for k in keys]))
        assert lakehouse.table_version(paths.lake, table) == run["versions"][table] + 1
    assert run["second"]["n_scores"] == run["first"]["n_scores"]


def test_drift_row_per_day(run):
    drift = lakehouse.read_table(run["paths"].lake, names.DRIFT_METRICS).to_pandas()
    assert drift.scored_date.tolist() == [SCORED.isoformat()]
    row = drift.iloc[0]
    assert row.n_rows == 2 * 288 and row.max_psi >= 0
    scores = run["snapshot"][names.ANOMALY_SCORES].to_pandas()
    assert row.alarm_rate == pytest.approx(scores.flag.mean())
    psi = json.loads(row.psi_by_channel)
    assert list(psi) == list(run["config"].source.channel_names) and max(psi.values()) == pytest.approx(row.max_psi, abs=1e-6)
    assert stages.retrain_needed(run["config"], SCORED) == bool(row.retrain)


def test_sql_cli_answers_and_refuses_writes(run):
    from lstmad.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["sql", "select count(*) as n from anomaly_scores", "--conf", str(run["conf"]),
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == [{"n": 2 * 288}]
    refused = runner.invoke(app, ["sql", "delete from anomaly_scores", "--conf", str(run["conf"])])
    assert refused.exit_code == 2 and "read-only" in refused.output


def _rewrite(file, change):
    table = pq.read_table(file)
    pq.write_table(change(table), file)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["power"]), "column 'power' is missing"),
    (lambda t: t.set_column(t.schema.get_field_index("acc_x"), "acc_x",
                            pa.array([str(v) for v in t.column("acc_x").to_pylist()])),
     "column 'acc_x' changed type from number to string"),
])
def test_bad_schema_stops_prepare_before_writing(run, tmp_path, change, message):
    paths, config = run["paths"], run["config"]
    file = paths.raw / "date=2026-01-08" / "part-0.parquet"
    original = file.read_bytes()
    quarantine_version = lakehouse.table_version(paths.lake, names.QUARANTINE)
    try:
        _rewrite(file, change)
        with pytest.raises(PrepareError) as error:
            stages.prepare(config, dt.date(2026, 1, 8), dt.date(2026, 1, 8))
        assert message in str(error.value) and str(file) in str(error.value)
        assert not (paths.tensors / "date=2026-01-08").exists()
        assert lakehouse.table_version(paths.lake, names.QUARANTINE) == quarantine_version
    finally:
        file.write_bytes(original)


def test_promotion_gate_compares_with_the_champion_on_the_same_evaluation_data(run):
    from lstmad.io import tracking

    config, challenger, first = run["config"], run["challenger"], run["trained"]
    assert challenger["model_version"] == "2"
    new, old = challenger["challenger_auroc"], challenger["champion_auroc"]
    assert old == pytest.approx(first["metrics"]["eval_auroc"])  # the champion re-scored on the same windows
    # both models judge every window in normal operation here (no operating states): the challenger's
    # AUROC on the windows both judge is its evaluation AUROC from training
    assert new == pytest.approx(challenger["metrics"]["eval_auroc"]) and challenger["windows_compared"] > 0
    expected = "promoted" if new >= old else "challenger"
    assert challenger["decision"] == expected and f"{new:.4f}" in challenger["reason"]
    champion = tracking.champion(config.tracking_uri, config.registered_model_name)
    assert champion["version"] == ("2" if expected == "promoted" else "1")
    bundle = json.loads((run["paths"].models / "v2" / "detector.json").read_text())
    assert bundle["detector"] == "iae_lstm_kl" and bundle["params"]["svdd"] == "soft"


def test_without_labels_the_gate_compares_alarm_rates_over_what_each_model_expects(run):
    """No labels of both classes on the evaluation range: each model's alarm rate there over its expected
    rate decides (the champion of a drifted fleet alarms far more than it expected)."""
    import dataclasses

    from lstmad.serving.scoring import score_blocks

    config, paths = run["config"], run["paths"]
    blocks, _ = fitting.windows_of(config, config.train.eval_start, config.train.eval_end)
    n_rows = blocks.column(names.N_ROWS).to_pylist()
    unlabelled = blocks.set_column(blocks.schema.get_field_index(names.LABELS), names.LABELS,
                                   pa.array([bytes(np.full(n, -1, np.int8)) for n in n_rows], pa.binary()))
    champion = model_store.champion_bundle(config)[1]
    stats = {sid: load_stats(paths.tensors, sid) for sid in set(blocks.column(names.STATS_ID).to_pylist())}
    scores = score_blocks(champion, blocks, stats, max_masked_share=config.prepare.max_masked_share)
    scores = scores.column(names.SCORE).to_numpy()
    champion_ratio = float(np.mean(scores > champion.threshold)) / champion.expected_alarm_rate
    lenient = dataclasses.replace(config, train=dataclasses.replace(config.train, promotion_max_score_ks=1.0))
    same = decide(lenient, float("nan"), unlabelled, champion)
    assert same["criterion"] == "alarm_rate" and same["decision"] == "promoted"  # a tie is not worse
    assert same["champion_alarm_ratio"] == pytest.approx(champion_ratio)
    assert 0 <= same["challenger_score_ks"] == same["champion_score_ks"] <= 1
    # Score stability: a challenger whose validation scores all lie above every evaluation score has drifted
    # away from what it learnt (KS 1): not promoted however calm its alarms, unless the criterion is off.
    reference = {**champion.drift_reference, "score_quantiles": [float(scores.max()) + 1.0 + q for q in range(101)]}
    unstable = dataclasses.replace(champion, drift_reference=reference)
    refused = decide(config, float("nan"), unlabelled, unstable)
    assert refused["decision"] == "challenger" and refused["challenger_score_ks"] == pytest.approx(1.0)
    assert "score KS against the scores it was calibrated on 1.00 > 0.5" in refused["reason"]
    off = dataclasses.replace(config, train=dataclasses.replace(config.train, promotion_max_score_ks=0.0))
    assert decide(off, float("nan"), unlabelled, unstable)["decision"] \
        == "promoted"
    noisy = dataclasses.replace(champion, threshold=float(np.quantile(scores, 0.5)))  # alarms on half the rows
    worse = decide(config, float("nan"), unlabelled, noisy)
    assert worse["decision"] == "challenger"
    assert worse["challenger_alarm_ratio"] == pytest.approx(float(np.mean(scores > noisy.threshold))
                                                           / champion.expected_alarm_rate)


def test_a_training_window_ends_at_the_drifted_night(run):
    config = load_config(run["conf"], {"train.window_days": 5, "train.eval_days": 2})
    window = stages.training_window(config, dt.date(2026, 1, 20)).train
    assert (window.start, window.end, window.eval_start, window.eval_end) == (
        dt.date(2026, 1, 14), dt.date(2026, 1, 18), dt.date(2026, 1, 19), dt.date(2026, 1, 20))
    with pytest.raises(ValueError, match="train.window_days must be set"):
        stages.training_window(run["config"], dt.date(2026, 1, 20))


def test_training_leaves_out_windows_inside_severe_intervals(run):
    """Windows ending inside an interval at least train.exclude_severity severe (of the scored night) are left
    out of training; the count is in the result."""
    from lstmad.transforms.blocks import Windows

    config = load_config(run["conf"], {"train.exclude_severity": 2.0, "train.start": SCORED, "train.end": SCORED})
    intervals = lakehouse.read_table(run["paths"].lake, names.ANOMALY_INTERVALS).to_pandas()
    day = intervals[intervals.scored_date == SCORED.isoformat()]
    assert len(day) > 0
    # one window at the start of every interval, one a step after its end, on its asset
    starts = (day.start - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    ends = (day.end - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us") + config.prepare.step_s * 1_000_000
    windows = Windows.from_array(np.zeros((2 * len(day), 2, 1), np.float32))
    assets = sorted(set(day.asset_id))
    windows = dataclasses.replace(windows, end_us=np.concatenate([starts, ends]), assets=assets,
                                  asset=np.array([assets.index(a) for a in list(day.asset_id) * 2]))
    inside = fitting.inside_severe_intervals(config, windows)
    expected = np.concatenate([day.severity.to_numpy() >= 2.0, np.zeros(len(day), bool)])
    assert expected.any() and inside.tolist() == expected.tolist()


def test_sharded_training_leaves_out_the_same_severe_windows_as_in_memory_training(run):
    overrides = {"train.exclude_severity": 2.0, "train.start": SCORED - dt.timedelta(days=1), "train.end": SCORED}
    config = load_config(run["conf"], overrides)
    _, windows = fitting.windows_of(config, config.train.start, config.train.end)
    windows = windows.subset(np.flatnonzero(windows.label_any != 1))  # exclude_labelled_anomalies comes first
    inside = fitting.inside_severe_intervals(config, windows)
    assert 0 < inside.mean() <= fitting.MAX_SEVERE_SHARE
    sharded = load_config(run["conf"], {**overrides, "train.distributed.processes": 1, "model.epochs": 1})
    _, counts, _ = fitting.fit_sharded(sharded, build_detector(sharded.model))
    assert counts["excluded_severe_windows"] == int(inside.sum())


def test_a_date_with_no_usable_rows_left_keeps_no_stale_blocks(run):
    paths, config = run["paths"], run["config"]
    day = dt.date(2026, 1, 8)
    file = paths.raw / "date=2026-01-08" / "part-0.parquet"
    original = file.read_bytes()
    try:
        assert stages.prepare(config, day, day)["blocks"] > 0
        assert (paths.tensors / "date=2026-01-08").is_dir()
        _rewrite(file, lambda t: t.set_column(t.schema.get_field_index("timestamp"), "timestamp",
                                              pa.nulls(t.num_rows, t.schema.field("timestamp").type)))
        summary = stages.prepare(config, day, day)
        assert summary["rows_kept"] == 0 and summary["quarantined_by_reason"] == {"null_or_unparseable_timestamp": 576}
        assert summary["blocks"] == 0 and not (paths.tensors / "date=2026-01-08").exists()
        quarantine = lakehouse.read_table(paths.lake, names.QUARANTINE).to_pandas()
        assert (quarantine.date == "2026-01-08").sum() == 576
    finally:
        file.write_bytes(original)


def test_re_preparing_a_date_gives_identical_blocks_and_leaves_other_dates_alone(run):
    paths, config = run["paths"], run["config"]
    day = SCORED.isoformat()

    def snapshot(date):
        table = read_blocks(paths.tensors, [date])
        return table.sort_by([(names.ASSET, "ascending"), (names.BLOCK_START, "ascending")]).to_pylist()

    others = {p.name: sorted((f.name, f.stat().st_mtime_ns) for f in p.iterdir())
              for p in paths.tensors.iterdir() if p.is_dir() and p.name != f"date={day}"}
    before = snapshot(day)
    again = stages.prepare(config, SCORED, SCORED)
    assert snapshot(day) == before and again["windows"] == run["nightly"]["windows"]
    assert len(list((paths.tensors / f"date={day}").iterdir())) >= 1
    assert {p.name: sorted((f.name, f.stat().st_mtime_ns) for f in p.iterdir())
            for p in paths.tensors.iterdir() if p.is_dir() and p.name != f"date={day}"} == others
    # the first block of the day carries exactly W−1 rows of the previous day as history
    prep = config.prepare
    first_start = min(b[names.BLOCK_START] for b in before)
    day_start_us = int(dt.datetime.combine(SCORED, dt.time(), tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    assert day_start_us - first_start == (prep.window - 1) * prep.step_s * 1_000_000


def test_spark_scores_equal_in_process_scores(run):
    """The scores written through Spark (mapInArrow, model loaded per worker) equal scoring the same blocks in
    this process, window by window."""
    from lstmad.serving.scoring import score_blocks

    config, paths = run["config"], run["paths"]
    written = lakehouse.read_table(paths.lake, names.ANOMALY_SCORES).to_pandas()
    written = written[written.scored_date == SCORED.isoformat()]
    # the model that wrote them (a later challenger may hold the champion alias by now)
    bundle = model_store.load_bundle(config, {"version": written.model_version.iloc[0], "source": None})
    blocks = read_blocks(paths.tensors, [SCORED.isoformat()])
    stats = {sid: load_stats(paths.tensors, sid) for sid in set(blocks.column(names.STATS_ID).to_pylist())}
    local = score_blocks(bundle, blocks, stats, max_masked_share=config.prepare.max_masked_share).to_pandas()
    written["timestamp_us"] = (written.timestamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    merged = local.merge(written, on=[names.ASSET, "timestamp_us"], suffixes=("_local", "_spark"))
    assert len(merged) == len(local) == len(written) > 0
    np.testing.assert_allclose(merged.score_spark, merged.score_local, rtol=0, atol=1e-6)


def test_scoring_refuses_a_model_whose_channels_window_or_normalisation_differ_from_the_data(run, monkeypatch):
    import dataclasses as dc

    from lstmad.serving.bundle import ModelMismatchError
    from lstmad.serving.scoring import score_blocks

    config, paths = run["config"], run["paths"]
    before = {t: lakehouse.table_version(paths.lake, t) for t in (names.ANOMALY_SCORES, names.ANOMALY_INTERVALS)}
    with pytest.raises(ModelMismatchError, match="model expects window 12 at 300s steps, data have window 24"):
        stages.score(load_config(run["conf"], {"prepare.window": 24}), SCORED)

    registered, bundle = model_store.champion_bundle(config)
    channels = tuple(config.source.channel_names)
    with pytest.raises(ModelMismatchError, match="model channel order differs"):
        bundle.check_compatible(channels[::-1], 12, 300)
    with pytest.raises(ModelMismatchError, match=r"missing \['power'\], extra \['power_kw'\]"):
        bundle.check_compatible(tuple("power_kw" if c == "power" else c for c in channels), 12, 300)

    # Blocks normalised over the same channels in another order: mapping them onto the model's statistics
    # would silently mix channels up, so the driver refuses before any Spark task runs, naming both.
    blocks = read_blocks(paths.tensors, [SCORED.isoformat()])
    block_id = blocks.column(names.STATS_ID)[0].as_py()
    real = load_stats(paths.tensors, block_id)
    reordered = dc.replace(real, channels=real.channels[::-1], offset=real.offset[::-1], scale=real.scale[::-1])
    import sys

    # the module (lstmad.stages.score the attribute is the stage function it exports)
    monkeypatch.setattr(sys.modules["lstmad.stages.score"], "load_stats", lambda p, sid="current": reordered)
    with pytest.raises(ModelMismatchError, match=f"{paths.tensors}: tensor blocks normalised with statistics "
                                                 f"{block_id}.*channel order"):
        stages.score(config, SCORED)
    assert {t: lakehouse.table_version(paths.lake, t) for t in before} == before  # nothing written
    # the same check guards in-process scoring (evaluation, benchmarks), where block ids are the model's own
    # only when nothing needs mapping
    other = dc.replace(reordered, fitted_on="elsewhere")
    relabelled = blocks.set_column(blocks.schema.get_field_index(names.STATS_ID), names.STATS_ID,
                                   pa.array([other.stats_id] * blocks.num_rows))
    with pytest.raises(ModelMismatchError, match="channel order"):
        score_blocks(bundle, relabelled, {other.stats_id: other})
    with pytest.raises(ModelMismatchError, match="whose statistics are missing"):
        score_blocks(bundle, relabelled, {})


def test_a_backfill_range_is_checked_whole_then_scored_date_by_date(run):
    """Kept last: it writes dates besides SCORED into the score tables."""
    config, paths = run["config"], run["paths"]
    before = lakehouse.table_version(paths.lake, names.ANOMALY_SCORES)
    with pytest.raises(PrepareError, match="2026-01-08, 2026-01-09"):
        stages.score_range(config, dt.date(2026, 1, 5), dt.date(2026, 1, 9))  # 8 and 9 were never prepared
    assert lakehouse.table_version(paths.lake, names.ANOMALY_SCORES) == before  # nothing written
    backfill = run_job("score", ["--conf", str(run["conf"]), "--date", "2026-01-05", "--end", "2026-01-06"])
    assert [s["date"] for s in backfill["dates"]] == ["2026-01-05", "2026-01-06"]
    scores = lakehouse.read_table(paths.lake, names.ANOMALY_SCORES).to_pandas()
    for day in ("2026-01-05", "2026-01-06"):
        rows = scores[scores.scored_date == day]
        assert len(rows) == next(s["n_scores"] for s in backfill["dates"] if s["date"] == day) > 0
        assert rows.timestamp.dt.strftime("%Y-%m-%d").eq(day).all()
    assert backfill["n_scores"] == sum(s["n_scores"] for s in backfill["dates"])


def test_every_trained_version_has_its_evaluation_row_matching_mlflow(run):
    from mlflow import MlflowClient

    rows = lakehouse.read_table(run["paths"].lake, names.MODEL_EVALUATIONS).to_pylist()
    by_version = {r["model_version"]: r for r in rows}
    assert set(by_version) == {"1", "2"}  # the champion and the IAE challenger
    client = MlflowClient(run["config"].tracking_uri)
    for version, trained in (("1", run["trained"]), ("2", run["challenger"])):
        row = by_version[version]
        logged = client.get_run(trained["run_id"]).data.metrics
        assert row["mlflow_run_id"] == trained["run_id"] and row["purpose"] == "training"
        assert (row["data_start"], row["data_end"]) == ("2026-01-05", "2026-01-06")
        assert row["auroc"] == pytest.approx(logged["eval_auroc"]) and row["f1"] == pytest.approx(logged["eval_f1"])
        assert row["n_points"] == logged["eval_n_points"] and row["threshold"] == pytest.approx(logged["threshold"])
        assert json.loads(row["metrics"])["recall"] == pytest.approx(logged["eval_recall"])
    # recording the same evaluation again replaces its row
    again = record_evaluation(run["paths"].lake, run["config"].registered_model_name, "1", run["trained"]["run_id"], "training", dt.date(2026, 1, 5),
                                       dt.date(2026, 1, 6), {"auroc": 0.5, "n_points": 3}, 1.0)
    rows = lakehouse.read_table(run["paths"].lake, names.MODEL_EVALUATIONS).to_pylist()
    assert len(rows) == 2 and next(r for r in rows if r["evaluation_id"] == again)["auroc"] == 0.5


def test_model_candidates_keep_the_detector_that_wins_on_the_labelled_evaluation_range(run):
    """Two candidates, fitted on the training range and judged on the labelled evaluation range; the winner is
    trained as the run's detector, every candidate's AUROC is in the run's metrics. (Last in this module: it
    registers a third version.)"""
    from sklearn.metrics import roc_auc_score

    from lstmad.transforms.blocks import windows_from_blocks

    config = load_config(run["conf"], {"model.candidates": ["isolation_forest", "pca_t2q"]})
    trained = stages.train(config, promote=False)
    metrics = trained["metrics"]
    assert metrics["candidates_by_labels"] == 1.0
    # independently: each candidate fitted on the same training windows, AUROC on the evaluation windows
    t = config.train
    train_windows = windows_from_blocks(read_blocks(run["paths"].tensors, [d.isoformat() for d in date_range(t.start, t.end)]),
                                        config.prepare.window, max_masked_share=config.prepare.max_masked_share)
    train_windows = train_windows.subset(np.flatnonzero(train_windows.label_any != 1))
    evaluation = windows_from_blocks(read_blocks(run["paths"].tensors, [d.isoformat() for d in date_range(t.eval_start, t.eval_end)]),
                                     config.prepare.window, max_masked_share=config.prepare.max_masked_share)
    known = evaluation.label_last >= 0
    independent = {}
    for name in ("isolation_forest", "pca_t2q"):
        model = dataclasses.replace(config.model, detector=name, candidates=())
        scores = build_detector(model).fit(train_windows).score(evaluation)
        independent[name] = roc_auc_score(evaluation.label_last[known] == 1, scores[known])
        assert metrics[f"candidate_{name}_auroc"] == pytest.approx(independent[name], abs=1e-9)
    winner = max(independent, key=independent.get)
    bundle = model_store.load_bundle(config, {"version": str(trained["model_version"]), "run_id": trained["run_id"]})
    assert bundle.detector.kind == winner
    # both candidates fit in seconds: with threshold.cross_fit_folds unset the winner calibrates out of fold
    assert metrics["calibration_folds"] == 5 and "out-of-fold (5 folds)" in trained["calibration"]


def test_model_driver_sets_keep_the_roles_that_win_on_the_labelled_evaluation_range(run):
    """model.driver_sets with the forecaster: each set, and the source's own roles (environment_tmp drives),
    fitted as the drivers of a normal-behaviour model and judged on the labelled evaluation range; the winner's
    roles are the registered model's. (After the candidates test: it registers a fourth version.)"""
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    from lstmad.transforms.blocks import windows_from_blocks

    base = load_config(run["conf"])
    channels = [{"name": c, "role": "driver"} if c == "environment_tmp" else c for c in base.source.channel_names]
    config = load_config(run["conf"], {"source.channels": channels, "model.driver_sets": [["wind_speed"], []]})
    trained = stages.train(config, promote=False)
    metrics = trained["metrics"]
    assert metrics["candidates_by_labels"] == 1.0
    # independently: a forecaster with each set's channels as its drivers, on the same windows, seeded the same
    t, names = config.train, list(config.source.tensor_channels)

    def windows(start, end):
        blocks = read_blocks(run["paths"].tensors, [d.isoformat() for d in date_range(start, end)])
        return windows_from_blocks(blocks, config.prepare.window, max_masked_share=config.prepare.max_masked_share)

    train_windows = windows(t.start, t.end)
    train_windows = train_windows.subset(np.flatnonzero(train_windows.label_any != 1))
    evaluation = windows(t.eval_start, t.eval_end)
    known = evaluation.label_last >= 0
    independent = {}
    for label, drivers in (("environment_tmp", ["environment_tmp"]), ("wind_speed", ["wind_speed"]), ("none", [])):
        indices = tuple(names.index(d) for d in drivers)
        scores = build_detector(config.model, "", indices).fit(train_windows).score(evaluation)
        independent[label] = roc_auc_score(evaluation.label_last[known] == 1, scores[known])
        assert metrics[f"candidate_lstm_forecaster.drivers.{label}_auroc"] == pytest.approx(independent[label],
                                                                                            abs=1e-6)
    winner = max(independent, key=independent.get)
    # the source's own roles lose here, so the registered model's roles are the winner's, not the YAML's
    assert winner != "environment_tmp" and len(set(np.round(list(independent.values()), 6))) == 3
    bundle = model_store.load_bundle(config, {"version": str(trained["model_version"]), "run_id": trained["run_id"]})
    expected = () if winner == "none" else (names.index(winner),)
    assert bundle.detector.kind == "lstm_forecaster" and tuple(bundle.detector.params.drivers) == expected
    assert MlflowClient(config.tracking_uri).get_run(trained["run_id"]).data.tags["drivers"] == winner
    choice = trained["candidates"]
    assert choice["chosen"] == f"lstm_forecaster.drivers.{winner}" and choice["by"] == "labelled evaluation range"
    assert choice["compared"] == pytest.approx({f"lstm_forecaster.drivers.{k}": v for k, v in independent.items()},
                                               abs=1e-6)
