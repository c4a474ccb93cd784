"""The real La Haute Borne SCADA archive (../shared/datasets, or $LSTMAD_DATA_DIR): prepare's row accounting and
quarantine counts by reason against an independent pandas computation on the same file."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lstmad import names, stages
from lstmad.config import data_dir, load_config
from lstmad.io import lakehouse
from lstmad.layout import Paths
from tests.conftest import REPO

pytestmark = pytest.mark.spark

SCADA = data_dir() / "la_haute_borne" / "scada.parquet"
START, END = dt.date(2014, 2, 1), dt.date(2014, 4, 30)  # includes the March daylight-saving hour


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, spark):
    if not SCADA.exists():
        pytest.skip(f"{SCADA} not present (set LSTMAD_DATA_DIR to the folder holding la_haute_borne/)")
    home = tmp_path_factory.mktemp("lhb")
    config = load_config(REPO / "conf" / "la_haute_borne.yaml", {"home": str(home)})
    return config, stages.prepare(config, START, END, fit_stats=True, spark=spark)


def channel_faults(config, frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per channel: (sentinel (n,) bool, out of range and not a sentinel (n,) bool), from the config alone."""
    src = config.source
    out = {}
    for channel in src.channels:
        v = frame[channel.name]
        sentinel = np.zeros(len(v), dtype=bool)
        for s in channel.sentinels:
            sentinel |= (v - s).abs().to_numpy() <= src.sentinel_tolerance * abs(s)
        out[channel.name] = (sentinel, ((v < channel.minimum) | (v > channel.maximum)).to_numpy() & ~sentinel)
    return out


def pandas_reference(config) -> dict:
    """Quarantine counts computed with pandas alone from the configured ranges and sentinels."""
    src = config.source
    frame = pd.read_parquet(SCADA)
    t = frame[src.timestamp_column]
    frame = frame[(t >= pd.Timestamp(START, tz="UTC")) & (t < pd.Timestamp(END + dt.timedelta(days=1), tz="UTC"))]
    bad = pd.DataFrame(index=frame.index)
    for name, (sentinel, out_of_range) in channel_faults(config, frame).items():
        bad[name] = frame[name].isna().to_numpy() | sentinel | out_of_range
    no_value = bad.all(axis=1)
    usable = frame[~no_value]
    key = [src.asset_column, src.timestamp_column]
    distinct = usable.drop_duplicates().groupby(key).size()
    conflicting_keys = distinct[distinct > 1].index
    conflicting = usable.set_index(key).index.isin(conflicting_keys)
    kept = usable[~conflicting]
    return {"rows_read": len(frame), "no_usable_value": int(no_value.sum()),
            "conflicting_duplicate": int(conflicting.sum()), "exact": int(kept.duplicated().sum()),
            "kept_index": kept.index}


def test_quarantine_counts_by_reason_match_pandas(prepared):
    config, summary = prepared
    ref = pandas_reference(config)
    # 4 turbines × 89 days × 144 stamps, plus the repeated daylight-saving hour: 6 more rows per turbine
    assert summary["rows_read"] == ref["rows_read"] == 4 * 89 * 144 + 4 * 6
    assert summary["quarantined_by_reason"] == {"conflicting_duplicate": ref["conflicting_duplicate"],
                                                "no_usable_value": ref["no_usable_value"]}
    assert ref["conflicting_duplicate"] == 48  # 2014-03-30 01:00–01:50, two disagreeing copies, 4 turbines
    assert summary["rows_read"] == summary["rows_kept"] + summary["rows_quarantined"] + summary["exact_duplicates_dropped"]
    assert summary["exact_duplicates_dropped"] == ref["exact"]
    quarantine = lakehouse.read_table(Paths.of(config).lake, names.QUARANTINE).to_pandas()
    assert quarantine[quarantine.channel.isna()].reason.value_counts().to_dict() == summary["quarantined_by_reason"]


