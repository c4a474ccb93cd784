"""The La Haute Borne study's injected table (lstmad.benchmarks.scada_injection.build_study) on a synthetic
two-turbine archive: a labelled range of its own leaves the test half's study as it was, and its labels mark
exactly the rows its faults may change."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lstmad.benchmarks.scada_injection import CHANNELS, FAULT_CLASSES, LABELLED_PER_FAULT, TEST, build_study

LABELLED = (dt.date(2014, 10, 1), dt.date(2014, 12, 31))


@pytest.fixture(scope="module")
def archive() -> pd.DataFrame:
    stamps = pd.date_range("2014-09-01", "2015-06-30 23:50", freq="10min", tz="UTC")
    rng = np.random.default_rng(0)
    parts = []
    for turbine in ("T1", "T2"):
        n = len(stamps)
        wind = 9 + 3 * np.sin(np.arange(n) / 500) + rng.normal(0, 0.5, n)
        parts.append(pd.DataFrame({
            "Wind_turbine_name": turbine, "Date_time": stamps, "Ba_avg": rng.normal(1, 0.3, n),
            "P_avg": np.clip(40 * wind ** 2 - 1000 + rng.normal(0, 30, n), 0, 2050), "Ws_avg": wind,
            "Va_avg": rng.normal(0, 5, n), "Ot_avg": 10 + 5 * np.sin(np.arange(n) / 4000) + rng.normal(0, 0.2, n),
            "Ya_avg": rng.uniform(0, 360, n), "Wa_avg": rng.uniform(0, 360, n)}))
    return pd.concat(parts, ignore_index=True)


def test_a_labelled_range_leaves_the_test_study_alone_and_labels_its_own_faults(archive):
    plain, plain_events, plain_curtailed = build_study(archive, seed=3)
    frame, events, curtailed = build_study(archive, seed=3, labelled=LABELLED)
    assert "injected" not in plain
    times = frame["Date_time"]
    in_test = ((times >= pd.Timestamp(TEST[0], tz="UTC")) & (times < pd.Timestamp(TEST[1], tz="UTC")
                                                             + pd.Timedelta(days=1))).to_numpy()
    in_labelled = ((times >= pd.Timestamp(LABELLED[0], tz="UTC")) & (times < pd.Timestamp(LABELLED[1], tz="UTC")
                                                                     + pd.Timedelta(days=1))).to_numpy()
    # the test half: the same faults, curtailments and events as without a labelled range
    pd.testing.assert_frame_equal(frame.loc[in_test, plain.columns], plain.loc[in_test])
    pd.testing.assert_frame_equal(events, plain_events)
    pd.testing.assert_frame_equal(curtailed, plain_curtailed)
    # labels only inside the labelled range: one run of rows per event, one event of each class per turbine
    labels = frame["injected"].to_numpy()
    assert labels[~in_labelled].sum() == 0
    starts = np.flatnonzero(np.diff(np.concatenate([[0], labels])) == 1)
    assert len(starts) == 2 * len(FAULT_CLASSES) * LABELLED_PER_FAULT
    # a value outside the test half changes only on a labelled row (archive sorted as build_study sorts it)
    original = archive.sort_values(["Wind_turbine_name", "Date_time"]).reset_index(drop=True)
    changed = ~np.isclose(frame[CHANNELS].to_numpy(float), original[CHANNELS].to_numpy(float),
                          equal_nan=True).all(axis=1)
    assert not (changed & ~in_test & (labels == 0)).any()
    assert changed[labels == 1].mean() > 0.5  # and most labelled rows did change


def test_nothing_of_the_test_half_reaches_the_labelled_range(archive):
    # another test half (every value doubled): the rows before it, labelled faults included, stay the same
    altered = archive.copy()
    later = (altered["Date_time"] >= pd.Timestamp(TEST[0], tz="UTC")).to_numpy()
    altered.loc[later, CHANNELS] = altered.loc[later, CHANNELS].to_numpy() * 2
    one, _, _ = build_study(archive, seed=3, labelled=LABELLED)
    other, _, _ = build_study(altered, seed=3, labelled=LABELLED)
    earlier = (one["Date_time"] < pd.Timestamp(TEST[0], tz="UTC")).to_numpy()
    assert one.loc[earlier, "injected"].sum() > 0
    pd.testing.assert_frame_equal(one.loc[earlier], other.loc[earlier])


def test_a_labelled_range_too_short_for_every_class_is_refused_by_its_days(archive):
    with pytest.raises(ValueError, match=r"labelled range 2014-10-01\.\.2014-10-10 is too short"):
        build_study(archive, seed=3, labelled=(dt.date(2014, 10, 1), dt.date(2014, 10, 10)))
