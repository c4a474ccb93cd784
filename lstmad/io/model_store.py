"""Registered models as ModelBundles: resolved in the MLflow registry (champion alias or a chosen version)
and cached under the pipeline's models/ folder by content.

A model folder is sealed before it is logged (``seal``): a manifest (``MANIFEST``: every file's relative path,
size and SHA-256) is written into it, and the manifest's own SHA-256, the content digest, is recorded on the
training run and on the registered version (tracking.CONTENT_DIGEST_TAG). The cache holds
``models/<content digest>/``, and a folder is used only when every file verifies against the digest read from
the registry: a cached copy with a truncated, missing or substituted file is fetched again, a store whose own
copy does not verify (or cannot be reached) is refused in one line naming the version and the store, and a
recreated registry whose version 1 is another model never gets the old one. A download lands in a temporary
folder and is renamed into place only once verified, so one that fails half-way leaves nothing that counts.

``models/v<version>`` is a link to the content folder the version was last loaded (or trained) with, for
readers that name a version; nothing here trusts it. Versions registered before digests existed carry none:
they are cached under their run and store location, used when they load, fetched again once when they do not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Optional

from lstmad.config import PipelineConfig
from lstmad.io import tracking
from lstmad.layout import Paths

log = logging.getLogger("lstmad")

MANIFEST = "lstmad-manifest.json"


class ModelStoreError(ValueError):
    """A registered model that cannot be served: its store cannot be reached, its copy there does not verify
    against the digest registered with it, or it does not load. One line naming the version and the store."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_of(folder: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "size"}} of every file under ``folder`` but the manifest itself."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST}


def _manifest_bytes(files: dict[str, dict]) -> bytes:
    return json.dumps({"files": files}, sort_keys=True, separators=(",", ":")).encode()


