"""The model store (lstmad.io.model_store): the cache is keyed by content and every copy is verified against
the digest recorded in the registry at registration. A truncated, missing or substituted cached file is
fetched again; a store whose own copy is broken or gone is refused in one line naming the version and the
store; a recreated registry whose version 1 is another model is never served the old one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import types

import numpy as np
import pytest
from mlflow import MlflowClient

from lstmad import stages
from lstmad.config import load_config
from lstmad.io import model_store, tracking
from lstmad.layout import Paths
from lstmad.serving.bundle import ModelBundle
from lstmad.training.fitting import windows_of
from tests.conftest import tiny_config_dict, write_config

pytestmark = [pytest.mark.spark]

WEIGHTS = "weights.pt"


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_dir(config, run_id):
    return tracking.local_artifact_dir(config.tracking_uri, run_id) / tracking.MODEL_ARTIFACT


def reference(config, trained, windows, scratch):
    """What the registry holds for a training run, computed here from the artifact store's files: the digest
    of its manifest, its weights' SHA-256 and the scores of a bundle loaded from a copy of the store's folder."""
    store = store_dir(config, trained["run_id"])
    copy = shutil.copytree(store, scratch)
    return types.SimpleNamespace(config=config, run_id=trained["run_id"], version=trained["model_version"],
                                 store=store, digest=sha256(store / model_store.MANIFEST),
                                 weights=sha256(store / WEIGHTS), scores=ModelBundle.load(copy).detector.score(windows))


@pytest.fixture(scope="module")
def models(tmp_path_factory, spark):
    """One tiny pipeline home, two registries: the first's version 1 (seed 1), then the registry recreated (a new
    tracking store, same home and models/ cache) whose version 1 is another model (seed 2)."""
    home = tmp_path_factory.mktemp("model_store")
    raw = tiny_config_dict(home, model={"epochs": 1, "patience": 1, "seed": 1})
    first = load_config(write_config(home / "first.yaml", raw))
    stages.generate(first)
    stages.prepare_training_data(first, spark=spark)
    trained_first = stages.train(first, promote=False)
    raw["model"]["seed"] = 2
    raw["mlflow"] = {**(raw.get("mlflow") or {}), "tracking_uri": f"sqlite:///{home / 'recreated.db'}"}
    second = load_config(write_config(home / "second.yaml", raw))
    trained_second = stages.train(second, promote=False)
    windows = windows_of(first, first.train.eval_start, first.train.eval_end)[1]
    return types.SimpleNamespace(
        models=Paths.of(first).models, windows=windows, conf=home / "first.yaml",
        first=reference(first, trained_first, windows, home / "copy-first"),
        second=reference(second, trained_second, windows, home / "copy-second"))


def load(ref):
    """The version as served: looked up in its registry, then loaded through the cache."""
    config = ref.config
    registered = tracking.registered_version(config.tracking_uri, config.registered_model_name, ref.version)
    return model_store.load_bundle(config, registered)


def cached_weights(models, ref):
    path = models.models / ref.digest / WEIGHTS
    load(ref)  # in the cache and verified before the test breaks it
    assert sha256(path) == ref.weights
    return path


def assert_served(models, ref, bundle):
    """The bundle and the cache hold the registered model: the store's weights, its scores."""
    assert sha256(models.models / ref.digest / WEIGHTS) == ref.weights
    np.testing.assert_array_equal(bundle.detector.score(models.windows), ref.scores)


def test_registration_records_the_digest_of_the_folder_it_logged(models):
    ref = models.first
    registered = tracking.registered_version(ref.config.tracking_uri, ref.config.registered_model_name, ref.version)
    assert registered["digest"] == ref.digest
    assert registered["run_id"] == ref.run_id
    run = MlflowClient(ref.config.tracking_uri).get_run(ref.run_id)
    assert run.data.tags[tracking.CONTENT_DIGEST_TAG] == ref.digest
    # the manifest the digest covers lists every other file of the logged folder with its size and SHA-256
    listed = json.loads((ref.store / model_store.MANIFEST).read_text())["files"]
    files = {p.name: p for p in ref.store.iterdir() if p.name != model_store.MANIFEST}
    assert {"bundle.json", "detector.json", WEIGHTS, "MLmodel"} <= set(files) == set(listed)
    assert listed == {n: {"sha256": sha256(p), "size": p.stat().st_size} for n, p in files.items()}
    # each training put the folder it logged in the cache; v1 links the last one trained (the second registry's)
    for trained in (ref, models.second):
        assert sha256(models.models / trained.digest / WEIGHTS) == trained.weights
    assert os.readlink(models.models / "v1") == models.second.digest


def test_a_truncated_cached_weights_file_is_fetched_again(models, caplog):
    ref = models.first
    weights = cached_weights(models, ref)
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:size // 2])
    with caplog.at_level(logging.WARNING, "lstmad"):
        bundle = load(ref)
    assert f"{WEIGHTS} has {size // 2} bytes, registered {size}" in caplog.text
    assert_served(models, ref, bundle)


