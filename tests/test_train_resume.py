"""A training killed mid-run (SIGKILL, in its own process) resumes from the checkpoint in its MLflow run's
artifact location and registers the model an uninterrupted run gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from mlflow import MlflowClient

from lstmad import stages
from lstmad.config import load_config
from lstmad.io import tracking
from lstmad.layout import Paths
from lstmad.serving.bundle import ModelBundle
from tests.conftest import REPO, tiny_config_dict, write_config

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, spark):
    home = tmp_path_factory.mktemp("resume")
    raw = tiny_config_dict(home, model={"epochs": 5, "patience": 50, "dropout": 0.2})
    conf = write_config(home / "tiny.yaml", raw)
    config = load_config(conf)
    stages.generate(config)
    stages.prepare_training_data(config, spark=spark)
    return conf, config


def test_a_killed_training_resumes_in_its_mlflow_run_and_ends_with_the_uninterrupted_model(prepared):
    conf, config = prepared
    whole = stages.train(config, promote=False)
    assert not whole["resumed"]
    killer = textwrap.dedent(f"""
        import os, signal
        from lstmad import stages
        from lstmad.config import load_config

        def die(record):
            if record["epoch"] == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: the MLflow run stays RUNNING

        stages.train(load_config({str(conf)!r}), on_epoch=die)
    """)
    killed = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    client = MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(config.experiment_name)
    unfinished = [r for r in client.search_runs([experiment.experiment_id]) if r.info.status == "RUNNING"]
    assert len(unfinished) == 1
    checkpoint = tracking.local_artifact_dir(config.tracking_uri, unfinished[0].info.run_id) / "checkpoints" / "last.pt"
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2

    epochs = []
    resumed = stages.train(config, on_epoch=lambda r: epochs.append(r["epoch"]), promote=False)
    assert resumed["resumed"] and resumed["run_id"] == unfinished[0].info.run_id
    assert epochs == [3, 4, 5]
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert [h["val_loss"] for h in resumed["history"]] == pytest.approx([h["val_loss"] for h in whole["history"]],
                                                                          rel=1e-6)
    paths = Paths.of(config)
    first = ModelBundle.load(paths.models / f"v{whole['model_version']}").detector.network_.state_dict()
    second = ModelBundle.load(paths.models / f"v{resumed['model_version']}").detector.network_.state_dict()
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=1e-6, atol=1e-7)
    # a finished run is never resumed: the next training opens a new run
    again = stages.train(config, promote=False)
    assert not again["resumed"] and again["run_id"] not in (whole["run_id"], resumed["run_id"])


def test_a_crash_after_registration_is_finished_by_the_rerun_without_a_second_version(prepared, monkeypatch):
    conf, config = prepared
    config = load_config(conf, {"model.epochs": 2})  # other settings: a run of its own
    real = tracking.finish_run

    def crash(*args):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(tracking, "finish_run", crash)
    with pytest.raises(ConnectionError):
        stages.train(config, promote=False)
    monkeypatch.setattr(tracking, "finish_run", real)
    client = MlflowClient(config.tracking_uri)
    failed = client.search_runs([client.get_experiment_by_name(config.experiment_name).experiment_id],
                                filter_string="attributes.status = 'FAILED'")
    assert len(failed) == 1
    registered = client.search_model_versions(f"run_id = '{failed[0].info.run_id}'")
    assert len(registered) == 1

    rerun = stages.train(config, promote=False)
    assert rerun["resumed"] and rerun["run_id"] == failed[0].info.run_id
    assert rerun["model_version"] == str(registered[0].version)  # the same version, not a second one
    assert len(client.search_model_versions(f"run_id = '{rerun['run_id']}'")) == 1
    assert client.get_run(rerun["run_id"]).info.status == "FINISHED"


def test_other_channel_roles_make_another_training_so_no_checkpoint_resumes_with_other_inputs(prepared):
    import dataclasses

    from lstmad.training.resume import training_key

    conf, config = prepared
    assert training_key(load_config(conf)) == training_key(config)
    driven = dataclasses.replace(config, source=config.source.with_drivers(("wind_speed",)))
    assert training_key(driven) != training_key(config)
