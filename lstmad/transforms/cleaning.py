"""Pure NumPy cleaning of one asset's rows: reason and fault codes, duplicate classification, row accounting.

Spark computes the codes with column expressions (lstmad.spark.prepare); everything that needs the rows of an
asset together (duplicates, counts per date) happens here, on arrays.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Row-level reasons (uint8 codes; 0 = usable). The row is set aside (quarantined).
ROW_REASONS = {1: "null_or_unparseable_timestamp", 2: "null_asset", 3: "timestamp_outside_partition",
               4: "no_usable_value", 5: "conflicting_duplicate"}
CONFLICTING = 5
# Value-level faults (uint8 codes; 0 = measured). Only the value is masked; 2..6 are recorded in the
# quarantine table, a missing value is not (it is simply absent). Unrepresentable: finite, but at or beyond
# float32's range (a PLC's FLT_MAX sentinel on a channel without physical limits); it would become ±inf in
# the float32 tensor blocks and wreck the channel's normalisation.
VALUE_FAULTS = {1: "missing_value", 2: "non_numeric_value", 3: "non_finite_value", 4: "sentinel_value",
                5: "out_of_range_value", 6: "unrepresentable_value"}
RECORDED_FAULT_CODES = (2, 3, 4, 5, 6)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def fault_column(index: int) -> str:
    """The internal column of channel ``index``'s fault codes (by position: a channel may be named anything)."""
    return f"_fault_{index}"


def value_column(index: int) -> str:
    """The internal column of channel ``index``'s values (by position, as fault_column)."""
    return f"_value_{index}"


def classify_duplicates(timestamps_us: np.ndarray, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Among rows of one asset, which are conflicting duplicates and which are extra exact copies.

    timestamps_us (n,); content (n, K) float64 (values with NaN, fault codes, label) — rows with equal content
    are exact copies. Returns (conflicting (n,) bool: every row of a timestamp whose copies disagree,
    extra_copy (n,) bool: all but one row of a timestamp whose copies all agree).
    """
    n = timestamps_us.size
    conflicting = np.zeros(n, dtype=bool)
    extra = np.zeros(n, dtype=bool)
    if n < 2:
        return conflicting, extra
    order = np.argsort(timestamps_us, kind="stable")
    ts = timestamps_us[order]
    new_group = np.concatenate([[True], ts[1:] != ts[:-1]])
    if new_group.all():
        return conflicting, extra
    group_of_row = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    # NaN != NaN, so compare exact bit patterns: two NaN values are the same content.
    bits = np.ascontiguousarray(content[order], dtype=np.float64).view(np.uint64)
    differs = np.any(bits != bits[group_start[group_of_row]], axis=1)
    in_conflict = (np.bincount(group_of_row, weights=differs, minlength=group_start.size) > 0)[group_of_row]
    conflicting[order] = in_conflict
    extra[order] = ~new_group & ~in_conflict
    return conflicting, extra


def account(dates: np.ndarray, own: np.ndarray, reasons: np.ndarray, extra_copy: np.ndarray,
            faults: np.ndarray, channels: list[str], label_faults: np.ndarray | None = None) -> dict[str, dict]:
    """Counts of the own rows per date: read, kept, quarantined by reason, exact copies dropped, masked
    values by fault and by channel, labels outside the configured domain (on kept rows). dates (n,) str,
    own (n,) bool, reasons (n,) uint8 (after duplicate classification), extra_copy (n,) bool, faults (n, C)
    uint8, label_faults (n,) bool. Returns date → counts."""
    if not own.any():
        return {}
    days, day_of_row = np.unique(dates[own], return_inverse=True)
    n_days = days.size
    reasons, extra_copy, faults = reasons[own], extra_copy[own], faults[own]
    label_faults = np.zeros(reasons.size, dtype=bool) if label_faults is None else label_faults[own]
    kept = (reasons == 0) & ~extra_copy

    def per_day(flags: np.ndarray) -> np.ndarray:
        return np.bincount(day_of_row, weights=flags, minlength=n_days).astype(np.int64)

    read = np.bincount(day_of_row, minlength=n_days)
    kept_count, extra_count = per_day(kept), per_day(extra_copy)
    bad_labels = per_day(kept & label_faults)
    reason_counts = {text: per_day(reasons == code) for code, text in ROW_REASONS.items() if (reasons == code).any()}
    fault_counts = {}  # (fault, channel) → per day
    for c, channel in enumerate(channels):
        column = np.where(kept, faults[:, c], 0)
        for code in np.unique(column[column != 0]):
            fault_counts[(VALUE_FAULTS[int(code)], channel)] = per_day(column == code)
    out: dict[str, dict] = {}
    for i, day in enumerate(days):
        masked_by_reason: dict[str, int] = {}
        masked_by_channel: dict[str, int] = {}
        for (fault, channel), counts in fault_counts.items():
            if counts[i]:
                masked_by_reason[fault] = masked_by_reason.get(fault, 0) + int(counts[i])
                masked_by_channel[channel] = masked_by_channel.get(channel, 0) + int(counts[i])
        by_reason = {text: int(counts[i]) for text, counts in reason_counts.items() if counts[i]}
        out[str(day)] = {"rows_read": int(read[i]), "rows_kept": int(kept_count[i]),
                         "rows_quarantined": int(sum(by_reason.values())),
                         "exact_duplicates_dropped": int(extra_count[i]), "quarantined_by_reason": by_reason,
                         "values_masked_by_reason": masked_by_reason, "values_masked_by_channel": masked_by_channel,
                         "labels_not_in_domain": int(bad_labels[i])}
    return out


def merge_counts(parts: list[dict]) -> dict:
    """Sum count dicts (as from ``account``), nested dicts key by key."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                for k, v in value.items():
                    inner[k] = inner.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in total.items()}


def quarantine_records(candidates: pa.Table, channels: list[str], run_id: str, pipeline: str) -> pa.Table:
    """Quarantine table rows from the candidate rows (lstmad.spark.prepare.quarantine_candidates): one per row
    set aside (``channel`` null, reason from its code) and one per recorded value fault of a kept row
    (``channel`` named). Exact copies of a kept row are one row: their faults are recorded once."""
    columns = candidates.to_pydict()
    records: dict[str, list] = {k: [] for k in ("pipeline", "date", "asset_id", "timestamp", "reason", "channel",
                                                "source_row", "run_id")}
    seen: set[tuple] = set()

    def add(i: int, reason: str, channel) -> None:
        for key, value in (("pipeline", pipeline), ("date", columns["date"][i]), ("asset_id", columns["asset_id"][i]),
                           ("timestamp", columns["timestamp_us"][i]), ("reason", reason), ("channel", channel),
                           ("source_row", columns["source_row"][i]), ("run_id", run_id)):
            records[key].append(value)

    for i in range(candidates.num_rows):
        code = columns["_reason_code"][i]
        if code:
            add(i, ROW_REASONS[code], None)
            continue
        for c, channel in enumerate(channels):
            fault = columns[fault_column(c)][i]
            key = (columns["asset_id"][i], columns["timestamp_us"][i], channel)
            if fault in RECORDED_FAULT_CODES and key not in seen:
                seen.add(key)
                add(i, VALUE_FAULTS[fault], channel)
    table = pa.table(records)
    return table.set_column(3, "timestamp", pa.array(records["timestamp"], pa.int64()).cast(pa.timestamp("us", tz="UTC")))
