"""Checks of a loaded pipeline configuration beyond the types of its keys: allowed choices, ranges and
settings that cannot work together (lstmad.config.load_config runs them)."""

from __future__ import annotations

import math

from lstmad.config import DISTRIBUTABLE, ConfigError, PipelineConfig
from lstmad.training.params import LR_SCHEDULES, PRECISIONS

EPOCH_FORMATS = ("epoch_s", "epoch_ms", "epoch_us", "epoch_ns")  # lstmad.spark.prepare.EPOCH_UNITS

_CHOICES = {
    "prepare.normalisation": ("zscore", "minmax"),
    "model.detector": ("lstm_forecaster", "lstm_autoencoder", "iae_lstm_kl", "pca_t2q", "isolation_forest"),  # lstmad.detectors.DETECTORS
    "model.profile": ("tuned", "authors_per_sample", "small", "paper"),  # detectors.variants.PROFILES, per sample
    "model.error_model": ("squared", "mahalanobis"),
    "model.device": ("auto", "cpu", "cuda"),
    "model.lr_schedule": LR_SCHEDULES,
    "score.device": ("auto", "cpu", "cuda"),
    "model.precision": PRECISIONS,
    "threshold.rule": ("percentile", "mean_std", "pot", "row_rate", "alarms_per_week"),  # evaluation.calibration.RULES
    "delta.engine": ("delta-rs", "delta-spark"),
    "airflow.runner": ("in_process", "spark_submit"),
    "airflow.on_missing_data": ("wait", "skip"),
    "source.format": ("parquet", "csv", "delta"),
    "prepare.normalisation_scope": ("global", "per_asset"),
}



