"""The promotion gate as a pure function: whether a challenger replaces the champion, from both models'
scores on the same evaluation range, and why."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lstmad import names


@dataclasses.dataclass(frozen=True)
class ScoredModel:
    """One model on the evaluation range: its per-timestamp scores (n,), its threshold, the alarm rate it
    expects (on its calibration scores) and its drift reference (with ``score_quantiles``)."""

    version: str
    scores: np.ndarray
    threshold: float
    expected_alarm_rate: float
    drift_reference: dict

    @property
    def alarm_ratio(self) -> float:
        """Alarm rate on the range over the rate the model expects."""
        return float(np.mean(self.scores > self.threshold)) / max(self.expected_alarm_rate, 1e-9)


def promotion_decision(challenger_auroc: float, champion: Optional[ScoredModel], champion_auroc: float,
                       challenger: Optional[ScoredModel], tolerance: float, max_score_ks: float) -> dict:
    """{"decision": "promoted" | "challenger", "reason", "criterion", ...}.

    Champion when there is none (``champion`` None). Where the range has labels of both classes (both AUROCs
    finite): promoted when the challenger's AUROC is at most ``tolerance`` below the champion's. Otherwise its
    alarm rate over its expected rate must be at most (1 + tolerance) × the champion's ratio (the champion of
    a drifted fleet alarms far more than it expected), and its scores stable: their KS against its own
    calibration scores at most ``max_score_ks`` (0: not checked).
    """
    from lstmad.evaluation.drift import score_ks

    if champion is None:
        return {"decision": "promoted", "reason": "no champion yet", "champion_auroc": None}
    if np.isfinite(challenger_auroc) and np.isfinite(champion_auroc):
        verdict = "promoted" if challenger_auroc >= champion_auroc - tolerance else "challenger"
        sign = ">=" if verdict == "promoted" else "<"
        return {"decision": verdict, "criterion": "auroc", "champion_auroc": champion_auroc,
                "reason": f"eval AUROC {challenger_auroc:.4f} {sign} champion v{champion.version} "
                          f"{champion_auroc:.4f} - tolerance {tolerance}"}
    if challenger is None:
        return {"decision": "challenger", "reason": "no labelled evaluation data and no challenger to compare",
                "champion_auroc": None}
    ratio, champion_ratio = challenger.alarm_ratio, champion.alarm_ratio
    # relative: the tolerance is a share of the champion's ratio, as it is a difference of AUROC above
    calmer = ratio <= champion_ratio * (1 + tolerance)
    new_ks = score_ks(challenger.drift_reference, challenger.scores)
    champion_ks = score_ks(champion.drift_reference, champion.scores)
    no_scores = not np.isfinite(challenger.scores).any()
    stable = max_score_ks <= 0 or (not no_scores and (not np.isfinite(new_ks) or new_ks <= max_score_ks))
    verdict = "promoted" if calmer and stable else "challenger"
    if max_score_ks <= 0:
        stability = ""
    elif no_scores:
        stability = "; no finite scores on the evaluation range: not stable"
    elif not np.isfinite(new_ks):
        stability = "; score stability not checked (the model has no validation score quantiles)"
    else:
        stability = (f"; score KS against the scores it was calibrated on {new_ks:.2f} {'<=' if stable else '>'} "
                     f"{max_score_ks} (champion's {champion_ks:.2f})")
    return {"decision": verdict, "criterion": "alarm_rate", "champion_auroc": None,
            "challenger_alarm_ratio": ratio, "champion_alarm_ratio": champion_ratio,
            "challenger_score_ks": new_ks, "champion_score_ks": champion_ks,
            "reason": f"no labels of both classes: alarm rate / expected {ratio:.2f} "
                      f"{'<=' if calmer else '>'} champion v{champion.version} {champion_ratio:.2f} "
                      f"x (1 + tolerance {tolerance}){stability}"}


def on_common_windows(champion: pa.Table, challenger: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two models' score tables of one range (lstmad.serving.scoring.score_blocks: asset_id, timestamp_us,
    score, label, state) → (champion scores (n,), challenger scores (n,), labels (n,)) at the windows both
    scored and both judge in normal operation, in (asset, timestamp) order.

    Models that judge different rows of a window (lstmad.detectors.base.Detector.judged_rows) leave different
    windows in normal operation: compared on their own, each would be judged on rows the other never sees."""
    keys = [names.ASSET, "timestamp_us"]

    def normal(table: pa.Table, score: str) -> pa.Table:
        table = table.filter(pc.equal(table.column(names.STATE), 0))
        return table.select([*keys, names.SCORE, names.LABEL]).rename_columns([*keys, score, names.LABEL])

    joined = normal(champion, "champion").join(normal(challenger, "challenger").drop_columns([names.LABEL]),
                                               keys, join_type="inner")
    joined = joined.sort_by([(k, "ascending") for k in keys])
    return (joined.column("champion").to_numpy(), joined.column("challenger").to_numpy(),
            joined.column(names.LABEL).to_numpy(zero_copy_only=False))
