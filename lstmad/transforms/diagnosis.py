"""Why a prepare run could not use its rows, in words an operator can act on: rows set aside by reason and a raw
example of what could not be parsed, with a hint (epoch numbers, a decimal comma); and the warnings a run
that succeeded still owes its operator. Pure functions of prepare's counts and quarantine candidates
(lstmad.spark.prepare.quarantine_candidates: one row per candidate with its JSON source row, reason code and
per-channel fault codes).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

from lstmad.transforms.cleaning import VALUE_FAULTS, fault_column


def _example(candidates: pa.Table, key: str, where: np.ndarray) -> str | None:
    """The first non-null raw value of ``key`` among the quarantine candidate rows where ``where`` ((n,) bool)."""
    for row in np.flatnonzero(where)[:1000]:
        value = json.loads(candidates.column("source_row")[int(row)].as_py() or "{}").get(key)
        if value is not None:
            return str(value)
    return None


def _hint_timestamp(value: str) -> str:
    if re.fullmatch(r"-?\d{9,19}(\.\d+)?", value):
        unit = {10: "epoch_s", 13: "epoch_ms", 16: "epoch_us", 19: "epoch_ns"}.get(len(value.lstrip("-").split(".")[0]))
        return f"numbers since 1970? set source.timestamp_format: {unit or 'epoch_s|epoch_ms|epoch_us|epoch_ns'}"
    return "set source.timestamp_format (a Spark datetime pattern) or source.timezone"


def _channel_example(candidates: pa.Table, src, index: int) -> str:
    """A raw value of channel ``index`` that was masked, with its reason and a hint ('' when none recorded)."""
    name = src.channels[index].name
    faults = candidates.column(fault_column(index)).to_numpy(zero_copy_only=False)
    for code, reason in VALUE_FAULTS.items():
        example = _example(candidates, name, faults == code)
        if example is not None:
            hint = (" (a decimal comma? set source.decimal_separator: ',')"
                    if code == 2 and re.fullmatch(r"\s*-?\d+,\d+\s*", example) else "")
            return f"e.g. {reason} {example!r}{hint}"
    return ""


def explain_channel(counts: dict, candidates: pa.Table, src, index: int) -> str:
    """Why channel ``index`` has no usable value: how many kept rows it is masked on, and a raw example."""
    masked = counts["values_masked_by_channel"].get(src.channels[index].name, 0)
    example = _channel_example(candidates, src, index)
    return f"{masked} of {counts['rows_kept']} kept rows masked, " + (example or "empty cells")


def explain_unusable(counts: dict, candidates: pa.Table, src) -> str:
    """Why a range has no usable row: rows set aside by reason, with a raw example (and a hint) of an
    unparseable timestamp and of each channel's masked values."""
    codes = candidates.column("_reason_code").to_numpy(zero_copy_only=False)
    parts = [f"{counts['rows_read']} rows read, {counts['rows_kept']} kept"]
    if counts["quarantined_by_reason"]:
        parts.append("set aside: " + ", ".join(f"{k} {v}" for k, v in counts["quarantined_by_reason"].items()))
    example = _example(candidates, src.timestamp_column, codes == 1)
    if example is not None:
        parts.append(f"column '{src.timestamp_column}' holds e.g. {example!r}, which is not a timestamp "
                     f"({_hint_timestamp(example)})")
    for i, channel in enumerate(src.channels):
        example = _channel_example(candidates, src, i)
        if example:
            parts.append(f"column '{channel.name}': {example}")
    return "; ".join(parts)


def input_warnings(summary: dict, src) -> list[str]:
    """What a run accepted but an operator should know: channels without any value, labels outside the
    domain, empty files skipped."""
    warnings = []
    kept = summary["rows_kept"]
    for name in src.channel_names:
        if kept and summary["values_masked_by_channel"].get(name, 0) >= kept:
            warnings.append(f"column '{name}' has no usable value in any of the {kept} kept rows")
    if summary.get("labels_not_in_domain"):
        domain = sorted(src.label_values) if src.label_values else [0, 1]
        warnings.append(f"column '{src.label_column}': {summary['labels_not_in_domain']} labels are not in "
                        f"{domain} (source.label_values) and count as unknown")
    for file in summary["files_skipped_empty"]:
        warnings.append(f"{file}: empty file skipped")
    return warnings
