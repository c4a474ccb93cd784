"""Figures logged with a training run: the ROC curve and the score timeline of the evaluation range."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def roc_curve_png(labels: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """ROC of scores (n,) against labels (n,) in {0, 1} (−1 unknown, and non-finite scores: left out), with
    its AUROC, as a PNG."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    known = (labels >= 0) & np.isfinite(scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if known.any() and 0 < labels[known].sum() < known.sum():
        fpr, tpr, _ = roc_curve(labels[known], scores[known])
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels[known], scores[known]):.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC", ha="center")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="evaluation range")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def score_timeline_png(timestamps_us: np.ndarray, assets: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                       threshold: float, path: Path, max_assets: int = 4) -> Path:
    """Per asset (up to ``max_assets``): scores over time (n,) with the threshold, the labelled anomalies
    (shaded red) and the detected flags (orange marks), as one PNG."""
    plt = _pyplot()
    shown = sorted(set(assets.tolist()))[:max_assets]
    fig, axes = plt.subplots(len(shown) or 1, 1, figsize=(10, 2.2 * max(len(shown), 1)), sharex=True, squeeze=False)
    for ax, asset in zip(axes[:, 0], shown):
        mine = assets == asset
        order = np.argsort(timestamps_us[mine])
        t = timestamps_us[mine][order].astype("datetime64[us]")
        s, y = scores[mine][order], labels[mine][order]
        ax.plot(t, s, linewidth=0.6, label="score")
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="threshold")
        top = float(np.nanmax(s)) if s.size else 1.0
        ax.fill_between(t, 0, top, where=y == 1, color="red", alpha=0.15, step="mid", label="labelled anomaly")
        flagged = s > threshold
        ax.plot(t[flagged], s[flagged], "|", color="orange", markersize=4, label="flagged")
        ax.set_ylabel(str(asset))
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[0, 0].set_title("evaluation range: scores, threshold, labelled and detected anomalies")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluation_figures(scored, threshold: float, folder: Path) -> None:
    """roc.png and score_timeline.png of an evaluation range's per-timestamp scores (a pyarrow table with
    asset_id, timestamp_us, score, label) into ``folder``."""
    from lstmad import names

    folder.mkdir(parents=True, exist_ok=True)
    labels = scored.column(names.LABEL).to_numpy(zero_copy_only=False)
    scores = scored.column(names.SCORE).to_numpy()
    roc_curve_png(labels, scores, folder / "roc.png")
    score_timeline_png(scored.column("timestamp_us").to_numpy(), np.asarray(scored.column(names.ASSET).to_pylist()),
                       scores, labels, threshold, folder / "score_timeline.png")
