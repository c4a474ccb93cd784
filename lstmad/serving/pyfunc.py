"""The model folder as MLflow's pyfunc sees it: mlflow.pyfunc.load_model("models:/<name>@champion") calls
``_load_pyfunc`` here (the MLmodel file that tracking.write_mlflow_model puts beside the weights names this
module as its loader), and ``predict`` scores windows outside the pipeline, e.g. in a notebook or a service.

No mlflow import here: the pyfunc flavour only needs a module with ``_load_pyfunc``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from lstmad.serving.bundle import ModelBundle
from lstmad.transforms.blocks import Windows

log = logging.getLogger("lstmad")


class WindowScorer:
    """predict((N, W, C) windows in source units, params={"asset": name}) → (N,) float64 anomaly scores.
    C counts the model's channels (``bundle.channels``): a circular channel (an angle with a ``period``) as two,
    the sine and the cosine of its phase (lstmad.transforms.circular.to_tensor_values).

    Windows are normalised with the model's statistics (an asset's own under per-asset statistics; the
    global ones for an asset the statistics never saw) and scored as the pipeline scores them: a window's
    score belongs to its last timestamp, flagged when it exceeds ``threshold``.
    """

    def __init__(self, bundle: ModelBundle):
        self.bundle = bundle
        self.threshold = bundle.threshold

    def predict(self, model_input, params: Optional[dict] = None) -> np.ndarray:
        bundle = self.bundle
        if isinstance(model_input, dict):  # MLflow hands named tensor inputs over as {name: array}
            model_input = model_input["windows"]
        windows = np.asarray(model_input, dtype=np.float64)
        expected = (bundle.window, len(bundle.channels))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ValueError(f"model input must be windows of shape (N, {expected[0]}, {expected[1]}) over channels "
                             f"{list(bundle.channels)}; got shape {windows.shape}")
        if not np.isfinite(windows).all():
            # the pipeline fills gaps and skips mostly filled-in windows before scoring; a NaN here would
            # come out as a NaN score
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(windows))[:, 0]})
            raise ValueError(f"model input has non-finite values in windows {bad[:10]}"
                             f"{' ...' if len(bad) > 10 else ''}: fill gaps first, as lstmad prepare does")
        n, w, c = windows.shape
        asset = (params or {}).get("asset") or None
        normalised = bundle.stats.apply(windows.reshape(n * w, c), asset).reshape(n, w, c)
        if not n:
            return np.zeros(0)
        if bundle.asset_score_scales and asset not in bundle.asset_score_scales:
            log.warning("this model has per-asset thresholds (threshold.per_asset) and asset %r has none: scored on "
                        "the fleet's scale (pass params={'asset': name} for an asset's own)", asset)
        # on the threshold's scale: the asset's own where the model calibrated one per asset
        scored = dataclasses.replace(Windows.from_array(normalised), assets=[asset or "array"])
        return bundle.on_threshold_scale(bundle.detector.score(scored), scored)


def _load_pyfunc(data_path: str) -> WindowScorer:
    """MLflow's pyfunc loader hook: ``data_path`` is the downloaded model folder."""
    return WindowScorer(ModelBundle.load(Path(data_path)))