def check_config(config: PipelineConfig, source: str) -> None:
    """Raise ConfigError (one line naming the file and key) for settings that cannot work together."""
    from lstmad.detectors.variants import BATCH_DEPENDENT_PROFILES

    if config.model.detector == "iae_lstm_kl" and config.model.profile in BATCH_DEPENDENT_PROFILES:
        # before the choices check: say why it is refused
        raise ConfigError(f"{source}: key 'model.profile' {config.model.profile!r} is the authors' batch-recurrent "
                          "IAE-LSTM-KL, whose scores depend on the other windows of a batch: reproduction only "
                          "(lstmad benchmark iae-reproduction); use tuned, small or paper")
    for dotted, allowed in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise ConfigError(f"{source}: key '{dotted}' must be one of {list(allowed)}, got {value!r}")
    if config.prepare.window < 2:
        raise ConfigError(f"{source}: key 'prepare.window' must be at least 2")
    if config.prepare.block_rows < config.prepare.window:
        raise ConfigError(f"{source}: key 'prepare.block_rows' must be at least prepare.window")
    src = config.source
    if not src.channels:
        raise ConfigError(f"{source}: key 'source.channels' must list at least one channel")
    seen: set[str] = set()
    for i, channel in enumerate(src.channels):
        if channel.name in seen:
            raise ConfigError(f"{source}: key 'source.channels[{i}]' repeats channel '{channel.name}'")
        seen.add(channel.name)
        if channel.role not in ("driver", "response"):
            raise ConfigError(f"{source}: key 'source.channels[{i}].role' must be driver or response, "
                              f"got {channel.role!r}")
        if channel.minimum is not None and channel.maximum is not None and channel.minimum > channel.maximum:
            raise ConfigError(f"{source}: key 'source.channels[{i}]' ({channel.name}) has minimum > maximum")
        if channel.period is not None and not (math.isfinite(channel.period) and channel.period > 0):
            raise ConfigError(f"{source}: key 'source.channels[{i}].period' ({channel.name}) must be a positive "
                              f"number (360 for an angle in degrees), got {channel.period!r}")
    for i, channel in enumerate(src.channels):
        # a circular channel's tensor channels are <name>:sin and <name>:cos, folded back by these names
        if channel.name.endswith((":sin", ":cos")):
            raise ConfigError(f"{source}: key 'source.channels[{i}]': the name '{channel.name}' ends as a circular "
                              "channel's sine or cosine would; rename the column")
    if src.driver_indices and all(c.role == "driver" for c in src.channels):
        raise ConfigError(f"{source}: key 'source.channels': every channel is a driver; at least one must be a "
                          "response (the channels a normal-behaviour model predicts and alarms on)")
    if src.driver_indices and config.model.detector != "lstm_forecaster":
        raise ConfigError(f"{source}: channel roles (source.channels[].role: driver) need model.detector "
                          f"lstm_forecaster, got {config.model.detector}")
    if bool(src.asset_column) == bool(src.asset_constant):
        raise ConfigError(f"{source}: set exactly one of 'source.asset_column' and 'source.asset_constant'")
    if src.format == "csv" and len(src.csv_delimiter) != 1:
        raise ConfigError(f"{source}: key 'source.csv_delimiter' must be one character")
    if src.decimal_separator not in (".", ","):
        raise ConfigError(f"{source}: key 'source.decimal_separator' must be '.' or ',', got {src.decimal_separator!r}")
    if src.decimal_separator == "," and src.csv_delimiter == ",":
        raise ConfigError(f"{source}: key 'source.decimal_separator' is ',' and so is 'source.csv_delimiter'; "
                          "such exports separate fields with ';'")
    if src.csv_charset is None:
        raise ConfigError(f"{source}: key 'source.csv_encoding' must be utf-8, latin-1 (iso-8859-1) or us-ascii "
                          f"(convert other encodings to UTF-8 first); got {src.csv_encoding!r}")
    if src.timestamp_format.startswith("epoch") and src.timestamp_format not in EPOCH_FORMATS:
        raise ConfigError(f"{source}: key 'source.timestamp_format' {src.timestamp_format!r}: numeric timestamps "
                          f"are one of {', '.join(EPOCH_FORMATS)}")
    if config.airflow.data_wait_timeout_minutes < 0 or config.airflow.data_poke_interval_s < 1:
        raise ConfigError(f"{source}: keys 'airflow.data_wait_timeout_minutes' (≥ 0) and 'airflow.data_poke_interval_s' "
                          "(≥ 1) bound the wait for a night's raw data")
    for value, label in src.label_values.items():
        if label not in (0, 1):
            raise ConfigError(f"{source}: key 'source.label_values.{value}' must be 0 (normal) or 1 (anomalous), "
                              f"got {label!r}")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(src.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: key 'source.timezone' is not a known time zone: {src.timezone!r}") from None
    if config.prepare.step_s <= 0 or 86_400 % config.prepare.step_s:
        raise ConfigError(f"{source}: key 'prepare.step_s' must be a positive divisor of 86400 (a day), got "
                          f"{config.prepare.step_s}")
    # the forecaster predicts rows 2..W from the rows before them; a normal-behaviour model every row
    no_drivers = not src.driver_indices or any(not drivers for drivers in config.model.driver_sets)
    most_steps = config.prepare.window - (1 if no_drivers else 0)
    if not 1 <= config.model.residual_steps <= most_steps:
        raise ConfigError(f"{source}: key 'model.residual_steps' must lie between 1 and {most_steps} for windows "
                          f"of {config.prepare.window} rows, got {config.model.residual_steps}")
    if config.model.residual_steps != 1 and config.model.detector != "lstm_forecaster" and not config.model.candidates:
        raise ConfigError(f"{source}: key 'model.residual_steps' applies to model.detector lstm_forecaster, "
                          f"not {config.model.detector}")
    if config.model.residual_spread and (config.model.detector != "lstm_forecaster" or config.model.residual_steps < 2
                                         or config.model.error_model != "mahalanobis"):
        raise ConfigError(f"{source}: key 'model.residual_spread' needs model.detector lstm_forecaster with error_model "
                          f"mahalanobis and residual_steps of at least 2 (the spread of k residuals), got "
                          f"{config.model.detector}, {config.model.error_model}, {config.model.residual_steps}")
    if config.model.scoring_chunk < 1:
        raise ConfigError(f"{source}: key 'model.scoring_chunk' must be at least 1 (1: each window scored alone), got "
                          f"{config.model.scoring_chunk}")
    if config.model.scoring_chunk != 1 and config.model.detector != "lstm_forecaster" and not config.model.candidates:
        raise ConfigError(f"{source}: key 'model.scoring_chunk' applies to model.detector lstm_forecaster, "
                          f"not {config.model.detector}")
    if config.model.error_regimes < 0 or config.model.error_regimes == 1:
        raise ConfigError(f"{source}: key 'model.error_regimes' must be 0 (one error Gaussian) or at least 2, got "
                          f"{config.model.error_regimes}")
    if config.model.error_regimes and (config.model.detector != "lstm_forecaster"
                                       or config.model.error_model != "mahalanobis") and not config.model.candidates:
        raise ConfigError(f"{source}: key 'model.error_regimes' applies to model.detector lstm_forecaster with "
                          f"model.error_model mahalanobis, not {config.model.detector} with {config.model.error_model}")
    if (config.model.frozen_channels is True and config.model.detector not in ("lstm_forecaster", "lstm_autoencoder")
            and not config.model.candidates):
        raise ConfigError(f"{source}: key 'model.frozen_channels' applies to model.detector lstm_forecaster or "
                          f"lstm_autoencoder, not {config.model.detector}")
    if config.prepare.max_gap_steps < 0:
        raise ConfigError(f"{source}: key 'prepare.max_gap_steps' must be 0 or more")
    if not 0 <= config.prepare.max_masked_share <= 1:
        raise ConfigError(f"{source}: key 'prepare.max_masked_share' must lie in [0, 1]")
    from lstmad.detectors.variants import VARIANTS

    if config.model.variant not in VARIANTS:
        raise ConfigError(f"{source}: key 'model.variant' must be one of {sorted(VARIANTS)}, "
                          f"got {config.model.variant!r}")
    d = config.train.distributed
    if d.processes < 0 or d.shuffle_files < 1 or d.threads_per_process < 0:
        raise ConfigError(f"{source}: keys 'train.distributed.processes' and '.threads_per_process' must be 0 or "
                          "more, '.shuffle_files' at least 1")
    if d.processes and config.model.detector not in DISTRIBUTABLE:
        raise ConfigError(f"{source}: key 'train.distributed.processes' needs model.detector in "
                          f"{list(DISTRIBUTABLE)}; {config.model.detector} trains in one process (processes: 0)")
    if d.processes > 1 and config.model.batch_size % d.processes:
        raise ConfigError(f"{source}: key 'model.batch_size' ({config.model.batch_size}) must be a multiple of "
                          f"train.distributed.processes ({d.processes}): each process takes an equal share")
    from lstmad.training.selection import CANDIDATES

    unknown = [c for c in config.model.candidates if c not in CANDIDATES]
    if unknown:
        raise ConfigError(f"{source}: key 'model.candidates' lists unknown {unknown}; choose from {list(CANDIDATES)}")
    unsharded = [c for c in config.model.candidates if CANDIDATES[c]["detector"] not in DISTRIBUTABLE]
    if d.processes and unsharded:
        raise ConfigError(f"{source}: key 'model.candidates' lists {unsharded}, which train in one process only; "
                          f"with train.distributed.processes list only {list(DISTRIBUTABLE)} detectors")
    _check_driver_sets(config, source)
    th = config.threshold
    if not 0 < th.percentile < 100:
        raise ConfigError(f"{source}: key 'threshold.percentile' must lie strictly between 0 and 100")
    if not 0 <= th.calibration_share < 0.5:
        raise ConfigError(f"{source}: key 'threshold.calibration_share' must lie in [0, 0.5)")
    if th.cross_fit_folds is not None and (th.cross_fit_folds == 1 or th.cross_fit_folds < 0):
        raise ConfigError(f"{source}: key 'threshold.cross_fit_folds' must be 0 (off) or at least 2, "
                          f"got {th.cross_fit_folds}")
    if th.cross_fit_folds and th.calibration_share > 0:
        raise ConfigError(f"{source}: keys 'threshold.cross_fit_folds' and 'threshold.calibration_share' both choose "
                          "the calibration windows: set one")
    if th.cross_fit_folds and d.processes:
        raise ConfigError(f"{source}: key 'threshold.cross_fit_folds' needs the training windows in one process "
                          "(train.distributed.processes: 0)")
    if (th.calibration_start is None) != (th.calibration_end is None):
        raise ConfigError(f"{source}: keys 'threshold.calibration_start' and 'threshold.calibration_end' go together: "
                          "set both or neither")
    if th.calibration_start is not None:
        clash = calibration_range_clash(config)
        if clash:
            raise ConfigError(f"{source}: key 'threshold.calibration_start': {clash}")
    if th.min_asset_windows < 1:
        raise ConfigError(f"{source}: key 'threshold.min_asset_windows' must be at least 1, got {th.min_asset_windows}")
    if th.rule == "row_rate" and not 0 < th.budget < 1:
        raise ConfigError(f"{source}: key 'threshold.budget' is a share of rows for rule row_rate: in (0, 1)")
    if th.rule == "pot" and not 0 < th.budget < 0.02:
        # the tail is fitted above the 98th percentile: a larger budget would extrapolate it downwards
        raise ConfigError(f"{source}: key 'threshold.budget' must lie in (0, 0.02) for rule pot (use row_rate above)")
    if config.model.checkpoint_dir:
        raise ConfigError(f"{source}: key 'model.checkpoint_dir' is not a setting: training checkpoints go to its "
                          "MLflow run's artifacts")
    names = [state.name for state in config.operating_states]
    for i, state in enumerate(config.operating_states):
        if not state.name.strip() or not state.when.strip() or names.count(state.name) > 1 or len(names) > 100:
            raise ConfigError(f"{source}: key 'operating_states[{i}]' needs a unique non-empty name and a "
                              "condition 'when' (at most 100 states)")
    from lstmad.transforms.intervals import AlarmRules

    try:
        AlarmRules.of(config.score, config.prepare.step_s)
    except ValueError as err:
        raise ConfigError(f"{source}: keys 'score.persistence', 'score.persistence_window', 'score.hysteresis': "
                          f"{err}") from None
    if th.rule == "alarms_per_week" and th.budget <= 0:
        raise ConfigError(f"{source}: key 'threshold.budget' (false intervals per asset-week) must be > 0")


def calibration_range_clash(config: PipelineConfig) -> str:
    """Why threshold.calibration_start..calibration_end cannot calibrate this configuration ('' when it can): its
    dates must be in order and share none with the training or evaluation range (a window the model trained on,
    or that judges it, would calibrate), and it is the only choice of calibration windows."""
    th, t = config.threshold, config.train
    start, end = th.calibration_start, th.calibration_end
    if start > end:
        return f"the calibration range {start}..{end} ends before it starts"
    for name, (first, last) in (("training", (t.start, t.end)), ("evaluation", (t.eval_start, t.eval_end))):
        if first is not None and last is not None and first <= end and start <= last:
            return (f"the calibration range {start}..{end} overlaps the {name} range {first}..{last}: "
                    "its windows must be ones the model neither trained on nor is judged on")
    if th.calibration_share > 0 or th.cross_fit_folds:
        return "threshold.calibration_share or threshold.cross_fit_folds also chooses the calibration windows: set one"
    if t.window_days:
        return ("a fixed calibration range cannot follow the sliding training range of train.window_days: "
                "set one")
    return ""


def _check_driver_sets(config, source: str) -> None:
    """model.driver_sets: sets of source channel names, each leaving a response, tried on a forecaster."""
    from lstmad.training.selection import FORECASTERS, STUDY_FAULTS, Candidate

    m, names = config.model, config.source.channel_names
    if not m.driver_sets:
        return
    if not any(c in FORECASTERS for c in m.candidates or (m.detector,)):
        raise ConfigError(f"{source}: key 'model.driver_sets' needs a forecaster to drive: model.detector "
                          f"lstm_forecaster, or one of {list(FORECASTERS)} in model.candidates")
    for i, drivers in enumerate(m.driver_sets):
        unknown = [d for d in drivers if d not in names]
        if unknown:
            raise ConfigError(f"{source}: key 'model.driver_sets[{i}]' names {unknown}, not channels of "
                              f"source.channels ({', '.join(names)})")
        if len(set(drivers)) < len(drivers):
            raise ConfigError(f"{source}: key 'model.driver_sets[{i}]' names a channel twice: {list(drivers)}")
        if set(drivers) == set(names):
            raise ConfigError(f"{source}: key 'model.driver_sets[{i}]' makes every channel a driver; at least one "
                              "must be a response (the channels a normal-behaviour model predicts and alarms on)")
    # each set's metrics are named after its channels (Candidate.label, then _auroc, _clean_alarm_rate or
    # _<fault>_auroc): no two sets may share a metric name, and the longest must fit MLflow's 250 characters
    named: dict[str, tuple[str, ...]] = {}
    keyed = [("source.channels", config.source.driver_names)] + [(f"model.driver_sets[{i}]", d) for i, d in enumerate(m.driver_sets)]
    for key, drivers in keyed:
        label = Candidate("lstm_forecaster_mahalanobis", drivers).label
        metrics = [f"candidate_{label}_{suffix}" for suffix in
                   ("auroc", "clean_alarm_rate", *(f"{fault}_auroc" for fault in STUDY_FAULTS))]
        for metric in metrics:
            other = named.setdefault(metric, drivers)
            if set(other) != set(drivers):
                raise ConfigError(f"{source}: key '{key}' ({list(drivers)}) would be logged under the same MLflow "
                                  f"metric name as {list(other)} ({metric}); rename a channel")
        if max(map(len, metrics)) > 250:
            raise ConfigError(f"{source}: key '{key}' names too many or too long channels for an MLflow metric name "
                              f"of at most 250 characters ({label})")
