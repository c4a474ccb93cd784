"""The one module that imports mlflow: training runs, the model registry and its aliases."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
CHECKPOINT_ARTIFACT = "checkpoints"
RESUME_KEY_TAG = "lstmad.resume_key"
# the SHA-256 of a model folder's manifest (io.model_store.seal), on the training run and the registered version:
# what a downloaded or cached copy must verify against, read from the registry, never from the copy
CONTENT_DIGEST_TAG = "lstmad.content_digest"


class NoChampionError(LookupError):
    """The registry has no model with the champion alias yet."""


def mlflow_client(tracking_uri: str) -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: MlflowClient, experiment: str, artifact_location: Optional[str]) -> str:
    found = client.get_experiment_by_name(experiment)
    return found.experiment_id if found else client.create_experiment(experiment, artifact_location=artifact_location)


def open_training_run(tracking_uri: str, experiment: str, resume_key: str, tags: dict[str, str],
                      artifact_location: Optional[str] = None) -> tuple[str, bool]:
    """The run a training with ``resume_key`` (a digest of everything that shapes the model) logs into: the
    latest earlier run with that key that never finished (killed, failed: its checkpoints continue), else a
    new run. Returns (run_id, resumed)."""
    client = mlflow_client(tracking_uri)
    experiment_id = _experiment_id(client, experiment, artifact_location)
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{RESUME_KEY_TAG}` = '{resume_key}'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if earlier and earlier[0].info.status != "FINISHED":
        return earlier[0].info.run_id, True
    run = client.create_run(experiment_id, tags={**tags, RESUME_KEY_TAG: resume_key})
    return run.info.run_id, False


def local_artifact_dir(tracking_uri: str, run_id: str) -> Optional[Path]:
    """The run's artifact folder when the artifact store is a local (or mounted) path, else None."""
    uri = mlflow_client(tracking_uri).get_run(run_id).info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def fail_run(tracking_uri: str, run_id: str) -> None:
    """Mark a training run that raised as FAILED (it stays resumable); a tracking store that cannot be reached
    must not hide the error that got us here."""
    try:
        mlflow_client(tracking_uri).set_terminated(run_id, status="FAILED")
    except Exception as error:  # noqa: BLE001
        import logging

        logging.getLogger("lstmad").warning("could not mark MLflow run %s FAILED: %s", run_id, error)


def write_mlflow_model(folder: Path, window: int, channels: list[str], metadata: dict) -> None:
    """Make a saved model folder an MLflow model: an MLmodel file with the pyfunc flavour (loader
    lstmad.serving.pyfunc, reading the folder as it is: weights + JSON config, nothing pickled), the input signature
    (N, window, channels) float32 windows → (N,) float64 scores with an optional ``asset`` parameter, and
    ``metadata`` (channel names and order, step, normalisation, threshold) that MLflow shows beside it."""
    import numpy as np
    from mlflow.models import Model
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, window, len(channels)), "windows")]),
        outputs=Schema([TensorSpec(np.dtype(np.float64), (-1,), "score")]),
        params=ParamSchema([ParamSpec("asset", "string", "")]))
    model = Model(signature=signature, metadata={**metadata, "window": window, "channels": list(channels)})
    import mlflow.pyfunc

    mlflow.pyfunc.add_to_model(model, loader_module="lstmad.serving.pyfunc")
    model.save(str(Path(folder) / "MLmodel"))


def log_training_run(tracking_uri: str, run_id: str, params: dict, history: list[dict],
                     metrics: dict[str, float], model_dir: Path, tags: dict[str, str],
                     documents: Optional[dict[str, dict]] = None, checkpoints: Optional[Path] = None,
                     figures: Optional[Path] = None) -> None:
    """Log into training run ``run_id`` (open_training_run), which stays open until finish_run: parameters,
    per-epoch losses, evaluation metrics, JSON documents (file name → content), the model folder, a folder
    of figures (under ``plots/``) and, when they were written outside the artifact store, the checkpoints. A resumed run keeps the parameters it was
    first logged with (MLflow refuses changed values); the others are added.
    """
    import time

    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(tracking_uri)
    logged = client.get_run(run_id).data.params
    now = int(time.time() * 1000)
    batch_params = [Param(k, str(v)[:500]) for k, v in params.items() if k not in logged]
    batch_metrics = [Metric(k, float(record[k]), now, record["epoch"]) for record in history
                     for k in ("train_loss", "val_loss", "learning_rate", "windows", "seconds") if k in record]
    batch_metrics += [Metric(k, float(v), now, 0) for k, v in metrics.items()
                      if isinstance(v, (int, float)) and math.isfinite(v)]
    for lo in range(0, max(len(batch_metrics), len(batch_params), 1), 100):  # MLflow's per-call limits
        client.log_batch(run_id, metrics=batch_metrics[lo:lo + 100], params=batch_params[lo:lo + 100],
                         tags=[RunTag(k, v) for k, v in tags.items()] if lo == 0 else [])
    for file_name, content in (documents or {}).items():
        client.log_dict(run_id, content, file_name)
    client.log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT)
    if figures is not None and figures.is_dir():
        client.log_artifacts(run_id, str(figures), artifact_path="plots")
    if checkpoints is not None and checkpoints.is_dir():
        client.log_artifacts(run_id, str(checkpoints), artifact_path=CHECKPOINT_ARTIFACT)


