"""A synthetic wind farm: 26 physically coupled SCADA channels per turbine with labelled icing episodes.

Modelled on the WTBI data of the IAE-LSTM-KL paper (../shared/references): the channels follow a power curve of
wind speed, pitch regulates above rated wind, yaw tracks wind direction with lag, temperatures follow ambient
and load, vibration grows with load. Icing (cold, humid spells) ramps in and out over hours and shows as a power
deficit against the curve, changed pitch behaviour and extra vibration. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter

from lstmad.config import FarmSpec  # noqa: F401 (what generate_farm takes)

CHANNELS = (
    "wind_speed", "generator_speed", "power", "wind_direction", "wind_direction_mean", "yaw_position",
    "yaw_speed", "pitch1_angle", "pitch2_angle", "pitch3_angle", "pitch1_speed", "pitch2_speed",
    "pitch3_speed", "pitch1_moto_tmp", "pitch2_moto_tmp", "pitch3_moto_tmp", "acc_x", "acc_y",
    "environment_tmp", "int_tmp", "pitch1_ng5_tmp", "pitch2_ng5_tmp", "pitch3_ng5_tmp", "pitch1_ng5_DC",
    "pitch2_ng5_DC", "pitch3_ng5_DC",
)

RATED_POWER_KW = 2000.0
CUT_IN_MS, RATED_MS, CUT_OUT_MS = 3.0, 12.0, 25.0


def _ar1(rng: np.random.Generator, n: int, tau_steps: float, sigma: float, size: int = 1) -> np.ndarray:
    """Stationary AR(1) noise with correlation time ``tau_steps`` and standard deviation ``sigma``; (size, n)."""
    a = np.exp(-1.0 / max(tau_steps, 1e-9))
    shocks = rng.normal(0.0, sigma * np.sqrt(1 - a * a), size=(size, n))
    shocks[:, 0] = rng.normal(0.0, sigma, size=size)
    return lfilter([1.0], [1.0, -a], shocks, axis=1)


def _lag(x: np.ndarray, tau_steps: float) -> np.ndarray:
    """First-order lag (exponential smoothing) of a series (n,), starting in steady state at its first value."""
    a = np.exp(-1.0 / max(tau_steps, 1e-9))
    y, _ = lfilter([1 - a], [1.0, -a], x, zi=[a * x[0]])
    return y


def power_curve(wind_speed: np.ndarray) -> np.ndarray:
    """Electrical power (kW) of the turbine model for a wind speed (m/s); same shape."""
    fraction = np.clip((wind_speed - CUT_IN_MS) / (RATED_MS - CUT_IN_MS), 0.0, 1.0) ** 3
    return np.where(wind_speed >= CUT_OUT_MS, 0.0, RATED_POWER_KW * fraction)


def _icing_severity(rng: np.random.Generator, ambient: np.ndarray, steps_per_hour: float,
                    episodes: float) -> np.ndarray:
    """Icing severity in [0, 1] per step; episodes start in cold spells, ramp in and out over hours. (n,)"""
    n = ambient.size
    severity = np.zeros(n)
    count = rng.poisson(episodes)
    cold = np.flatnonzero(ambient < 0.5)
    if cold.size == 0:
        return severity
    for _ in range(count):
        onset = int(rng.choice(cold))
        ramp_in = int(rng.uniform(2, 5) * steps_per_hour)
        hold = int(rng.uniform(4, 14) * steps_per_hour)
        ramp_out = int(rng.uniform(2, 6) * steps_per_hour)
        shape = np.concatenate([
            0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp_in)),
            np.ones(hold),
            0.5 + 0.5 * np.cos(np.linspace(0, np.pi, ramp_out)),
        ])
        end = min(n, onset + shape.size)
        severity[onset:end] = np.maximum(severity[onset:end], shape[: end - onset])
    return severity


def generate_farm(spec: FarmSpec) -> pd.DataFrame:
    """The whole farm as one long table: columns timestamp (UTC), turbine_id, the 26 CHANNELS, label (0/1).

    Rows: spec.turbines × (spec.days · 86400 / spec.step_s), ordered by turbine then time.
    """
    rng = np.random.default_rng(spec.seed)
    n = spec.days * 86400 // spec.step_s
    steps_per_hour = 3600.0 / spec.step_s
    start = pd.Timestamp(spec.start, tz="UTC")
    timestamps = start + pd.to_timedelta(np.arange(n) * spec.step_s, unit="s")
    hours = np.arange(n) * spec.step_s / 3600.0

    # Weather shared by the farm: ambient temperature (synoptic swings + daily cycle), wind and direction.
    ambient = (1.5 + _ar1(rng, n, 36 * steps_per_hour, 4.0)[0]
               + 3.0 * np.sin(2 * np.pi * (hours % 24 - 9) / 24))
    changed = np.arange(n) >= spec.change_day * 86400 // spec.step_s if spec.change_day else np.zeros(n, bool)
    unknown = sorted(set(spec.recalibrated_channels) - set(CHANNELS))
    if unknown:
        raise ValueError(f"recalibrated_channels: no channel {unknown[0]!r}; channels: {', '.join(CHANNELS)}")
    ambient = ambient + spec.ambient_shift_c * changed
    farm_wind = _ar1(rng, n, 8 * steps_per_hour, 2.6)[0]
    # Prevailing south-westerly wind: direction wanders for days around 220° but reverts to it.
    direction = 220 + _ar1(rng, n, 48 * steps_per_hour, 35.0)[0] + _ar1(rng, n, 3, 4.0)[0]

    frames = []
    for turbine in range(spec.turbines):
        w = _ar1(rng, n, 2 * steps_per_hour, 0.8)[0] + _ar1(rng, n, 2, 0.5)[0]
        wind = np.clip(7.5 + farm_wind + w, 0.0, 24.5)
        ice = _icing_severity(rng, ambient, steps_per_hour, spec.icing_episodes_per_turbine)
        # Icing disturbs the rotor aerodynamics: slow power and pitch oscillations (tens of minutes).
        wobble = ice * (np.sin(2 * np.pi * hours * 60 / rng.uniform(18, 35)) + 0.6 * _ar1(rng, n, 6, 1.0)[0])

        available = power_curve(wind)
        power = available * (1 - 0.35 * ice) * (1 + 0.06 * wobble) + rng.normal(0, 12, n)
        power = np.clip(power, -15.0, RATED_POWER_KW * 1.02)
        load = np.clip(power / RATED_POWER_KW, 0, 1)
        gen_fraction = np.clip((wind - CUT_IN_MS) / (RATED_MS - CUT_IN_MS), 0, 1)
        generator_speed = np.where(wind < CUT_IN_MS, 0.0, 1000 + 800 * gen_fraction ** 0.7)
        generator_speed = generator_speed * (1 - 0.08 * ice) + rng.normal(0, 6, n)

        base_pitch = np.where(wind > RATED_MS, 4.2 * np.maximum(wind - RATED_MS, 0.0) ** 0.8, 0.0)
        base_pitch = np.where(wind < CUT_IN_MS, 86.0, base_pitch)
        base_pitch = _lag(base_pitch, 2.0) - 2.5 * ice * (wind > RATED_MS - 2) + 1.8 * wobble
        pitches = [np.clip(base_pitch + rng.normal(0, 0.15, n) + off, -1, 90) for off in (0.0, 0.1, -0.1)]
        pitch_speeds = [np.diff(p, prepend=p[0]) * (60.0 / spec.step_s) for p in pitches]

        turbine_dir = direction + _ar1(rng, n, 10, 2.0)[0]
        dir_mean = pd.Series(turbine_dir).rolling(max(1, int(10 * 60 / spec.step_s)), min_periods=1).mean().to_numpy()
        yaw = _lag(turbine_dir, 6.0) + rng.normal(0, 0.3, n)
        yaw_speed = np.diff(yaw, prepend=yaw[0]) * (60.0 / spec.step_s)

        vibration_scale = 0.02 + 0.08 * load + 0.06 * ice + 0.03 * np.abs(wobble)
        acc_x = vibration_scale * (1 + 0.3 * _ar1(rng, n, 3, 1.0)[0]) + rng.normal(0, 0.004, n)
        acc_y = 0.8 * vibration_scale * (1 + 0.3 * _ar1(rng, n, 3, 1.0)[0]) + rng.normal(0, 0.004, n)

        activity = np.abs(pitch_speeds[0])
        motor_tmps = [_lag(ambient + 12 + 18 * load + 4 * activity, 30 * steps_per_hour / 60) + rng.normal(0, 0.2, n)
                      for _ in range(3)]
        int_tmp = _lag(ambient + 16 + 10 * load, 45 * steps_per_hour / 60) + rng.normal(0, 0.2, n)
        ng5_tmps = [_lag(ambient + 9 + 3 * load, 40 * steps_per_hour / 60) + rng.normal(0, 0.2, n) for _ in range(3)]
        ng5_dcs = [1.2 + 0.8 * np.clip(activity, 0, 3) + 0.4 * ice + rng.normal(0, 0.05, n) for _ in range(3)]

        channels = {
            "wind_speed": wind + rng.normal(0, 0.1, n), "generator_speed": generator_speed, "power": power,
            "wind_direction": turbine_dir % 360, "wind_direction_mean": dir_mean % 360, "yaw_position": yaw % 360,
            "yaw_speed": yaw_speed,
            **{f"pitch{i + 1}_angle": pitches[i] for i in range(3)},
            **{f"pitch{i + 1}_speed": pitch_speeds[i] for i in range(3)},
            **{f"pitch{i + 1}_moto_tmp": motor_tmps[i] for i in range(3)},
            "acc_x": acc_x, "acc_y": acc_y, "environment_tmp": ambient + rng.normal(0, 0.1, n), "int_tmp": int_tmp,
            **{f"pitch{i + 1}_ng5_tmp": ng5_tmps[i] for i in range(3)},
            **{f"pitch{i + 1}_ng5_DC": ng5_dcs[i] for i in range(3)},
        }
        for name in spec.recalibrated_channels:
            channels[name] = channels[name] + spec.recalibration_offset_sd * np.std(channels[name][~changed]) * changed
        frame = pd.DataFrame({name: channels[name] for name in CHANNELS})
        frame.insert(0, "turbine_id", f"T{turbine + 1:02d}")
        frame.insert(0, "timestamp", timestamps)
        frame["label"] = (ice > 0.2).astype(np.int8)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# rows per row group of the landing files: 64 Ki rows of 26 channels, about 14 MB of doubles
LANDING_ROW_GROUP_ROWS = 65_536


def write_landing_table(farm: pd.DataFrame, path: str | Path, partition_column: str = "date") -> list[Path]:
    """Write the farm as the raw landing table: Parquet, one folder per UTC date (``date=YYYY-MM-DD``).

    Each date's file is replaced whole, so regenerating a date never leaves a stale file beside a new one.
    Returns the written files.
    """
    root = Path(path)
    written = []
    dates = farm["timestamp"].dt.strftime("%Y-%m-%d")
    for day, rows in farm.groupby(dates, sort=True):
        folder = root / f"{partition_column}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "part-0.parquet"
        tmp = folder / ".part-0.parquet.tmp"
        # Microsecond timestamps: Spark cannot read Parquet nanosecond timestamps. Row groups of 64 Ki rows,
        # not pyarrow's 1 Mi: Spark's reader holds a task's whole row group (compressed column chunks, off the
        # JVM heap), so a fleet's daily file in 1 Mi-row groups cost the JVM about 410 MB more at 1,000
        # turbines on 2 cores. A dictionary only for the turbine id: continuous readings rarely repeat, so
        # dictionary-encoded they take more bytes, and Spark reads them a value at a time (about 4 s more of
        # a 1,000-turbine night's prepare; docs/operations.md, "Memory of a night")
        pq.write_table(pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False), tmp,
                       coerce_timestamps="us", row_group_size=LANDING_ROW_GROUP_ROWS, use_dictionary=["turbine_id"])
        tmp.replace(target)
        written.append(target)
    return written