def test_b_a_missing_cached_weights_file_is_fetched_again(models, caplog):
    ref = models.first
    cached_weights(models, ref).unlink()
    with caplog.at_level(logging.WARNING, "lstmad"):
        bundle = load(ref)
    assert f"{WEIGHTS} missing" in caplog.text
    assert_served(models, ref, bundle)


def test_c_another_models_valid_weights_in_the_cache_are_caught_by_their_digest(models, caplog, tmp_path):
    ref, other = models.first, models.second
    weights = cached_weights(models, ref)
    # the substitute is a valid weights file of the same size: only its digest tells it apart
    substitute = other.store / WEIGHTS
    assert substitute.stat().st_size == weights.stat().st_size and sha256(substitute) != ref.weights
    shutil.copyfile(substitute, weights)
    swapped = ModelBundle.load(shutil.copytree(weights.parent, tmp_path / "swapped"))
    assert not np.array_equal(swapped.detector.score(models.windows), ref.scores)  # it loads, as another model
    with caplog.at_level(logging.WARNING, "lstmad"):
        bundle = load(ref)
    assert f"{WEIGHTS} sha256 {other.weights[:12]}, registered {ref.weights[:12]}" in caplog.text
    assert_served(models, ref, bundle)


def one_line_refusal(ref, expected: str) -> str:
    with pytest.raises(model_store.ModelStoreError) as caught:
        load(ref)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"model {ref.config.registered_model_name} version {ref.version} " in message
    assert f"(store {ref.store.as_uri()})" in message or f"(store {ref.store}" in message
    assert expected in message
    return message


def no_folder_counts(models, ref):
    assert not (models.models / ref.digest).exists()
    assert not [p.name for p in models.models.iterdir() if p.name.startswith((".download", ".discard"))]


def test_d_weights_broken_in_the_store_itself_are_refused_in_one_line_then_served_once_fixed(models):
    ref = models.first
    store_weights = ref.store / WEIGHTS
    original = store_weights.read_bytes()
    cached_weights(models, ref).write_bytes(original[:100])
    store_weights.write_bytes(original[:100])
    try:
        one_line_refusal(ref, f"{WEIGHTS} has 100 bytes, registered {len(original)}")
        no_folder_counts(models, ref)  # the broken download was not kept
        store_weights.unlink()
        one_line_refusal(ref, f"{WEIGHTS} missing")
        no_folder_counts(models, ref)
    finally:
        store_weights.write_bytes(original)
    assert_served(models, ref, load(ref))  # the store fixed: the next load fetches it


def test_a_model_folder_gone_from_the_store_is_refused_in_one_line(models):
    ref = models.first
    shutil.rmtree(models.models / ref.digest)
    aside = ref.store.with_name("moved-away")
    ref.store.rename(aside)
    try:
        one_line_refusal(ref, "cannot be downloaded")
        no_folder_counts(models, ref)
    finally:
        aside.rename(ref.store)
    assert_served(models, ref, load(ref))


def test_e_a_recreated_registry_is_served_its_own_version_1_not_the_cached_one(models):
    first, second = models.first, models.second
    assert first.version == second.version == "1" and first.run_id != second.run_id
    assert first.digest != second.digest
    load(first)  # the old registry's version 1 cached ...
    shutil.rmtree(models.models / second.digest)  # ... and the new one's not (the training put it there)
    link = models.models / "v1"
    link.unlink()
    shutil.copytree(models.models / first.digest, link)  # as the version-keyed cache had it
    registered = tracking.registered_version(second.config.tracking_uri, second.config.registered_model_name, "1")
    assert (registered["run_id"], registered["digest"]) == (second.run_id, second.digest)
    bundle = model_store.load_bundle(second.config, registered)
    assert_served(models, second, bundle)
    assert not np.array_equal(bundle.detector.score(models.windows), first.scores)
    # readers that name the version (the Spark payload) now get the new model's files
    assert os.readlink(link) == second.digest and sha256(link / WEIGHTS) == second.weights
    assert model_store.folder_of(second.config, registered) == models.models / second.digest
    # and the old registry, asked again, still gets its own
    assert_served(models, first, load(first))
    assert os.readlink(link) == first.digest


