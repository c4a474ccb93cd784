"""``lstmad init``: from a table a user brings to a commented pipeline configuration.

``inspect_table`` reads what can be seen in a sample of the table (lstmad.io.source_profile.StoredTable): the
timestamp column and its format, the asset column, the step, the date range, the numeric channels with
their null shares, constant channels, suspected sentinels, units and angles that wrap. ``config_text`` writes it as a
pipeline YAML with a suggested training range, every guess commented so that a person can check it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Optional

import numpy as np
import pandas as pd

from lstmad.io.source_profile import StoredTable

# values that systems write for "no reading" (PLCs, historians, spreadsheets)
KNOWN_SENTINELS = (-273.2, -273.15, -9999.0, -999.0, -99999.0, 9999.0, 99999.0, 999999.0, -32768.0, 32767.0,
                   65535.0, -1e30, 1e30, float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max))
UNITS = {"kw": "kW", "mw": "MW", "w": "W", "kwh": "kWh", "mwh": "MWh", "v": "V", "kv": "kV", "a": "A", "hz": "Hz",
         "rpm": "rpm", "degc": "degC", "c": "degC", "°c": "degC", "celsius": "degC", "k": "K", "deg": "deg",
         "ms": "m/s", "m/s": "m/s", "bar": "bar", "pa": "Pa", "kpa": "kPa", "mpa": "MPa", "pct": "%", "%": "%",
         "nm": "Nm", "knm": "kNm", "mm/s": "mm/s", "g": "g", "l/min": "l/min", "m3/h": "m3/h"}
# names of the channels that drive a wind turbine (what it responds to): with one of them the configuration is
# a normal-behaviour model (docs/training.md#normal-behaviour-models); a token is a whole word of the name
DRIVER_NAMES = {
    "wind speed": re.compile(r"wind.?speed|windspeed|wind.?spd|wspd|(^|[^a-z])ws([^a-z]|$)", re.I),
    "ambient temperature": re.compile(r"ambient|outdoor|outside.?temp|amb.?temp|temp.?amb|(^|[^a-z])ot([^a-z]|$)",
                                      re.I),
    "wind direction": re.compile(r"wind.?dir|winddir|wdir|(^|[^a-z])wa([^a-z]|$)", re.I),
}
# a turbine's blade pitch angle (not a pitch motor's temperature or speed) and its power: feathered (pitched
# past 45 degrees) with wind above cut-in and no power, it is stopped
PITCH_NAME = re.compile(r"pitch|blade.?angle|(^|[^a-z])ba([^a-z]|$)", re.I)
NOT_AN_ANGLE = re.compile(r"temp|speed|rate|current|curr|motor|torque|volt|press|rpm", re.I)
POWER_NAME = re.compile(r"active.?power|(^|[^a-z])power|(^|[^a-z])p([^a-z]|$)|kw", re.I)
ASSET_WORDS = ("asset", "turbine", "unit", "machine", "device", "pump", "plant", "station", "wtg", "id", "name")
LABEL_NAMES = ("label", "labels", "anomaly", "is_anomaly", "anomalous", "fault", "target", "class", "y")
NORMAL_WORDS = ("normal", "ok", "none", "healthy", "false", "no", "0")
EPOCH_RANGES = (("epoch_s", 1e8, 1e11), ("epoch_ms", 1e11, 1e14), ("epoch_us", 1e14, 1e17), ("epoch_ns", 1e17, 1e20))
DAY_FIRST = (("%d/%m/%Y %H:%M:%S", "dd/MM/yyyy HH:mm:ss"), ("%d/%m/%Y %H:%M", "dd/MM/yyyy HH:mm"),
             ("%d.%m.%Y %H:%M:%S", "dd.MM.yyyy HH:mm:ss"), ("%d.%m.%Y %H:%M", "dd.MM.yyyy HH:mm"),
             ("%m/%d/%Y %H:%M:%S", "MM/dd/yyyy HH:mm:ss"), ("%m/%d/%Y %H:%M", "MM/dd/yyyy HH:mm"))


class InspectionError(ValueError):
    """The table has no column that can serve as the timestamp, or no numeric channel; names the path."""


@dataclasses.dataclass
class Channel:
    name: str
    null_share: float
    unit: str = ""
    constant: bool = False
    sentinels: tuple[float, ...] = ()
    sentinel_rows: int = 0
    low: float = float("nan")   # observed 0.1 % quantile
    high: float = float("nan")  # observed 99.9 % quantile
    isolated_extreme: Optional[float] = None  # a repeated extreme far from the rest: a sentinel to check
    period: Optional[float] = None  # an angle in degrees (360): its values wrap (wraps: jumps seen across it)
    wraps: int = 0
    driver: str = ""  # what its name says it is when that drives the asset (DRIVER_NAMES), else ""


@dataclasses.dataclass
class Findings:
    """What ``inspect_table`` saw; times as UTC."""

    stored: StoredTable
    timestamp_column: str
    timestamp_format: str  # "" (ISO or a timestamp type), a Spark pattern, or epoch_*
    timezone_known: bool   # the timestamps carry an offset or are absolute
    timestamp_example: str
    asset_column: Optional[str]
    asset_count: int
    step_s: int
    first: dt.datetime
    last: dt.datetime
    channels: list[Channel]
    label_column: Optional[str] = None
    label_values: dict = dataclasses.field(default_factory=dict)
    ignored: dict = dataclasses.field(default_factory=dict)  # column → why it is not a channel

    @property
    def days(self) -> int:
        return (self.last.date() - self.first.date()).days + 1


def _numeric(column: pd.Series, decimal: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(column):
        return pd.Series(np.nan, index=column.index)
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    text = column.astype(str).str.strip()
    if decimal == ",":
        text = text.str.replace(",", ".", regex=False)
    return pd.to_numeric(text.where(text != ""), errors="coerce")


def _timestamp_candidates(stored: StoredTable) -> list[tuple[str, str, bool, pd.Series]]:
    """(column, format, zone known, parsed UTC timestamps) for columns that hold times, best first."""
    found = []
    frame = stored.sample
    for name in frame.columns:
        column = frame[name]
        timely = bool(re.search(r"time|date|stamp|^ts$|^t$|datetime", str(name), re.I))
        if pd.api.types.is_datetime64_any_dtype(column):
            zoned = getattr(column.dt, "tz", None) is not None
            parsed = column.dt.tz_convert("UTC") if zoned else column.dt.tz_localize("UTC")
            found.append((0 if timely else 1, name, "", zoned, parsed))
            continue
        if pd.api.types.is_numeric_dtype(column) or stored.format == "csv":
            numbers = _numeric(column, ".") if stored.format == "csv" else column.astype("float64")
            median = float(np.nanmedian(np.abs(numbers))) if numbers.notna().mean() > 0.95 else float("nan")
            for unit, low, high in EPOCH_RANGES:
                if low <= median < high and timely:
                    scale = {"epoch_s": "s", "epoch_ms": "ms", "epoch_us": "us", "epoch_ns": "ns"}[unit]
                    found.append((2, name, unit, True, pd.to_datetime(numbers, unit=scale, utc=True, errors="coerce")))
            if pd.api.types.is_numeric_dtype(column):
                continue
        text = column.astype(str).str.strip()
        head = text[text != ""].head(2000)
        if head.empty:
            continue
        iso = pd.to_datetime(head, format="ISO8601", errors="coerce", utc=True)
        if iso.notna().mean() > 0.95:
            zoned = bool(head.str.contains(r"(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})$", regex=True).mean() > 0.95)
            parsed = pd.to_datetime(text.where(text != ""), format="ISO8601", errors="coerce", utc=True)
            found.append((0 if timely else 1, name, "", zoned, parsed))
            continue
        for python_format, spark_format in DAY_FIRST:
            if pd.to_datetime(head, format=python_format, errors="coerce").notna().mean() > 0.95:
                parsed = pd.to_datetime(text, format=python_format, errors="coerce").dt.tz_localize("UTC")
                found.append((0 if timely else 1, name, spark_format, False, parsed))
                break
    return [(name, fmt, zoned, parsed) for _, name, fmt, zoned, parsed in sorted(found, key=lambda f: f[0])]


def _asset_column(frame: pd.DataFrame, timestamps: pd.Series, skip: set) -> tuple[Optional[str], int]:
    """The column that tells assets apart: few distinct values, and (asset, time) unique where time alone
    repeats. None when every timestamp occurs once (one asset)."""
    if timestamps.duplicated().mean() < 0.05:
        return None, 1
    best = None
    for name in frame.columns:
        if name in skip or pd.api.types.is_float_dtype(frame[name]):
            continue
        distinct = frame[name].nunique(dropna=True)
        if not 2 <= distinct <= max(2, min(10_000, len(frame) // 10)):
            continue
        pairs = pd.DataFrame({"a": frame[name].to_numpy(), "t": timestamps.to_numpy()}).duplicated().mean()
        worded = any(w in str(name).lower() for w in ASSET_WORDS)
        key = (pairs, not worded, distinct)
        if pairs < 0.05 and (best is None or key < best[0]):
            best = (key, name, distinct)
    return (best[1], int(best[2])) if best else (None, 1)


def _step(timestamps: pd.Series, assets: Optional[pd.Series]) -> int:
    frame = pd.DataFrame({"t": timestamps.to_numpy(), "a": assets.to_numpy() if assets is not None else 0}).dropna()
    diffs = frame.sort_values(["a", "t"]).groupby("a")["t"].diff().dt.total_seconds()
    diffs = diffs[diffs > 0]
    if diffs.empty:
        return 60
    seconds = float(diffs.median())
    divisors = [d for d in range(1, 86_401) if 86_400 % d == 0]
    return min(divisors, key=lambda d: abs(d - seconds))


def _unit(name: str) -> str:
    bracket = re.search(r"[\[(]([^\])]+)[\])]\s*$", name)
    if bracket and bracket.group(1).strip().lower() in UNITS:
        return UNITS[bracket.group(1).strip().lower()]
    for token in reversed(re.split(r"[_.\s-]+", name)[1:]):
        if token.lower() in UNITS and len(token) > 1:
            return UNITS[token.lower()]
    return ""


def _channel(name: str, values: pd.Series, rows: int) -> Channel:
    null_share = float(values.isna().mean()) if rows else 1.0
    present = values.dropna()
    channel = Channel(name=str(name), null_share=null_share, unit=_unit(str(name)))
    if present.empty:
        return channel
    is_sentinel = np.zeros(len(present), dtype=bool)
    known = []
    for sentinel in KNOWN_SENTINELS:
        hit = np.isclose(present.to_numpy(), sentinel, rtol=1e-6, atol=0)
        if hit.any():
            known.append(sentinel)
            is_sentinel |= hit
    channel.sentinels, channel.sentinel_rows = tuple(known), int(is_sentinel.sum())
    rest = present[~is_sentinel]
    if rest.empty:
        return channel
    channel.constant = bool(rest.nunique() == 1)
    channel.low, channel.high = (float(q) for q in rest.quantile([0.001, 0.999]))
    spread = channel.high - channel.low
    for extreme in (float(rest.min()), float(rest.max())):
        others = rest[rest != extreme]
        if others.empty or spread <= 0:
            continue
        gap = float((others.min() - extreme) if extreme == rest.min() else (extreme - others.max()))
        if int((rest == extreme).sum()) >= 3 and gap > 2 * spread:
            channel.isolated_extreme = extreme
    return channel


def _wraps(values: pd.Series, timestamps: pd.Series, assets: Optional[pd.Series]) -> int:
    """How often ``values`` behave like an angle in degrees wrapping around: all of them within [−180, 360],
    spread over at least 300, counting the steps between consecutive rows of one asset (time order, at most
    three typical steps apart) that jump by more than 270, which on a circle is less than 90 degrees. A
    quantity that is not an angle would have to leap across most of its range again and again. 0: none."""
    present = values.dropna()
    if present.empty or present.min() < -180.5 or present.max() > 360.5 or present.max() - present.min() < 300:
        return 0
    rows = pd.DataFrame({"asset": "" if assets is None else assets.astype(str).to_numpy(),
                         "time": timestamps.to_numpy(), "value": values.to_numpy(dtype=np.float64)})
    rows = rows[rows["time"].notna()].sort_values(["asset", "time"], kind="stable")
    same_asset = (rows["asset"].to_numpy()[1:] == rows["asset"].to_numpy()[:-1])
    gaps = np.diff(rows["time"].to_numpy()).astype("timedelta64[s]").astype(np.float64)
    typical = np.median(gaps[same_asset & (gaps > 0)]) if (same_asset & (gaps > 0)).any() else np.inf
    with np.errstate(invalid="ignore"):
        jumps = np.abs(np.diff(rows["value"].to_numpy())) > 270
    return int((jumps & same_asset & (gaps <= 3 * typical)).sum())


def sql_name(column: str) -> str:
    """``column`` quoted for a Spark SQL condition (operating_states[].when)."""
    return "`" + column.replace("`", "``") + "`"


def _driver(channel: Channel) -> str:
    """What drives the asset that ``channel``'s name says it is ("wind speed", …), else "". A wind direction
    counts only when its values wrap like an angle."""
    for kind, pattern in DRIVER_NAMES.items():
        if pattern.search(channel.name) and (kind != "wind direction" or channel.period):
            return kind
    return ""


def _label(frame: pd.DataFrame, skip: set) -> tuple[Optional[str], dict]:
    for name in frame.columns:
        if name in skip or str(name).strip().lower() not in LABEL_NAMES:
            continue
        values = frame[name].dropna()
        values = values[values.astype(str).str.strip() != ""]
        if values.nunique() > 20:
            continue
        if pd.api.types.is_bool_dtype(values):
            return str(name), {}  # true/false: read as 1/0
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all():
            if set(numbers.unique()) <= {0, 1}:
                return str(name), {}
            # other codes: 0 normal, any other number anomalous (written for a person to check)
            return str(name), {f"{v:g}": int(v != 0) for v in sorted(numbers.unique())}
        mapping = {str(v).strip(): 0 if str(v).strip().lower() in NORMAL_WORDS else 1
                   for v in values.astype(str).unique()}
        return str(name), mapping
    return None, {}


def inspect_table(stored: StoredTable) -> Findings:
    """What a sample of the table shows (see the module docstring); InspectionError when no column holds
    times or none holds numbers."""
    frame = stored.sample
    if frame.empty:
        raise InspectionError(f"{stored.path}: no rows to inspect")
    candidates = _timestamp_candidates(stored)
    if not candidates:
        raise InspectionError(f"{stored.path}: no column holds timestamps that can be read (ISO 8601, a timestamp "
                              f"type, day-first dates or epoch numbers); columns: {list(frame.columns)}")
    ts_name, ts_format, zoned, timestamps = candidates[0]
    example = str(frame[ts_name].dropna().iloc[0]) if frame[ts_name].notna().any() else ""
    asset, n_assets = _asset_column(frame, timestamps, {ts_name})
    label, label_values = _label(frame, {ts_name, asset})
    first, last = timestamps.min(), timestamps.max()
    if ts_name in stored.column_range and ts_format == "":
        low, high = stored.column_range[ts_name]
        if isinstance(low, dt.datetime):
            as_utc = [pd.Timestamp(v).tz_localize("UTC") if pd.Timestamp(v).tzinfo is None
                      else pd.Timestamp(v).tz_convert("UTC") for v in (low, high)]
            first, last = as_utc
    channels, ignored = [], {}
    for name in frame.columns:
        if name in (ts_name, asset, label):
            continue
        values = _numeric(frame[name], stored.decimal_separator)
        given = frame[name].notna() & (frame[name].astype(str).str.strip() != "")
        if given.any() and values[given].notna().mean() < 0.9:
            ignored[str(name)] = "not numeric"
            continue
        channel = _channel(name, values, len(frame))
        if channel.null_share == 1.0:
            ignored[str(name)] = "no value in the sample"
        elif channel.constant:
            ignored[str(name)] = f"constant ({channel.low:g}) in the sample: no information"
        else:
            channel.wraps = _wraps(values, timestamps, frame[asset] if asset else None)
            channel.period = 360.0 if channel.wraps >= 2 else None
            channel.driver = _driver(channel)
            channels.append(channel)
    if not channels:
        raise InspectionError(f"{stored.path}: no numeric channel besides the timestamp{' and asset' if asset else ''} "
                              f"columns ({ignored})")
    return Findings(stored, str(ts_name), ts_format, zoned, example, asset, n_assets,
                    _step(timestamps, frame[asset] if asset else None), first.to_pydatetime(), last.to_pydatetime(),
                    channels, label, label_values, ignored)


def training_range(findings: Findings, train_days: Optional[int] = None) -> tuple[dt.date, dt.date]:
    """The suggested training range: from the first full day, ``train_days`` days (default: half the
    archive, between 7 and 90 days), leaving the rest to score."""
    first_full = findings.first.date() + dt.timedelta(days=0 if findings.first.time() == dt.time(0) else 1)
    available = (findings.last.date() - first_full).days
    days = train_days or min(90, max(7, available // 2))
    days = max(1, min(days, max(1, available)))
    return first_full, first_full + dt.timedelta(days=days - 1)


def _yaml_value(value) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def config_text(findings: Findings, pipeline: str, train_days: Optional[int] = None) -> str:
    """A commented pipeline YAML for the inspected table."""
    f, stored = findings, findings.stored
    start, end = training_range(f, train_days)
    step = f.step_s
    window = int(min(64, max(12, round(4 * 3600 / step))))
    # a normal-behaviour model when a channel's name says it drives the asset and others remain to predict
    normal_behaviour = any(c.driver for c in f.channels) and not all(c.driver for c in f.channels)
    lines = [f"# Written by lstmad init from {stored.path} on {dt.date.today()}: every value below is a guess from",
             f"# a sample of {len(stored.sample):,} rows" + (f" of {stored.rows_total:,}" if stored.rows_total else "")
             + "; check the lines marked CHECK. Reference: docs/your-data.md, lstmad/config.py.",
             f"# Seen: {f.asset_count} asset(s), {f.first:%Y-%m-%d %H:%M} .. {f.last:%Y-%m-%d %H:%M} UTC "
             f"({f.days} days), one row every {step} s.",
             f"pipeline: {pipeline}", "source:", f"  path: {_yaml_value(str(stored.path))}",
             f"  format: {stored.format}"]
    if stored.format == "csv":
        lines.append(f"  csv_delimiter: {_yaml_value(stored.csv_delimiter)}")
        if stored.csv_encoding != "utf-8":
            lines.append(f"  csv_encoding: {stored.csv_encoding}      # CHECK: bytes that are not UTF-8 were seen")
        if stored.decimal_separator != ".":
            lines.append(f"  decimal_separator: {_yaml_value(stored.decimal_separator)}  # numbers written as 12,5")
        if stored.byte_order_mark:
            lines.append("  # the file starts with a UTF-8 byte-order mark: lstmad skips it")
    lines.append(f"  timestamp_column: {_yaml_value(f.timestamp_column)}   # e.g. {f.timestamp_example}")
    if f.timestamp_format:
        lines.append(f"  timestamp_format: {f.timestamp_format}")
    zone_note = ("the timestamps carry their zone" if f.timezone_known
                 else "CHECK: the timestamps carry no zone; give the zone they were written in")
    lines.append(f"  timezone: UTC                 # {zone_note}")
    if f.asset_column:
        lines.append(f"  asset_column: {_yaml_value(f.asset_column)}   # {f.asset_count} assets in the sample")
    else:
        lines.append(f"  asset_constant: {_yaml_value(pipeline)}   # every timestamp occurs once: one asset")
    if f.label_column:
        lines.append(f"  label_column: {_yaml_value(f.label_column)}")
        if f.label_values:
            lines.append("  label_values:                # CHECK: which values mean anomalous (1)")
            lines += [f"    {_yaml_value(k)}: {v}" for k, v in sorted(f.label_values.items())]
    else:
        lines.append("  label_column: null            # no label column seen")
    lines.append("  partition_column: null        # one file or folder: rows are selected by timestamp")
    lines.append("  channels:                     # CHECK: units, physical ranges (minimum/maximum mask what lies outside)")
    for c in f.channels:
        spec = {"name": c.name}
        if c.unit:
            spec["unit"] = c.unit
        if c.sentinels:
            spec["sentinels"] = [float(s) for s in c.sentinels]
        if c.period:
            spec["period"] = c.period
        if normal_behaviour and c.driver:
            spec["role"] = "driver"
        body = ", ".join(f"{k}: {_yaml_value(v)}" for k, v in spec.items())
        notes = [f"{100 * c.null_share:.1f} % empty", f"observed {c.low:.6g} .. {c.high:.6g} (0.1–99.9 %)"]
        if c.sentinels:
            notes.append(f"suspected sentinel values on {c.sentinel_rows} rows")
        if c.isolated_extreme is not None:
            notes.append(f"CHECK: {c.isolated_extreme:g} repeats far from the rest, a sentinel?")
        if c.period:
            notes.append(f"CHECK: an angle? it jumped by more than 270 between consecutive rows {c.wraps} times: "
                         "period 360 feeds the model its sine and cosine")
        if normal_behaviour and c.driver:
            notes.append(f"CHECK: its name says {c.driver}, a driver of the asset: the model predicts the other "
                         "channels from the drivers")
        lines.append(f"    - {{{body}}}   # " + "; ".join(notes))
    for name, why in f.ignored.items():
        lines.append(f"    # - {_yaml_value(name)}   # left out: {why}")
    wind = next((c.name for c in f.channels if c.driver == "wind speed"), None)
    if normal_behaviour and wind:
        # a suggestion only: on La Haute Borne it raised AUROC but made the calibrated threshold more cautious
        quoted = sql_name(wind)
        lines += ["# operating_states:             # CHECK: a turbine idles below its cut-in wind speed (3-4 m/s);",
                  f"#   - {{name: below_cut_in, when: {_yaml_value(quoted + ' < 3.5')}}}   # uncomment to leave those "
                  "rows out of training, calibration and alarms"]
        pitch = next((c.name for c in f.channels if not c.driver and PITCH_NAME.search(c.name)
                      and not NOT_AN_ANGLE.search(c.name)), None)
        power = next((c.name for c in f.channels if not c.driver and POWER_NAME.search(c.name)
                      and not NOT_AN_ANGLE.search(c.name)), None)
        if pitch:
            # on La Haute Borne the stops set the calibrated threshold and most false intervals (docs/benchmarks.md);
            # with the power too, a pitch sensor stuck feathered while the turbine produces still alarms
            when = sql_name(pitch) + " > 45" + (f" AND {sql_name(power)} < 50" if power else "")
            lines += [f"#   - {{name: stopped, when: {_yaml_value(when)}}}   # CHECK: blades feathered above cut-in"
                      " with no power: the turbine is stopped (a status column says it better)"]
    lines += ["prepare:", f"  step_s: {step}", f"  smoothing_half_width: {1 if step >= 600 else 2}",
              f"  window: {window}                   # {window * step / 3600:.1f} hours",
              "  block_rows: 4096", "  normalisation: zscore",
              f"  max_gap_steps: {min(6, max(1, 3600 // step))}            # gaps up to this many missing steps are "
              "interpolated (and masked)", "  max_masked_share: 0.1",
              "model:                          # the default detector; model.candidates lets training choose",
              "  detector: lstm_forecaster"]
    if normal_behaviour:
        # the settings of the La Haute Borne study's best model (docs/benchmarks.md): Mahalanobis distance of
        # the responses' residuals, each averaged over about 2 hours
        steps = max(1, min(window // 2, round(7200 / step)))
        lines += ["  error_model: mahalanobis     # a normal-behaviour model: the responses predicted from the drivers",
                  f"  residual_steps: {steps}            # a window's residual: the mean of its last {steps} rows' "
                  f"({steps * step / 3600:.1f} h)"]
        drivers = [c.name for c in f.channels if c.driver]
        if f.label_column:  # other roles are judged on the labelled evaluation range (docs/training.md)
            sets = [[d] for d in drivers] if len(drivers) > 1 else []
            suggested = json.dumps(sets + [[]], ensure_ascii=False)
            lines += [f"  # driver_sets: {suggested}   # other drivers to try: the labelled evaluation range keeps "
                      "the best"]
    lines += ["  hidden_sizes: [32, 16]", "  epochs: 8", "  batch_size: 256",
              "  patience: 2", "  max_train_windows: 60000", "  seed: 0",
              "train:                          # CHECK: a period of normal operation",
              f"  start: {start}", f"  end: {end}"]
    after = end  # the last date of the training and evaluation ranges
    if f.label_column:
        eval_end = min(f.last.date(), end + dt.timedelta(days=max(7, (end - start).days // 3)))
        if eval_end > end:
            lines += [f"  eval_start: {end + dt.timedelta(days=1)}", f"  eval_end: {eval_end}"]
            after = eval_end
    lines += ["threshold:                      # calibrated on windows the model never trained on",
              "  rule: alarms_per_week", "  budget: 0.5                   # false intervals per asset and week",
              "  calibration_share: 0.1"]
    if f.last.date() > after:
        # a suggestion: where normal operation drifts beyond the training range, only later data can calibrate
        # (docs/training.md, "A later normal range")
        lines += [f"  # calibration_start: {after + dt.timedelta(days=1)}   # CHECK: normal operation; with calibration_end "
                  "and calibration_share removed,",
                  f"  # calibration_end: {min(f.last.date(), after + dt.timedelta(days=7))}     # these later days "
                  "calibrate instead (prepare them too)"]
    lines += [
              "  # per_asset: true              # assets of other makes or sensors: each its own threshold",
              "score:", "  batch_size: 4096", f"  min_interval_s: {max(600, 3 * step)}",
              f"  merge_gap_s: {max(300, 2 * step)}",
              "spark:", "  master: local[*]", "  shuffle_partitions: 4", "  driver_memory: 2g",
              "delta:", "  engine: delta-rs"]
    return "\n".join(lines) + "\n"


def next_commands(conf: str, findings: Findings, train_days: Optional[int] = None) -> list[str]:
    """What to run after init, in order."""
    _, end = training_range(findings, train_days)
    night = end + dt.timedelta(days=1)
    return [f"lstmad prepare --conf {conf} --training",
            f"lstmad train --conf {conf}",
            f"lstmad prepare --conf {conf} --date {night}",
            f"lstmad score --conf {conf} --date {night}",
            f"lstmad sql --conf {conf} 'select asset_id, start, \"end\", severity, top_channel "
            "from anomaly_intervals order by severity desc limit 10'"]
