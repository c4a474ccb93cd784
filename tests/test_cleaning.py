"""Duplicate classification and row accounting against pandas references."""

import numpy as np
import pandas as pd

from lstmad.transforms.cleaning import account, classify_duplicates


def test_duplicates_split_into_conflicting_groups_and_extra_exact_copies_like_pandas():
    rng = np.random.default_rng(0)
    ts = rng.integers(0, 40, size=200)
    content = rng.integers(0, 2, size=(200, 2)).astype(float)
    content[rng.random(200) < 0.2, 0] = np.nan  # NaN equals NaN for "same content"
    conflicting, extra = classify_duplicates(ts, content)
    frame = pd.DataFrame({"ts": ts, "a": content[:, 0], "b": content[:, 1]})
    distinct = frame.drop_duplicates().groupby("ts").size()
    conflict_ts = set(distinct[distinct > 1].index)
    assert set(ts[conflicting]) == conflict_ts and conflicting.sum() == frame.ts.isin(conflict_ts).sum()
    clean = frame[~frame.ts.isin(conflict_ts)]
    assert extra.sum() == clean.duplicated().sum()
    kept = ~conflicting & ~extra
    assert sorted(ts[kept]) == sorted(clean.drop_duplicates().ts)


def test_account_counts_per_date_add_up():
    dates = np.array(["d1"] * 5 + ["d2"] * 4 + ["h"] * 3)
    own = dates != "h"
    reasons = np.array([0, 1, 0, 5, 0, 0, 4, 0, 0, 1, 0, 0], dtype=np.uint8)
    extra = np.zeros(12, dtype=bool)
    extra[[4, 8]] = True
    faults = np.zeros((12, 2), dtype=np.uint8)
    faults[0, 1] = 4
    faults[2, 0] = 1
    faults[4, 0] = 3  # on an extra copy: not counted
    # labels outside the domain: counted on kept rows only (row 1 is set aside, row 8 an extra copy)
    label_faults = np.zeros(12, dtype=bool)
    label_faults[[0, 1, 5, 8]] = True
    counts = account(dates, own, reasons, extra, faults, ["x", "y"], label_faults)
    assert set(counts) == {"d1", "d2"}
    assert counts["d1"] == {"rows_read": 5, "rows_kept": 2, "rows_quarantined": 2, "exact_duplicates_dropped": 1,
                            "quarantined_by_reason": {"null_or_unparseable_timestamp": 1, "conflicting_duplicate": 1},
                            "values_masked_by_reason": {"missing_value": 1, "sentinel_value": 1},
                            "values_masked_by_channel": {"x": 1, "y": 1}, "labels_not_in_domain": 1}
    assert counts["d2"]["rows_read"] == 4 and counts["d2"]["rows_kept"] == 2
    assert counts["d2"]["labels_not_in_domain"] == 1
    for day in counts.values():
        assert day["rows_read"] == day["rows_kept"] + day["rows_quarantined"] + day["exact_duplicates_dropped"]
