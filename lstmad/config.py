"""Typed pipeline configuration, validated when loaded from YAML.

Every key of a pipeline file maps onto a dataclass field below; an unknown key or a value of the wrong type
fails at load with a message naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from lstmad.config_typing import ConfigError, build  # noqa: F401 (ConfigError: its public home)
from lstmad.training.params import TrainingParams
from lstmad.transforms import circular


def data_dir() -> Path:
    """The shared real data sets: $LSTMAD_DATA_DIR, else ../shared/datasets beside the repository."""
    configured = os.environ.get("LSTMAD_DATA_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclasses.dataclass(frozen=True)
class FarmSpec:
    """The synthetic wind farm to generate (lstmad.data.synthetic): farm size, time axis and seed."""

    turbines: int = 4
    days: int = 30
    step_s: int = 60
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 7
    icing_episodes_per_turbine: float = 1.5
    # A regime change from day ``change_day`` on (0: none): the ``recalibrated_channels`` read
    # ``recalibration_offset_sd`` of their earlier standard deviation higher (a sensor recalibration), and
    # the ambient temperature is ``ambient_shift_c`` warmer (a season turning; every temperature follows).
    change_day: int = 0
    recalibrated_channels: tuple[str, ...] = ()
    recalibration_offset_sd: float = 0.0
    ambient_shift_c: float = 0.0


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    """One sensor channel of the source: its column, unit, physical range, sentinel values and role.

    A value outside [minimum, maximum] or equal to a sentinel is a value-level fault: it is masked (and
    recorded in the quarantine table), the rest of its row is kept. In YAML a bare string is the name alone.
    ``role``: ``driver`` (wind speed, ambient temperature, set-points: what the asset responds to) or
    ``response`` (power, temperatures, pitch, vibration). With drivers, the LSTM forecaster becomes a
    normal-behaviour model: responses predicted from drivers, alarms on their residuals.
    ``period``: the channel is an angle that wraps every ``period`` units (360 for degrees: wind direction,
    nacelle yaw, vane position); it enters the model as the sine and cosine of its phase, two tensor
    channels ``<name>:sin`` and ``<name>:cos`` (lstmad.transforms.circular). Range checks apply to the value
    as the source has it.
    """

    name: str
    unit: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    sentinels: tuple[float, ...] = ()
    role: str = "response"
    period: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where the raw table is (CSV, Parquet or Delta, wide format) and which of its columns mean what.

    ``path`` is a landing folder partitioned by ``partition_column`` (``date=YYYY-MM-DD``; read by partition
    pruning) or, with ``partition_column: null``, one file/folder/table filtered on the timestamp.
    ``timestamp_format`` is a Spark datetime pattern for string timestamps (empty: ISO-8601, offsets honoured)
    or ``epoch_s``, ``epoch_ms``, ``epoch_us``, ``epoch_ns`` for numbers since 1970-01-01 UTC; ``timezone`` is
    the zone of timestamps that carry no offset. ``asset_constant`` names the asset of a single-asset source
    that has no asset column. CSV only: ``csv_encoding`` (a UTF-8 byte-order mark is always skipped) and
    ``decimal_separator`` ("," for exports that write 12,5).
    ``label_values`` maps the label column's values to 0 (normal) or 1 (anomalous), e.g. {normal: 0,
    icing: 1}; empty: the labels must be the numbers 0 and 1. Any other value is counted
    (``labels_not_in_domain``) and becomes unknown (−1).
    """

    path: str = "raw"
    format: str = "parquet"
    csv_delimiter: str = ","
    csv_encoding: str = "utf-8"
    decimal_separator: str = "."
    timestamp_column: str = "timestamp"
    timestamp_format: str = ""
    timezone: str = "UTC"
    asset_column: Optional[str] = None
    asset_constant: str = ""
    label_column: Optional[str] = None
    label_values: dict[str, int] = dataclasses.field(default_factory=dict)
    partition_column: Optional[str] = None
    channels: tuple[ChannelConfig, ...] = ()
    sentinel_tolerance: float = 1e-4  # relative: float32 sources store -273.2 as -273.20001

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @property
    def csv_charset(self) -> Optional[str]:
        """``csv_encoding`` as Spark's CSV reader names it; None for an encoding it cannot read line by line
        (UTF-16/32 would need multi-line parsing: its lines do not end in the byte 0x0A)."""
        import codecs

        try:
            name = codecs.lookup(self.csv_encoding).name
        except LookupError:
            return None
        return {"utf-8": "utf-8", "iso8859-1": "iso-8859-1", "latin-1": "iso-8859-1", "ascii": "us-ascii"}.get(name)

    @property
    def periods(self) -> tuple[Optional[float], ...]:
        """Each channel's period (None: not circular), in channel order."""
        return tuple(c.period for c in self.channels)

    @property
    def tensor_channels(self) -> tuple[str, ...]:
        """The channels of the tensors and models: the source channels, a circular one (``period``) as its
        sine and cosine (lstmad.transforms.circular)."""
        return circular.tensor_names(self.channel_names, self.periods)

    def with_drivers(self, drivers: tuple[str, ...]) -> "SourceConfig":
        """This source with the channels named in ``drivers`` as its drivers and every other as a response."""
        return dataclasses.replace(self, channels=tuple(
            dataclasses.replace(c, role="driver" if c.name in drivers else "response") for c in self.channels))

    @property
    def driver_names(self) -> tuple[str, ...]:
        """The source channels whose role is driver, in channel order."""
        return tuple(c.name for c in self.channels if c.role == "driver")

    @property
    def driver_indices(self) -> tuple[int, ...]:
        """Positions (in tensor channel order) of the tensor channels whose source channel is a driver."""
        return tuple(j for j, i in enumerate(circular.source_index(self.periods)) if self.channels[i].role == "driver")

    @property
    def columns(self) -> list[str]:
        """The source columns the pipeline reads."""
        return [self.timestamp_column, *([self.asset_column] if self.asset_column else []), *self.channel_names,
                *([self.label_column] if self.label_column else [])]


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Regular grid, gap filling, smoothing, normalisation and tensor-block layout.

    Rows are averaged into ``step_s`` buckets; gaps of at most ``max_gap_steps`` missing steps are
    interpolated (and masked), longer gaps end a segment. Windows with more than ``max_masked_share`` of their
    values masked are neither trained nor scored.
    """

    step_s: int = 60
    smoothing_half_width: int = 5
    window: int = 26
    block_rows: int = 4096
    normalisation: str = "zscore"
    normalisation_scope: str = "global"
    max_gap_steps: int = 3
    max_masked_share: float = 0.1


@dataclasses.dataclass(frozen=True)
class ModelConfig(TrainingParams):
    """The detector, its shape, and its training settings (the TrainingParams fields every trained detector
    shares: epochs, batch_size, learning_rate, patience, validation_share, seed, device, lr_schedule,
    precision, compile, pin_memory)."""

    detector: str = "lstm_forecaster"
    variant: str = "iae_lstm_kl_soft"  # iae_lstm_kl only: which model of the paper's tables
    profile: str = "tuned"  # iae_lstm_kl only: tuned (per-sample, chosen on validation farms), small or paper
    error_model: str = "squared"  # lstm_forecaster: squared or mahalanobis
    residual_steps: int = 1  # lstm_forecaster: a window's error is the mean of its last k rows' residuals
    residual_spread: bool = False  # lstm_forecaster, mahalanobis, k ≥ 2: the k residuals' RMS joins their mean
    frozen_channels: Optional[bool] = None  # forecaster, autoencoder: a channel still for too long scores; unset: on
    error_regimes: int = 0  # lstm_forecaster, mahalanobis: ≥ 2 fits one error Gaussian per operating regime
    scoring_chunk: int = 1  # lstm_forecaster: k consecutive windows per pass over their rows (1/13 the work at k=25)
    hidden_sizes: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    max_train_windows: int = 0
    # fit each and keep the winner (lstmad.training.selection.CANDIDATES names): on the labelled evaluation
    # range, else a fault-injection study of the training range; empty: the detector above
    candidates: tuple[str, ...] = ()
    # source channel names: each set is tried as the drivers of every forecaster candidate (of model.detector
    # when candidates is empty), beside the source's own roles; the winner's roles are the model's
    driver_sets: tuple[tuple[str, ...], ...] = ()
    threads: int = 0


# Detectors whose training is one loop of lstmad.training.loop.fit_batches (new_network → batch_loss → adopt), which
# lstmad.training.distributed spreads over processes. IAE-LSTM-KL has two phases with a centre and a radius computed
# between them over all training windows.
DISTRIBUTABLE = ("lstm_forecaster", "lstm_autoencoder")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How training spreads over processes (lstmad.training.distributed); processes 0 trains in the calling process on
    windows held in memory, 1 or more stream per-rank shards of block files (more than 1 through Spark's
    TorchDistributor and DistributedDataParallel)."""

    processes: int = 0
    local_mode: bool = True  # ranks on the driver machine; false: barrier tasks on the executors
    use_gpu: bool = False  # one GPU per rank (nccl); executors need spark.task.resource.gpu.amount
    threads_per_process: int = 0  # torch threads of each rank; 0: PyTorch's default
    shuffle_files: int = 4  # block files a rank reads (and shuffles together) at a time


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Which dates train the model and which labelled dates evaluate it."""

    start: Optional[dt.date] = None
    end: Optional[dt.date] = None
    eval_start: Optional[dt.date] = None
    eval_end: Optional[dt.date] = None
    exclude_labelled_anomalies: bool = True
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    # Retraining on recent data (the training DAG with an end date): the last ``eval_days`` up to that date
    # evaluate, the ``window_days`` before them train; 0 keeps the fixed ranges above.
    window_days: int = 0
    eval_days: int = 0
    # Leave out training windows that end inside a flagged interval at least this severe (0: keep all): the
    # champion's own findings, so that a retrained model does not learn the anomalies as normal.
    exclude_severity: float = 0.0
    # A challenger is promoted when its evaluation AUROC is at most this much below the champion's on the same
    # range; without labels, when its alarm rate there over its expected rate is at most (1 + this) times the
    # champion's ratio.
    promotion_tolerance: float = 0.0
    # Without labels a challenger must also be stable: the two-sample KS between its scores on the evaluation
    # range and its own calibration scores at most this (0: no stability criterion).
    promotion_max_score_ks: float = 0.5


@dataclasses.dataclass(frozen=True)
class ThresholdConfig:
    """How the alarm threshold is calibrated (lstmad.evaluation.calibration) on scores of normal windows the
    model never trained on: its validation windows (scored out of fold where an error model was fitted on
    them), or with ``calibration_share`` > 0 a slice of the latest training windows kept apart from training
    and early stopping altogether, or out-of-fold scores of the whole training range (``cross_fit_folds``), or
    the windows of a later range of normal operation (``calibration_start``..``calibration_end``). ``rule``:
    percentile, mean_std, row_rate (``budget`` = share of normal rows allowed to alarm; conformal quantile), pot
    (the same budget, peaks-over-threshold tail) or alarms_per_week (``budget`` = false intervals per asset per
    week)."""

    rule: str = "percentile"
    percentile: float = 95.0
    budget: float = 0.01
    # 0: the validation windows calibrate (measured on the demo farm: a 10 % slice at the end of 14 days, 1.4
    # days of one weather, gave 13 % false alarms on later normal rows for a 5 % expectation; validation, 4.8 %)
    calibration_share: float = 0.0
    # k ≥ 2: calibrate on out-of-fold scores of the whole training range instead (lstmad.training.cross_fit:
    # k more fits; every season of the range, not its last stretch); 0: off; unset: 5 for the detectors that fit
    # in seconds (pca_t2q, isolation_forest) unless calibration_share is set, else off
    # (measured on the synthetic farm and La Haute Borne: docs/training.md, "Cross-fitted calibration")
    cross_fit_folds: Optional[int] = None
    # a date range of normal operation outside the training and evaluation ranges (later, as a rule) whose
    # windows calibrate instead: a range much shorter than the drift of normal operation is exceeded more often
    # by the months after it than any in-range calibration promises (SKAB: docs/training.md, "A later normal
    # range"); its labelled anomalous windows and those outside normal operation are left out and counted
    calibration_start: Optional[dt.date] = None
    calibration_end: Optional[dt.date] = None
    # true: each asset with at least min_asset_windows calibration windows gets the rule and budget on its own
    # scores (a fleet whose assets differ: a noisier sensor, another make); the others keep the fleet's
    per_asset: bool = False
    min_asset_windows: int = 500
    # rules row_rate and pot: lower the conformal level until a threshold from all asset-days but one holds the
    # budget on the one left out (normal operation that shifts from day to day; measured on SKAB, the synthetic
    # farm and simulated shifts: docs/training.md, "Shifts between days"); false: the budget as the level
    shift_correction: bool = True


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """Scoring batch size and the alarm rules that turn scores into intervals (transforms.intervals)."""

    batch_size: int = 2048
    device: str = "auto"  # auto: the GPU Spark gave the task (spark.task.resource.gpu.amount), else the CPU
    min_interval_s: int = 600
    merge_gap_s: int = 300
    persistence: int = 1          # an interval opens when this many of the last persistence_window steps alarm
    persistence_window: int = 1
    hysteresis: float = 1.0       # an open interval continues above hysteresis × threshold (≤ 1; 1: off)


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the nightly drift check."""

    psi_bins: int = 10
    psi_threshold: float = 0.25
    drifted_channel_share: float = 0.5
    alarm_rate_factor: float = 3.0
    ks_threshold: float = 0.0     # two-sample KS per channel against the training reference (0: not a signal)
    score_ks_threshold: float = 0.0  # KS of the night's scores against the calibration scores (0: not a signal)
    max_age_days: int = 0         # retrain when the champion's training data end this long before the night (0: never)