def test_a_version_registered_before_digests_loads_and_a_broken_copy_becomes_one_line(models, caplog):
    """No digest tag on the version or its run: cached under its run and store, used while it loads, fetched
    again once when it does not; a store copy that does not load is refused naming the version, never with
    PyTorch's traceback."""
    ref = models.second
    client = MlflowClient(ref.config.tracking_uri)
    name = ref.config.registered_model_name
    store_weights = ref.store / WEIGHTS
    original = store_weights.read_bytes()
    client.delete_model_version_tag(name, ref.version, tracking.CONTENT_DIGEST_TAG)
    try:
        # a version without the tag (registered by hand from the run) takes its run's
        assert tracking.registered_version(ref.config.tracking_uri, name, ref.version)["digest"] == ref.digest
        client.delete_tag(ref.run_id, tracking.CONTENT_DIGEST_TAG)
        registered = tracking.registered_version(ref.config.tracking_uri, name, ref.version)
        assert registered["digest"] is None
        np.testing.assert_array_equal(model_store.load_bundle(ref.config, registered).detector.score(models.windows),
                                      ref.scores)
        legacy = [p for p in models.models.iterdir() if p.name.startswith("legacy-")]
        assert len(legacy) == 1 and sha256(legacy[0] / WEIGHTS) == ref.weights
        (legacy[0] / WEIGHTS).write_bytes(original[:100])
        with caplog.at_level(logging.WARNING, "lstmad"):
            bundle = model_store.load_bundle(ref.config, registered)
        assert "fetching it again" in caplog.text
        np.testing.assert_array_equal(bundle.detector.score(models.windows), ref.scores)
        assert sha256(legacy[0] / WEIGHTS) == ref.weights
        (legacy[0] / WEIGHTS).write_bytes(original[:100])
        store_weights.write_bytes(original[:100])
        with pytest.raises(model_store.ModelStoreError) as caught:
            model_store.load_bundle(ref.config, registered)
        message = str(caught.value)
        assert "\n" not in message and "Traceback" not in message
        assert f"model {name} version {ref.version} " in message and "the store's copy does not load" in message
        assert not legacy[0].exists()
    finally:
        store_weights.write_bytes(original)
        client.set_model_version_tag(name, ref.version, tracking.CONTENT_DIGEST_TAG, ref.digest)
        client.set_tag(ref.run_id, tracking.CONTENT_DIGEST_TAG, ref.digest)
    assert_served(models, ref, load(ref))



def test_a_rerun_after_a_crash_past_registration_records_the_digest_of_what_it_logged_again(models, monkeypatch):
    """The rerun logs the model folder again (its MLmodel is written anew) into the version the crashed attempt
    registered: the version's digest follows what the store now holds, and the version loads."""
    config = load_config(models.conf, {"model.seed": 3})  # other settings: a run (and version) of its own
    client = MlflowClient(config.tracking_uri)
    name = config.registered_model_name

    def crash(*args):
        raise ConnectionError("tracking server went away")

    real = tracking.finish_run
    monkeypatch.setattr(tracking, "finish_run", crash)
    with pytest.raises(ConnectionError):
        stages.train(config, promote=False)
    monkeypatch.setattr(tracking, "finish_run", real)
    crashed = client.search_model_versions(f"name = '{name}' and tags.`{tracking.CONTENT_DIGEST_TAG}` != ''")
    crashed = max(crashed, key=lambda v: int(v.version))
    before = crashed.tags[tracking.CONTENT_DIGEST_TAG]

    rerun = stages.train(config, promote=False)
    assert rerun["resumed"] and rerun["model_version"] == str(crashed.version)
    store = store_dir(config, rerun["run_id"])
    registered = tracking.registered_version(config.tracking_uri, name, crashed.version)
    assert registered["digest"] == sha256(store / model_store.MANIFEST) != before
    assert client.get_run(rerun["run_id"]).data.tags[tracking.CONTENT_DIGEST_TAG] == registered["digest"]
    shutil.rmtree(models.models / registered["digest"])  # served from the store, not from the training's copy
    bundle = model_store.load_bundle(config, registered)
    assert sha256(models.models / registered["digest"] / WEIGHTS) == sha256(store / WEIGHTS)
    assert bundle.detector.score(models.windows).shape == (len(models.windows.label_last),)


def test_a_copy_discarded_by_another_process_while_loading_is_fetched_once_more(models, monkeypatch, caplog):
    """Process A found the cache broken and discarded the folder just as this process (B) had fetched it and
    was loading it: B fetches once more instead of reporting the store's copy as broken."""
    ref = models.first
    shutil.rmtree(models.models / ref.digest)  # not cached: this load fetches
    real_load = ModelBundle.load
    calls = []

    def load_racing_a_discard(folder):
        calls.append(folder)
        if len(calls) == 1:
            shutil.rmtree(folder)  # what A's discard does between B's fetch and B's load
        return real_load(folder)

    monkeypatch.setattr(ModelBundle, "load", staticmethod(load_racing_a_discard))
    with caplog.at_level(logging.WARNING, logger="lstmad"):
        bundle = load(ref)
    assert len(calls) == 2 and "vanished while loading" in caplog.text
    np.testing.assert_allclose(bundle.detector.score(models.windows), ref.scores, rtol=1e-6)
    assert sha256(models.models / ref.digest / WEIGHTS) == ref.weights
