"""The guarantees of the result tables on a small farm scored for 30 days: intervals continue across midnight,
every interval carries its lineage, a backfill equals the nights, re-runs are idempotent, a killed job leaves
nothing partial, two jobs at once both land."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lstmad import names, stages
from lstmad.config import load_config
from lstmad.dates import date_range
from lstmad.io import lakehouse, model_store
from lstmad.io.tensor_store import block_digests, load_stats
from lstmad.layout import Paths
from tests.conftest import REPO, tiny_config_dict, write_config

pytestmark = pytest.mark.spark

FIRST, LAST = dt.date(2026, 1, 3), dt.date(2026, 2, 1)  # 30 scored nights
FAULT_CHANNEL = "pitch2_moto_tmp"
FAULT_ASSET = "T01"
# a fault injected from 22:00 on the 10th to 02:00 on the 11th: one interval across midnight
FAULT_START = pd.Timestamp("2026-01-10 22:00", tz="UTC")
FAULT_END = pd.Timestamp("2026-01-11 02:00", tz="UTC")
TABLES = (names.ANOMALY_SCORES, names.ANOMALY_INTERVALS)


def inject_fault(raw_root: Path) -> None:
    """Raise one channel of one turbine by 40 of its standard deviations over FAULT_START..FAULT_END."""
    for day in ("2026-01-10", "2026-01-11"):
        file = raw_root / f"date={day}" / "part-0.parquet"
        frame = pd.read_parquet(file)
        inside = (frame.turbine_id == FAULT_ASSET) & (frame.timestamp >= FAULT_START) & (frame.timestamp < FAULT_END)
        frame.loc[inside, FAULT_CHANNEL] += 40 * frame[FAULT_CHANNEL].std()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), file, coerce_timestamps="us")


def snapshot(lake: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for table in TABLES:
        frame = lakehouse.read_table(lake, table).to_pandas()
        keys = [names.ASSET, names.TIMESTAMP] if table == names.ANOMALY_SCORES else ["interval_id"]
        out[table] = frame.sort_values(keys).reset_index(drop=True)
    return out


def assert_same_tables(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(left[table], right[table], check_exact=False, rtol=1e-9, atol=1e-12)


def cli(conf: Path, *args: str, env: dict | None = None, wait: bool = True):
    command = [sys.executable, "-c", "from lstmad.cli import app; app()", "score", "--conf", str(conf), *args]
    environment = {**os.environ, **(env or {})}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def farm(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("guarantees")
    raw = tiny_config_dict(home, synthetic={"days": 33})
    conf = write_config(home / "tiny.yaml", raw)
    config = load_config(conf)
    paths = Paths.of(config)
    stages.generate(config)
    inject_fault(paths.raw)
    stages.prepare_training_data(config)
    trained = stages.train(config)
    stages.prepare(config, FIRST, LAST)
    for day in date_range(FIRST, LAST):  # the nightly schedule
        stages.score(config, day)
    nightly = snapshot(paths.lake)
    shutil.move(paths.lake, paths.home / "lake_nightly")
    backfill = stages.score_range(config, FIRST, LAST)
    return dict(config=config, conf=conf, paths=paths, trained=trained, nightly=nightly, backfill=backfill)


def test_a_30_day_backfill_writes_the_same_tables_as_30_nights(farm):
    assert len(farm["backfill"]["dates"]) == 30
    assert farm["nightly"][names.ANOMALY_SCORES].scored_date.nunique() == 30
    assert_same_tables(snapshot(farm["paths"].lake), farm["nightly"])
    # one commit per table for the whole range
    assert {t: lakehouse.table_version(farm["paths"].lake, t) for t in TABLES} == {t: 0 for t in TABLES}


def test_an_interval_open_at_midnight_continues_as_the_same_interval(farm):
    intervals = farm["nightly"][names.ANOMALY_INTERVALS]
    fault = intervals[(intervals.asset_id == FAULT_ASSET) & (intervals.start < FAULT_END)
                      & (intervals.end >= FAULT_START)]
    assert len(fault) == 1, fault
    row = fault.iloc[0]
    assert row.start < pd.Timestamp("2026-01-11", tz="UTC") <= row.end  # spans midnight
    assert row.scored_date == row.end.date().isoformat()  # lands with the night that ended it
    assert (intervals.interval_id == row.interval_id).sum() == 1  # and nowhere else
    scores = farm["nightly"][names.ANOMALY_SCORES]
    inside = scores[(scores.asset_id == FAULT_ASSET) & scores.timestamp.between(row.start, row.end)]
    assert row.n_points == int(inside.flag.sum())  # the points of both nights
    assert row.peak_score == pytest.approx(inside.score.max())
    assert row.mean_score == pytest.approx(inside.score[inside.flag].mean())
    expected_id = hashlib.sha1(f"{FAULT_ASSET}|{int(row.start.value // 1000)}|{farm['config'].registered_model_name}|"
                               f"{row.model_version}".encode()).hexdigest()[:16]
    assert row.interval_id == expected_id


def test_every_interval_carries_its_lineage(farm):
    config, paths, trained = farm["config"], farm["paths"], farm["trained"]
    intervals = farm["nightly"][names.ANOMALY_INTERVALS]
    assert len(intervals) > 0
    assert (intervals.model_name == config.registered_model_name).all()
    assert (intervals.model_version == trained["model_version"]).all()
    assert (intervals.mlflow_run_id == trained["run_id"]).all()
    assert (intervals.threshold_rule == "percentile 95 of validation scores").all() and (intervals.attribution == "forecast_error_share").all()
    assert np.allclose(intervals.severity, intervals.peak_score / intervals.threshold)
    assert (intervals.duration_s == (intervals.end - intervals.start).dt.total_seconds() + config.prepare.step_s).all()

    def blocks_hash(day: str) -> str:  # recomputed here from the blocks (block_digests: checked by hand in test_tensors)
        digests = sorted(d for f in (paths.tensors / f"date={day}").glob("*.parquet")
                         for d in block_digests(pq.read_table(f)))
        return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()

    for row in intervals.itertuples():
        days = pd.date_range(row.start.normalize(), row.end.normalize(), freq="D").strftime("%Y-%m-%d")
        expected = blocks_hash(days[0]) if len(days) == 1 else "sha256:" + hashlib.sha256(
            "\n".join(f"{d}={blocks_hash(d)}" for d in days).encode()).hexdigest()
        assert row.source_version == expected
    scores = farm["nightly"][names.ANOMALY_SCORES]
    assert (scores.source_version == scores.scored_date.map(blocks_hash)).all()


def test_flagged_timestamps_and_intervals_name_the_channels_that_moved(farm):
    scores = farm["nightly"][names.ANOMALY_SCORES]
    assert scores[~scores.flag].channel_shares.isna().all() and scores[scores.flag].channel_shares.notna().all()
    # inside the fault (past the first window, whose forecasts still see clean rows) the faulty channel leads
    window = pd.Timedelta(seconds=farm["config"].prepare.window * farm["config"].prepare.step_s)
    faulty = scores[(scores.asset_id == FAULT_ASSET) & (scores.timestamp >= FAULT_START + window)
                    & (scores.timestamp < FAULT_END) & scores.flag]
    assert len(faulty) > 20
    leaders = faulty.channel_shares.map(lambda pairs: pairs[0]["channel"])
    assert (leaders == FAULT_CHANNEL).mean() > 0.9, leaders.value_counts()
    for pairs in faulty.channel_shares:
        shares = [p["share"] for p in pairs]
        assert len(shares) == 26 and shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)
    # an interval's shares are the mean of its flagged timestamps' shares, its top channel the largest
    intervals = farm["nightly"][names.ANOMALY_INTERVALS]
    for interval in intervals.itertuples():
        inside = scores[(scores.asset_id == interval.asset_id) & scores.timestamp.between(interval.start, interval.end)
                        & scores.flag]
        mean = pd.DataFrame([{p["channel"]: p["share"] for p in row} for row in inside.channel_shares]).mean()
        assert [p["channel"] for p in interval.channel_shares] == list(mean.sort_values(ascending=False, kind="stable").index) \
            or np.allclose(sorted(mean, reverse=True), [p["share"] for p in interval.channel_shares])
        for pair in interval.channel_shares:
            assert pair["share"] == pytest.approx(mean[pair["channel"]], abs=1e-12)
        assert interval.top_channel == interval.channel_shares[0]["channel"]


def test_scoring_a_date_three_times_changes_only_the_table_version(farm):
    config, paths = farm["config"], farm["paths"]
    before, versions = snapshot(paths.lake), {t: lakehouse.table_version(paths.lake, t) for t in TABLES}
    for run in (1, 2):
        stages.score(config, dt.date(2026, 1, 11))  # the night that continues the fault interval
        assert_same_tables(snapshot(paths.lake), before)
        assert {t: lakehouse.table_version(paths.lake, t) for t in TABLES} == {t: v + run for t, v in versions.items()}
    # an earlier night re-run after the later one: the continued interval stays whole, with the later night
    stages.score(config, dt.date(2026, 1, 10))
    assert_same_tables(snapshot(paths.lake), before)


def _unreferenced_files(lake: Path) -> set[str]:
    from deltalake import DeltaTable

    folder = lakehouse.table_path(lake, names.ANOMALY_SCORES)
    referenced = {Path(u).name for u in DeltaTable(str(folder)).file_uris()}
    return {f.name for f in folder.rglob("*.parquet")} - referenced


def test_a_job_killed_while_writing_leaves_the_previous_version_and_the_rerun_completes(farm):
    conf, paths = farm["conf"], farm["paths"]
    before, versions = snapshot(paths.lake), {t: lakehouse.table_version(paths.lake, t) for t in TABLES}
    orphans = _unreferenced_files(paths.lake)
    killed = cli(conf, "--date", "2026-01-20", env={"LSTMAD_KILL_AT": "before-scores-commit"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert len(_unreferenced_files(paths.lake) - orphans) > 0  # the tasks had written their data files...
    assert {t: lakehouse.table_version(paths.lake, t) for t in TABLES} == versions  # ...and nothing was committed
    assert_same_tables(snapshot(paths.lake), before)
    killed = cli(conf, "--date", "2026-01-20", env={"LSTMAD_KILL_AT": "before-intervals-commit"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert lakehouse.table_version(paths.lake, names.ANOMALY_SCORES) == versions[names.ANOMALY_SCORES] + 1
    assert lakehouse.table_version(paths.lake, names.ANOMALY_INTERVALS) == versions[names.ANOMALY_INTERVALS]
    assert_same_tables(snapshot(paths.lake), before)  # the same scores were committed, intervals untouched
    rerun = cli(conf, "--date", "2026-01-20")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_tables(snapshot(paths.lake), before)


def test_jobs_at_once_all_land_and_a_night_scored_twice_at_once_has_no_duplicates(farm):
    conf, paths = farm["conf"], farm["paths"]
    before = snapshot(paths.lake)
    days = ["2026-01-05", "2026-01-25"]
    lakehouse.commit_files(paths.lake, names.ANOMALY_SCORES, [], days)  # empty both dates first
    lakehouse.replace_partitions(paths.lake, names.ANOMALY_INTERVALS,
                                 lakehouse.SCHEMAS[names.ANOMALY_INTERVALS].empty_table(), days)
    assert not set(days) & set(lakehouse.read_table(paths.lake, names.ANOMALY_SCORES).column(names.SCORED_DATE).to_pylist())
    versions = {t: lakehouse.table_version(paths.lake, t) for t in TABLES}
    assert len(before[names.ANOMALY_INTERVALS].query("scored_date in @days")) > 0
    # two jobs for different nights, and a third for one of them (it waits for the first: no duplicate rows)
    jobs = [cli(conf, "--date", day, wait=False) for day in days + days[:1]]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
    for table in TABLES:
        assert lakehouse.table_version(paths.lake, table) == versions[table] + 3
    assert_same_tables(snapshot(paths.lake), before)


def test_scoring_with_an_unknown_model_version_is_refused_before_anything_is_written(farm):
    from typer.testing import CliRunner

    from lstmad.cli import app

    versions = {t: lakehouse.table_version(farm["paths"].lake, t) for t in TABLES}
    result = CliRunner().invoke(app, ["score", "--conf", str(farm["conf"]), "--date", "2026-01-20",
                                      "--model-version", "9"])
    assert result.exit_code == 2 and "has no version 9 of lstmad-tiny" in result.output
    assert {t: lakehouse.table_version(farm["paths"].lake, t) for t in TABLES} == versions


def test_a_backfill_starting_after_scored_nights_carries_their_open_intervals_in(farm):
    config, paths = farm["config"], farm["paths"]
    before = snapshot(paths.lake)
    stages.score_range(config, dt.date(2026, 1, 11), dt.date(2026, 1, 15))  # the fault began on the 10th
    assert_same_tables(snapshot(paths.lake), before)


def test_a_night_rescored_by_another_model_hands_the_interval_it_continued_back(farm):
    """Night 11 re-scored by an isolation forest (another version, no attribution) no longer continues the
    fault interval begun on the 10th: that interval goes back to the 10th, ending at its last flagged
    timestamp there; scoring night 11 with the first model again restores the tables exactly."""
    config, paths = farm["config"], farm["paths"]
    before = snapshot(paths.lake)
    forest = stages.train(load_config(farm["conf"], {"model.detector": "isolation_forest"}), promote=False)
    stages.score(config, dt.date(2026, 1, 11), champion=model_store.version_bundle(config, forest["model_version"]))
    intervals = snapshot(paths.lake)[names.ANOMALY_INTERVALS]
    continued = before[names.ANOMALY_INTERVALS]
    continued = continued[(continued.asset_id == FAULT_ASSET) & (continued.start < FAULT_END)
                          & (continued.end >= FAULT_START)].iloc[0]
    back = intervals[intervals.interval_id == continued.interval_id]
    assert len(back) == 1 and back.iloc[0].scored_date == "2026-01-10"
    scores = before[names.ANOMALY_SCORES]
    first_part = scores[(scores.asset_id == FAULT_ASSET) & (scores.timestamp >= continued.start)
                        & (scores.timestamp < pd.Timestamp("2026-01-11", tz="UTC")) & scores.flag]
    assert back.iloc[0].end == first_part.timestamp.max() and back.iloc[0].n_points == len(first_part)
    assert back.iloc[0].peak_score == pytest.approx(first_part.score.max())
    assert back.iloc[0].model_version == continued.model_version
    night = intervals[intervals.scored_date == "2026-01-11"]
    assert len(night) > 0 and (night.model_version == forest["model_version"]).all()
    assert (night.attribution == "none").all() and night.channel_shares.isna().all() and night.top_channel.isna().all()
    stages.score(config, dt.date(2026, 1, 11))  # the champion again
    assert_same_tables(snapshot(paths.lake), before)


def test_scores_come_from_the_model_the_rows_name(farm):
    """Spark's Python workers outlive jobs and cache loaded models: another module's model with the same
    name and version (tests share the session) must not score this farm."""
    from lstmad.io.tensor_store import read_blocks
    from lstmad.serving.scoring import score_blocks

    config, paths = farm["config"], farm["paths"]
    written = farm["nightly"][names.ANOMALY_SCORES]
    written = written[written.scored_date == "2026-01-20"]
    bundle = model_store.load_bundle(config, {"version": written.model_version.iloc[0], "source": None})
    blocks = read_blocks(paths.tensors, ["2026-01-20"])
    stats = {sid: load_stats(paths.tensors, sid) for sid in set(blocks.column(names.STATS_ID).to_pylist())}
    local = score_blocks(bundle, blocks, stats, max_masked_share=config.prepare.max_masked_share).to_pandas()
    local[names.TIMESTAMP] = pd.to_datetime(local.timestamp_us, unit="us", utc=True)
    merged = local.merge(written, on=[names.ASSET, names.TIMESTAMP], suffixes=("_local", "_spark"))
    assert len(merged) == len(local) == len(written) > 0
    np.testing.assert_allclose(merged.score_spark, merged.score_local, rtol=0, atol=1e-6)


def test_persistence_and_hysteresis_give_the_same_intervals_night_by_night_as_in_one_pass(farm):
    """With k-of-n persistence and hysteresis the tail carried across midnight must hold what decides an
    interval's opening and continuation: six nights scored one by one equal one pass over them, and every
    interval opens where at least 2 of the 3 steps ending there are flagged. (Last: it swaps the lake.)"""
    import dataclasses

    config, paths = farm["config"], farm["paths"]
    ruled = dataclasses.replace(config, score=dataclasses.replace(config.score, persistence=2, persistence_window=3,
                                                                  hysteresis=0.5))
    nights = date_range(dt.date(2026, 1, 8), dt.date(2026, 1, 13))
    kept = paths.home / "lake_kept"
    shutil.move(paths.lake, kept)
    try:
        for day in nights:
            stages.score(ruled, day)
        nightly = snapshot(paths.lake)
        shutil.rmtree(paths.lake)
        stages.score_range(ruled, nights[0], nights[-1])
        assert_same_tables(snapshot(paths.lake), nightly)
    finally:
        shutil.rmtree(paths.lake, ignore_errors=True)
        shutil.move(kept, paths.lake)
    intervals, scores = nightly[names.ANOMALY_INTERVALS], nightly[names.ANOMALY_SCORES]
    step = pd.Timedelta(seconds=config.prepare.step_s)
    assert len(intervals) > 0
    for row in intervals.itertuples():
        mine = scores[scores.asset_id == row.asset_id].set_index(names.TIMESTAMP)
        assert mine.flag.get(row.start, False)
        recent = mine.loc[row.start - 2 * step:row.start]
        assert int(recent.flag.sum()) >= 2
    # the fault across midnight is still one interval
    fault = intervals[(intervals.asset_id == FAULT_ASSET) & (intervals.start < FAULT_END) & (intervals.end >= FAULT_START)]
    assert len(fault) == 1 and fault.iloc[0].start < pd.Timestamp("2026-01-11", tz="UTC") <= fault.iloc[0].end
    # the rules bite: fewer intervals than the plain rules gave on the same nights
    plain = farm["nightly"][names.ANOMALY_INTERVALS]
    plain = plain[plain.scored_date.isin([d.isoformat() for d in nights])]
    assert len(intervals) < len(plain)
