"""The demo's fresh start: it clears only a home it made (or the demo pipeline's), never another pipeline's."""

import pytest

from lstmad.config import load_config
from lstmad.demo import DEMO_MARKER, start_afresh
from lstmad.layout import Paths
from tests.conftest import tiny_config_dict, write_config


def test_a_demo_home_is_cleared_and_another_pipelines_home_is_refused(tmp_path):
    config = load_config(write_config(tmp_path / "tiny.yaml", tiny_config_dict(tmp_path / "home")))
    paths = Paths.of(config)
    (paths.lake / "anomaly_scores").mkdir(parents=True)
    (paths.home / "mlflow.db").write_text("x")
    with pytest.raises(FileExistsError, match="holds pipeline 'tiny' data the demo did not make"):
        start_afresh(paths, config.pipeline)
    assert (paths.home / "mlflow.db").exists() and paths.lake.exists()  # untouched
    (paths.home / DEMO_MARKER).write_text("")
    (paths.home / "notes.txt").write_text("mine")  # not something the demo writes: kept
    start_afresh(paths, config.pipeline)
    assert not paths.lake.exists() and not (paths.home / "mlflow.db").exists()
    assert (paths.home / "notes.txt").exists() and (paths.home / DEMO_MARKER).exists()
