"""Table and column names, defined once for the whole pipeline."""

# Tables under <pipeline home>/lake
QUARANTINE = "quarantine"
ANOMALY_SCORES = "anomaly_scores"
ANOMALY_INTERVALS = "anomaly_intervals"
DRIFT_METRICS = "drift_metrics"
MODEL_EVALUATIONS = "model_evaluations"
DELTA_TABLES = (QUARANTINE, ANOMALY_SCORES, ANOMALY_INTERVALS, DRIFT_METRICS, MODEL_EVALUATIONS)

# Tensor-block table (Parquet, partitioned by date) and its metadata folder
TENSOR_BLOCKS = "tensor_blocks"
STATS_DIR = "_stats"

# Columns of the cleaned long series (inside prepare) and of the tensor blocks
ASSET = "asset_id"
TIMESTAMP = "timestamp"
LABEL = "label"
DATE = "date"
SEGMENT = "segment_id"
BLOCK_START = "block_start"
STEP_S = "step_s"
N_ROWS = "n_rows"
N_CHANNELS = "n_channels"
N_HISTORY = "n_history"
VALUES = "values"
MASK = "mask"
LABELS = "labels"
STATES = "states"  # int8 per row in tensor blocks: 0 normal operation, k the k-th configured operating state
STATE = "state"
OPERATING_STATE = "operating_state"
STATS_ID = "stats_id"

# Columns of the result tables
SCORE = "score"
THRESHOLD = "threshold"
FLAG = "flag"
SCORED_DATE = "scored_date"
MODEL_VERSION = "model_version"
REASON = "reason"
CHANNEL_SHARES = "channel_shares"
SOURCE_VERSION = "source_version"
