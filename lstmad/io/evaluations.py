"""The model_evaluations Delta table: one row per evaluation of a registered model version on a date range."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from lstmad import names
from lstmad.io import lakehouse


def record_evaluation(lake: Path, model_name: str, version: str, run_id: str, purpose: str, start: dt.date,
                      end: dt.date, metrics: dict, threshold: float) -> str:
    """One model_evaluations row (upserted: the same evaluation recorded again replaces itself); returns its
    evaluation_id, a digest of model, version, purpose and data range."""
    evaluation_id = hashlib.sha1(f"{model_name}|{version}|{purpose}|{start}|{end}".encode()).hexdigest()[:16]
    finite = {k: (float(v) if isinstance(v, (int, float)) and np.isfinite(v) else None) for k, v in metrics.items()}
    row = {"evaluation_id": evaluation_id, "model_name": model_name, names.MODEL_VERSION: str(version),
           "mlflow_run_id": run_id, "purpose": purpose, "data_start": start.isoformat(), "data_end": end.isoformat(),
           "evaluated_at": dt.datetime.now(dt.timezone.utc), "n_points": int(metrics.get("n_points", 0)),
           "n_anomalous": int(metrics.get("n_anomalous", 0)), names.THRESHOLD: float(threshold),
           "metrics": json.dumps(finite, sort_keys=True),
           **{k: finite.get(k) for k in ("auroc", "pr_auc", "f1", "precision", "recall")}}
    lakehouse.upsert(lake, names.MODEL_EVALUATIONS,
                     pa.Table.from_pylist([row], schema=lakehouse.SCHEMAS[names.MODEL_EVALUATIONS]), "evaluation_id")
    return evaluation_id