@dataclasses.dataclass(frozen=True)
class SparkConfig:
    """Spark session settings; only lstmad.spark.session applies them."""

    master: str = "local[2]"
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    conf: dict[str, str] = dataclasses.field(default_factory=dict)
    class_archive: bool = True  # the driver JVM maps Spark's classes from one file (lstmad.spark.class_archive)


@dataclasses.dataclass(frozen=True)
class DeltaConfig:
    """Which engine writes the Delta tables: delta-rs (embedded) or delta-spark (cluster jars)."""

    engine: str = "delta-rs"
    retention_hours: int = 168  # maintenance keeps every file a version of the last week needs (time travel)


@dataclasses.dataclass(frozen=True)
class MlflowConfig:
    """Tracking location and registered model; an empty URI means $LSTMAD_MLFLOW_TRACKING_URI, else a SQLite
    file under the pipeline home."""

    tracking_uri: str = ""
    experiment: str = ""
    registered_model: str = ""


@dataclasses.dataclass(frozen=True)
class AirflowConfig:
    """How the DAG tasks run the jobs: in the worker process or through spark-submit."""

    runner: str = "in_process"
    spark_conn_id: str = "spark_default"
    retries: int = 2
    retry_delay_s: int = 300
    py_files: str = ""  # shipped with every spark-submit besides jobs/_common.py: e.g. the zip of `lstmad package`
    spark_packages: str = ""  # spark-submit --packages, e.g. io.delta:delta-spark_2.13:4.0.0 (delta.engine delta-spark)
    spark_conf: str = ""  # spark-submit --conf pairs, "key=value,key=value"
    execution_timeout_min: int = 180  # a task running longer is failed (and retried)
    training_pool: str = "default_pool"  # an Airflow pool for the training task (e.g. one slot per GPU)
    # lstmad_nightly's schedule: its first logical date (a run scores the day before it; None: two days after
    # train.end, so the first night scored is the first one after the training range, else today in UTC) and
    # whether unpausing creates the runs since then (false: only the latest night)
    start_date: Optional[dt.date] = None
    catchup: bool = False
    # A night whose raw partition has not landed: wait (a sensor in reschedule mode, poking every
    # data_poke_interval_s) up to data_wait_timeout_minutes and then skip it, or skip it at once; either way
    # the night's other tasks are skipped, none fails
    on_missing_data: str = "wait"
    data_wait_timeout_minutes: float = 360.0
    data_poke_interval_s: int = 600