def seal(folder: Path) -> str:
    """Write the manifest of a model folder into it; its content digest (the manifest's SHA-256), to record in
    the registry before the folder is logged."""
    data = _manifest_bytes(manifest_of(folder))
    (Path(folder) / MANIFEST).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def verify(folder: Path, digest: str) -> Optional[str]:
    """None when every file of ``folder`` is the one sealed under ``digest``; else what is wrong, per file
    (missing, size, sha256). Files beyond the manifest are ignored: nothing loads them."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} missing"
    if (got := _sha256(manifest)) != digest:
        return f"{MANIFEST} sha256 {got[:12]}, registered {digest[:12]}"
    problems = []
    for name, want in sorted(json.loads(manifest.read_bytes())["files"].items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif (size := path.stat().st_size) != want["size"]:
            problems.append(f"{name} has {size} bytes, registered {want['size']}")
        elif (got := _sha256(path)) != want["sha256"]:
            problems.append(f"{name} sha256 {got[:12]}, registered {want['sha256'][:12]}")
    return "; ".join(problems) or None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _where(config: PipelineConfig, registered: dict) -> str:
    return f"model {config.registered_model_name} version {registered['version']} (store {registered['source']})"


def _resolved(config: PipelineConfig, registered: dict) -> dict:
    """``registered`` with its source and digest, looked up in the registry when the caller named only the
    version (and perhaps the run)."""
    if registered.get("source") and "digest" in registered:
        return registered
    return tracking.registered_version(config.tracking_uri, config.registered_model_name, registered["version"])


def _cache_key(registered: dict) -> str:
    if registered.get("digest"):
        return registered["digest"]
    # registered before digests: the run and its store location, never the version number alone
    origin = f"{registered.get('run_id')}\0{registered['source']}".encode()
    return "legacy-" + hashlib.sha256(origin).hexdigest()[:16]


def _discard(folder: Path) -> None:
    """Remove a cache folder; renamed aside first, so that no reader ever sees it half-deleted."""
    aside = folder.with_name(f".discard-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _link(models: Path, version: str, folder: Path) -> None:
    """Point models/v<version> at the version's content folder (atomically; a folder of the version-keyed
    layout in its place is removed)."""
    link = models / f"v{version}"
    try:
        if link.is_symlink() and os.readlink(link) == folder.name:
            return
        staged = models / f".v{version}-{uuid.uuid4().hex[:8]}"
        os.symlink(folder.name, staged, target_is_directory=True)
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        os.replace(staged, link)
    except OSError as error:
        log.warning("model store: could not link %s to %s: %s", link, folder.name, error)


def _open(folder: Path, where: str, what: str):
    """The bundle in ``folder``; anything but a model mismatch becomes a ModelStoreError naming ``where``."""
    from lstmad.serving.bundle import ModelBundle, ModelMismatchError

    try:
        return ModelBundle.load(folder)
    except ModelMismatchError:
        raise
    except Exception as error:  # noqa: BLE001 - torch, json, the detector's own checks: one line, never a trace
        raise ModelStoreError(f"{where}: {what} does not load ({_one_line(error)})") from None


def _fetch(config: PipelineConfig, registered: dict, folder: Path) -> None:
    """Download the version into a temporary folder, verify it, rename it to ``folder``."""
    where, digest = _where(config, registered), registered.get("digest")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        try:
            downloaded = tracking.download_model(config.tracking_uri, registered["source"], scratch)
        except Exception as error:  # noqa: BLE001 - unreachable store, missing artifact: one line
            raise ModelStoreError(f"{where}: cannot be downloaded ({_one_line(error)})") from None
        if digest and (problem := verify(downloaded, digest)):
            raise ModelStoreError(f"{where}: the store's copy does not verify against content digest "
                                  f"{digest[:12]} registered with it: {problem}; restore the artifact store or "
                                  "register a new version")
        try:
            os.rename(downloaded, folder)
        except OSError:
            if not folder.is_dir():  # else another process put the same content there first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load_bundle(config: PipelineConfig, registered: dict):
    """The registered model version as a ModelBundle, from the content-keyed cache when the copy there
    verifies, else downloaded (and verified) once. ModelStoreError, one line naming the version and the store,
    when neither gives a model that verifies and loads."""
    registered = _resolved(config, registered)
    models = Paths.of(config).models
    folder = models / _cache_key(registered)
    where, digest = _where(config, registered), registered.get("digest")
    bundle = None
    if folder.is_dir():
        problem = verify(folder, digest) if digest else None
        if problem:
            log.warning("%s: cached copy %s does not verify (%s): fetching it again", where, folder, problem)
            _discard(folder)
        elif digest:
            bundle = _open(folder, where, f"cached copy {folder}, which verifies,")
        else:
            try:
                bundle = _open(folder, where, f"cached copy {folder}")
            except ModelStoreError as error:
                log.warning("%s: fetching it again", error)
                _discard(folder)
    if bundle is None:
        bundle = _fetched(config, registered, folder, where)
    _link(models, registered["version"], folder)
    return bundle


def _fetched(config: PipelineConfig, registered: dict, folder: Path, where: str):
    """Fetch the version into ``folder`` and open it. A copy that vanished between the two (another process
    that found the cache broken discarded it just then) is fetched once more; one that does not load is
    discarded, so that a store fixed later is fetched again, and refused."""
    for attempt in (1, 2):
        _fetch(config, registered, folder)
        try:
            return _open(folder, where, "the store's copy")
        except ModelStoreError:
            if attempt == 1 and not (folder / MANIFEST).exists():
                log.warning("%s: the copy in %s vanished while loading (another process replaced it): fetching "
                            "it once more", where, folder)
                continue
            _discard(folder)
            raise


def folder_of(config: PipelineConfig, registered: dict) -> Path:
    """The cache folder load_bundle serves ``registered`` (as it returned it) from: for readers of the model's
    files, such as the Spark payload, instead of the models/v<version> link."""
    return Paths.of(config).models / _cache_key(_resolved(config, registered))


def cache(config: PipelineConfig, version: str, model_dir: Path, digest: str) -> Path:
    """Move a sealed model folder just registered as ``version`` into the cache (what loading it would
    download); returns its cache folder."""
    models = Paths.of(config).models
    folder = models / digest
    try:
        os.rename(model_dir, folder)
    except OSError:
        if not folder.is_dir():
            raise
        shutil.rmtree(model_dir)  # registered and cached by an attempt that crashed after it
    _link(models, version, folder)
    return folder


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