def finish_run(tracking_uri: str, run_id: str) -> None:
    """End a training run as FINISHED: from now on it is never resumed."""
    mlflow_client(tracking_uri).set_terminated(run_id, status="FINISHED")


def register_model(tracking_uri: str, name: str, run_id: str, digest: Optional[str] = None) -> str:
    """The version of registered model ``name`` that holds the run's model folder: the existing one when the
    run was registered before (a rerun after a crash), else a new one. ``digest`` (the folder's content
    digest) is recorded on the version; a rerun logged the folder again, so its version gets the new one."""
    client = mlflow_client(tracking_uri)
    tags = {CONTENT_DIGEST_TAG: digest} if digest else None
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = str(max(int(v.version) for v in existing))
        if digest:
            client.set_model_version_tag(name, version, CONTENT_DIGEST_TAG, digest)
        return version
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="lstmad anomaly detector (weights + JSON config)")
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    return str(client.create_model_version(name, source=source, run_id=run_id, tags=tags).version)


def set_alias(tracking_uri: str, name: str, alias: str, version: str, reason: str) -> None:
    client = mlflow_client(tracking_uri)
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, f"{alias}_reason", reason[:500])


def _registered(client: MlflowClient, found) -> dict:
    """{"version", "run_id", "source", "digest"} of a model version; the digest from the version's tag, else the
    run's when the version holds the run's model folder (registered by hand from the run), else None
    (registered before digests existed)."""
    digest = (found.tags or {}).get(CONTENT_DIGEST_TAG)
    if not digest and found.run_id:
        try:
            run = client.get_run(found.run_id)
        except MlflowException:
            run = None
        if run is not None and found.source == f"{run.info.artifact_uri}/{MODEL_ARTIFACT}":
            digest = run.data.tags.get(CONTENT_DIGEST_TAG)
    return {"version": str(found.version), "run_id": found.run_id, "source": found.source, "digest": digest or None}


def champion(tracking_uri: str, name: str) -> Optional[dict]:
    """{"version", "run_id", "source", "digest"} of the champion, or None when there is none."""
    client = mlflow_client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return _registered(client, version)


def registered_version(tracking_uri: str, name: str, version: str) -> dict:
    """{"version", "run_id", "source", "digest"} of one registered version; an unknown version is refused
    naming it."""
    client = mlflow_client(tracking_uri)
    try:
        found = client.get_model_version(name, str(version))
    except MlflowException:
        raise NoChampionError(f"model registry {tracking_uri} has no version {version} of {name}") from None
    return _registered(client, found)


def download_model(tracking_uri: str, source: str, destination: Optional[Path] = None) -> Path:
    """Copy a registered model folder to a local directory and return its path."""
    mlflow_client(tracking_uri)
    destination = destination or Path(tempfile.mkdtemp(prefix="lstmad-model-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(destination)))


def run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    return dict(mlflow_client(tracking_uri).get_run(run_id).data.metrics)


def log_promotion(tracking_uri: str, run_id: str, decision: dict) -> None:
    """Record the promotion decision on the training run (tags + a JSON artifact)."""
    client = mlflow_client(tracking_uri)
    client.set_tag(run_id, "promotion", decision["decision"])
    client.set_tag(run_id, "promotion_reason", decision["reason"][:500])
    client.log_text(run_id, json.dumps(decision, indent=2), "promotion.json")


def log_evaluation(tracking_uri: str, experiment: str, run_name: str, params: dict, metrics: dict[str, float],
                   files: list[str], artifact_location: Optional[str] = None) -> str:
    """One MLflow run for an evaluation (a benchmark): parameters, flat metrics and its report files."""
    client = mlflow_client(tracking_uri)
    with mlflow.start_run(experiment_id=_experiment_id(client, experiment, artifact_location),
                          run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and math.isfinite(v)})
        for file in files:
            mlflow.log_artifact(file)
        return run.info.run_id