@dataclasses.dataclass(frozen=True)
class OperatingState:
    """Rows outside normal operation (curtailment, idling, downtime, low wind, a status code): ``when`` is a
    Spark SQL condition over the raw source's columns (any column, not only channels), e.g.
    ``status_code IN (3, 4)`` or ``P_avg < 100 AND Ws_avg > 6``. Such rows are left out of training and
    calibration, never alarmed on, counted by prepare and named in anomaly_scores.operating_state; the first
    state whose condition holds wins."""

    name: str
    when: str


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """One pipeline: its source, stages, model and infrastructure switches."""

    pipeline: str
    home: str = ""
    source: SourceConfig = SourceConfig()
    synthetic: FarmSpec = FarmSpec()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    score: ScoreConfig = ScoreConfig()
    drift: DriftConfig = DriftConfig()
    operating_states: tuple[OperatingState, ...] = ()
    # where it runs: the same stages on a laptop or a cluster
    spark: SparkConfig = dataclasses.field(default_factory=SparkConfig)
    delta: DeltaConfig = dataclasses.field(default_factory=DeltaConfig)
    mlflow: MlflowConfig = dataclasses.field(default_factory=MlflowConfig)
    airflow: AirflowConfig = dataclasses.field(default_factory=AirflowConfig)

    @property
    def pipeline_home(self) -> Path:
        """Folder that holds every table, model and run of this pipeline."""
        base = Path(self.home or os.environ.get("LSTMAD_HOME", ".lstmad"))
        return (base / self.pipeline).resolve()

    def resolve(self, path: str) -> Path:
        """A configured path: absolute as given, otherwise relative to the pipeline home."""
        # ${LSTMAD_DATA_DIR} works without the variable set: it defaults to the shared data sets.
        path = path.replace("${LSTMAD_DATA_DIR}", str(data_dir())).replace("$LSTMAD_DATA_DIR", str(data_dir()))
        expanded = Path(os.path.expandvars(path)).expanduser()
        return expanded if expanded.is_absolute() else self.pipeline_home / expanded

    @property
    def registered_model_name(self) -> str:
        return self.mlflow.registered_model or f"lstmad-{self.pipeline}"

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment or f"lstmad-{self.pipeline}"

    @property
    def tracking_uri(self) -> str:
        # Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable, so one pipeline's
        # tracking location would leak into every configuration loaded after it in the same process.
        return (self.mlflow.tracking_uri or os.environ.get("LSTMAD_MLFLOW_TRACKING_URI")
                or f"sqlite:///{self.pipeline_home / 'mlflow.db'}")

    @property
    def artifact_location(self) -> Optional[str]:
        """Where a new experiment keeps artifacts: under the pipeline home for a local SQLite store (not
        ./mlruns of whatever folder the job runs in); a tracking server decides for itself."""
        return (self.pipeline_home / "mlruns").as_uri() if self.tracking_uri.startswith("sqlite:") else None


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> PipelineConfig:
    """Read a pipeline YAML file into a validated PipelineConfig.

    ``overrides`` maps dotted keys (``"synthetic.days"``) to values applied on top of the file, validated
    the same way.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config = build(PipelineConfig, raw, str(path), "", {ChannelConfig: lambda name: ChannelConfig(name=name)})
    from lstmad.config_checks import check_config

    check_config(config, str(path))
    return config
