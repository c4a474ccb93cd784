"""Stage promote: give a registered version the champion alias when the gate (lstmad.evaluation.promotion)
finds it not worse than the current champion on the same evaluation range; else the challenger alias."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmad import names
from lstmad.config import PipelineConfig
from lstmad.evaluation.promotion import ScoredModel, on_common_windows, promotion_decision
from lstmad.io import model_store, tracking
from lstmad.io.tensor_store import load_stats
from lstmad.layout import Paths

log = logging.getLogger("lstmad")


def promote_model(config: PipelineConfig, run_id: str, version: str) -> dict:
    """Run the gate for registered ``version`` (trained in MLflow run ``run_id``), set the alias and log the
    decision and its reason on the run."""
    from lstmad.training.fitting import windows_of

    t = config.train
    eval_blocks = windows_of(config, t.eval_start, t.eval_end)[0] if t.eval_start and t.eval_end else None
    new_auroc = tracking.run_metrics(config.tracking_uri, run_id).get("eval_auroc", float("nan"))
    decision = decide(config, new_auroc, eval_blocks, lambda: model_store.version_bundle(config, version)[1])
    alias = tracking.CHAMPION if decision["decision"] == "promoted" else tracking.CHALLENGER
    name = config.registered_model_name
    tracking.set_alias(config.tracking_uri, name, alias, version, decision["reason"])
    tracking.log_promotion(config.tracking_uri, run_id, decision)
    log.info("promote %s v%s: %s (%s)", name, version, decision["decision"], decision["reason"])
    return decision


def decide(config: PipelineConfig, challenger_auroc: float, eval_blocks: Optional[pa.Table],
           challenger: Union[object, Callable[[], object], None]) -> dict:
    """The gate's decision for a challenger (a ModelBundle, or a function loading it) against the registry's
    current champion, both scored on the windows of ``eval_blocks`` that both judge in normal operation
    (on_common_windows). ``challenger_auroc`` (from training) is the challenger's only when no bundle is
    given: the champion is then scored alone."""
    from lstmad.evaluation.metrics import score_metrics
    from lstmad.serving.scoring import score_blocks

    current = tracking.champion(config.tracking_uri, config.registered_model_name)
    if current is None:
        return promotion_decision(challenger_auroc, None, float("nan"), None, 0.0, 0.0)
    if eval_blocks is None or eval_blocks.num_rows == 0:
        return {"decision": "challenger", "reason": "no evaluation data to compare with the champion",
                "champion_auroc": None}
    tensors = Paths.of(config).tensors
    stats = {sid: load_stats(tensors, sid) for sid in set(eval_blocks.column(names.STATS_ID).to_pylist())}

    def scored(bundle) -> pa.Table:
        return score_blocks(bundle, eval_blocks, stats, max_masked_share=config.prepare.max_masked_share)

    def model(bundle, version: str, scores: np.ndarray) -> ScoredModel:
        return ScoredModel(version, scores, bundle.threshold, bundle.expected_alarm_rate, bundle.drift_reference)

    champion_bundle = model_store.load_bundle(config, current)
    champion_table = scored(champion_bundle)
    challenger_bundle = challenger() if callable(challenger) else challenger
    if challenger_bundle is None:  # the champion alone, in its own normal operation
        champion_table = champion_table.filter(pc.equal(champion_table.column(names.STATE), 0))
        labels = champion_table.column(names.LABEL).to_numpy(zero_copy_only=False)
        champion = model(champion_bundle, current["version"], champion_table.column(names.SCORE).to_numpy())
        champion_auroc = score_metrics(labels, champion.scores, champion_bundle.threshold)["auroc"]
        return promotion_decision(challenger_auroc, champion, champion_auroc, None,
                                  config.train.promotion_tolerance, config.train.promotion_max_score_ks)
    # Both scored on the same windows: those both judge in normal operation (models that judge more rows of a
    # window leave fewer). The challenger's AUROC from training was on the windows its own rows left.
    champion_scores, challenger_scores, labels = on_common_windows(champion_table, scored(challenger_bundle))
    if labels.size == 0:
        return {"decision": "challenger", "champion_auroc": None, "windows_compared": 0,
                "reason": f"no evaluation window that both the challenger and champion v{current['version']} "
                          "score in normal operation"}
    champion = model(champion_bundle, current["version"], champion_scores)
    new = model(challenger_bundle, "new", challenger_scores)
    champion_auroc = score_metrics(labels, champion_scores, champion_bundle.threshold)["auroc"]
    common_auroc = score_metrics(labels, challenger_scores, challenger_bundle.threshold)["auroc"]
    decision = promotion_decision(common_auroc, champion, champion_auroc, new, config.train.promotion_tolerance,
                                  config.train.promotion_max_score_ks)
    return {**decision, "reason": f"{decision['reason']} (on the {labels.size} evaluation windows both judge in "
                                  "normal operation)",
            "challenger_auroc": common_auroc, "challenger_training_auroc": challenger_auroc,
            "windows_compared": int(labels.size)}
