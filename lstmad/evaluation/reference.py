"""The drift reference a model carries: histograms and quantiles of its training rows per channel, and how
far a single ordinary training day already strays from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from lstmad import names

MAX_REFERENCE_ROWS = 200_000


def drift_reference(tensors: Path, dates: list[str], bins: int) -> dict:
    """Histogram of the training rows per channel, plus each channel's largest PSI of a single training day
    against it (weather channels stray far). Reads one date at a time (twice): the reference from every k-th
    row, at most MAX_REFERENCE_ROWS rows."""
    from lstmad.evaluation.drift import population_stability_index, reference_histogram, reference_quantiles
    from lstmad.io.tensor_store import read_blocks
    from lstmad.transforms.blocks import block_rows_of

    counts = read_blocks(tensors, dates, [names.N_ROWS, names.N_HISTORY])
    total = int(pc.sum(pc.subtract(counts.column(names.N_ROWS), counts.column(names.N_HISTORY))).as_py() or 0)
    stride, seen, sample = max(1, total // MAX_REFERENCE_ROWS), 0, []
    present = sorted(set(counts.column(names.DATE).to_pylist()))
    for day in present:
        rows = block_rows_of(read_blocks(tensors, [day]))
        sample.append(rows[(-seen) % stride::stride])
        seen += rows.shape[0]
    rows = np.concatenate(sample)
    reference = reference_histogram(rows, bins)
    reference["quantiles"] = reference_quantiles(rows)
    daily = [population_stability_index(reference, block_rows_of(read_blocks(tensors, [day]))) for day in present]
    reference["daily_psi_max"] = np.max(daily, axis=0).tolist()
    return reference