def test_sentinels_and_spikes_are_masked_values_counted_like_pandas(prepared):
    config, summary = prepared
    frame = pd.read_parquet(SCADA)
    ref = pandas_reference(config)
    kept = frame.loc[ref["kept_index"]]
    expected: dict[str, int] = {}
    for channel, (sentinel, out_of_range) in channel_faults(config, kept).items():
        for name, count in (("sentinel_value", sentinel.sum()), ("out_of_range_value", out_of_range.sum()),
                            ("missing_value", kept[channel].isna().sum())):
            if count:
                expected[name] = expected.get(name, 0) + int(count)
    assert summary["values_masked_by_reason"] == expected
    assert expected.get("out_of_range_value", 0) > 0  # real pitch spikes in this range
    quarantine = lakehouse.read_table(Paths.of(config).lake, names.QUARANTINE).to_pandas()
    recorded = quarantine[quarantine.channel.notna()].reason.value_counts().to_dict()
    assert recorded == {k: v for k, v in expected.items() if k != "missing_value"}


def test_the_lost_daylight_saving_hour_is_filled_not_cut(prepared):
    config, summary = prepared
    # conflicting copies set aside at 01:00–01:50 leave a 6-step gap, within max_gap_steps: filled and masked
    assert summary["grid_rows_filled"] >= 4 * 6
    assert summary["windows_skipped_masked"] > 0
    # rows sit on the 10-minute grid already: every kept row is one grid row, the rest was filled in
    assert summary["grid_rows"] == summary["rows_kept"] + summary["grid_rows_filled"]


def test_the_wind_direction_enters_the_tensors_as_its_smoothed_sine_and_cosine(prepared):
    """Wa_avg (period 360) wraps between 359° and 0° many times a month: each fully observed row of its
    tensor channels is the centred 3-row mean (smoothing_half_width 1) of the sine and cosine of the source
    degrees, normalised, also where the degrees jump across the wrap."""
    from lstmad.io.tensor_store import load_stats, read_blocks
    from lstmad.transforms.blocks import unpack_mask

    config, _ = prepared
    src = config.source
    assert config.prepare.smoothing_half_width == 1
    paths = Paths.of(config)
    stats = load_stats(paths.tensors)
    j = src.tensor_channels.index("Wa_avg:sin")
    assert src.tensor_channels[j + 1] == "Wa_avg:cos" and stats.channels == src.tensor_channels
    frame = pd.read_parquet(SCADA)
    asset = "R80711"
    degrees = (frame[frame[src.asset_column] == asset].drop_duplicates(src.timestamp_column, keep=False)
               .set_index(src.timestamp_column)["Wa_avg"])
    # the three days of the prepared range on which the source's degrees cross the wrap most often
    in_range = degrees[(degrees.index >= pd.Timestamp(START, tz="UTC")) & (degrees.index < pd.Timestamp(END, tz="UTC"))]
    crossings = (in_range.diff().abs() > 180).groupby(in_range.index.date).sum()
    days = [d.isoformat() for d in crossings.nlargest(3).index]
    blocks = read_blocks(paths.tensors, days).to_pylist()
    checked = wraps = 0
    for block in (b for b in blocks if b[names.ASSET] == asset):
        n, c = block[names.N_ROWS], block[names.N_CHANNELS]
        values = np.frombuffer(block[names.VALUES], dtype=np.float32).reshape(n, c)
        observed = unpack_mask(block[names.MASK], n, c)
        stamps = pd.to_datetime(block[names.BLOCK_START] + np.arange(n) * block[names.STEP_S] * 1_000_000, unit="us",
                                utc=True)
        raw = degrees.reindex(stamps).to_numpy()
        for k in range(1, n - 1):
            three = raw[k - 1:k + 2]
            if not (observed[k - 1:k + 2, j].all() and np.isfinite(three).all()):
                continue
            radians = np.radians(three)
            expected = (np.array([np.sin(radians).mean(), np.cos(radians).mean()]) - np.asarray(stats.offset)[j:j + 2]) \
                / np.asarray(stats.scale)[j:j + 2]
            np.testing.assert_allclose(values[k, j:j + 2], expected, rtol=1e-4, atol=1e-4)
            checked += 1
            wraps += int(np.abs(np.diff(three)).max() > 180)
    assert checked > 300 and wraps > 0
