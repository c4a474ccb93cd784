"""Registered models as ModelBundles: resolved in the MLflow registry (champion alias or a chosen version)
and cached under the pipeline's models/ folder, downloaded once."""

from __future__ import annotations

import shutil

from lstmad.config import PipelineConfig
from lstmad.io import tracking
from lstmad.layout import Paths


def load_bundle(config: PipelineConfig, registered: dict):
    """The registered model version as a ModelBundle, from the local cache or downloaded once."""
    from lstmad.serving.bundle import ModelBundle

    folder = Paths.of(config).models / f"v{registered['version']}"
    if not (folder / "bundle.json").exists():
        tmp = folder.with_name(folder.name + ".download")
        shutil.rmtree(tmp, ignore_errors=True)
        downloaded = tracking.download_model(config.tracking_uri, registered["source"], tmp)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(str(downloaded), str(folder))
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelBundle.load(folder)


def version_bundle(config: PipelineConfig, version: str):
    """(registered, bundle) of one registered version, as champion_bundle gives the champion's: to re-score
    with a chosen model (a comparison before a promotion, or a roll-back)."""
    registered = tracking.registered_version(config.tracking_uri, config.registered_model_name, version)
    return registered, load_bundle(config, registered)


def champion_bundle(config: PipelineConfig):
    """(registered, bundle) of the champion; NoChampionError naming the registry when there is none."""
    current = tracking.champion(config.tracking_uri, config.registered_model_name)
    if current is None:
        raise tracking.NoChampionError(f"model registry {config.tracking_uri} has no '{tracking.CHAMPION}' for "
                                       f"{config.registered_model_name}: run lstmad train first")
    return current, load_bundle(config, current)
