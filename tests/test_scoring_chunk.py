"""The forecaster's chunked scoring (model.scoring_chunk): k consecutive windows from one pass of the network.

Each window's score is checked against the network run on exactly the rows the rule gives it: the rows of its
chunk (the run of consecutive windows cut into k-window pieces from the run's first window) up to the row
predicted, one forward call per predicted row. Windows with no consecutive neighbour score as with k = 1.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from lstmad.detectors import LSTMForecasterDetector
from lstmad.transforms.blocks import Windows

WINDOW, CHUNK = 8, 5


def series(n: int = 400, seed: int = 0) -> np.ndarray:
    """(n, 3) float32: two noisy sines and a channel that follows the first."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = np.sin(t / 7) + 0.1 * rng.normal(size=n)
    b = np.cos(t / 11) + 0.1 * rng.normal(size=n)
    return np.column_stack([a, b, 0.8 * a + 0.1 * rng.normal(size=n)]).astype(np.float32)


def windows_at(values: np.ndarray, starts: np.ndarray) -> Windows:
    starts = np.asarray(starts, dtype=np.int64)
    return Windows(torch.as_tensor(values), starts, WINDOW, starts + WINDOW - 1, np.zeros(starts.size, np.int64),
                   ["a"], np.full(starts.size, -1, np.int8), np.zeros(starts.size, np.int8))


@pytest.fixture(scope="module")
def fitted():
    """A plain forecaster (last row, and mean of the last 3 rows) and a normal-behaviour one (channel 0 drives,
    mean of the last 3 rows), fitted once with chunked scoring."""
    values = series()
    train = windows_at(values, np.arange(0, 300 - WINDOW + 1))
    common = dict(hidden_sizes=(8, 4), epochs=2, batch_size=64, seed=0, device="cpu", frozen_channels=False,
                  scoring_chunk=CHUNK)
    plain = LSTMForecasterDetector(**common).fit(train)
    plain_mean = LSTMForecasterDetector(residual_steps=3, **common).fit(train)
    drivers = LSTMForecasterDetector(drivers=(0,), residual_steps=3, **common).fit(train)
    spread = LSTMForecasterDetector(drivers=(0,), residual_steps=3, error_model="mahalanobis", residual_spread=True,
                                    **common).fit(train)
    return values, {"plain": plain, "plain_mean": plain_mean, "drivers": drivers, "spread": spread}


def reference_scores(detector, values: np.ndarray, starts: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Mean squared residual of each window's last r rows, each row predicted by its own forward call over the
    rows of its chunk up to it; with residual_spread, the fitted error Gaussian's distance of the vector (the
    r residuals' mean, their root mean square)."""
    p = detector.params
    network = detector.network_.eval()
    data = torch.as_tensor(values)
    starts = np.sort(starts)
    run_first = {}
    for i, s in enumerate(starts):
        run_first[s] = run_first[starts[i - 1]] if i and starts[i - 1] == s - 1 else s
    responses = [c for c in range(values.shape[1]) if c not in p.drivers]
    scores = {}
    with torch.no_grad():
        for s in starts:
            first = run_first[s] + (s - run_first[s]) // chunk * chunk  # its chunk's first window
            errors = []
            for row in range(s + WINDOW - p.residual_steps, s + WINDOW):
                if p.drivers:
                    predicted = network(data[first:row + 1, list(p.drivers)][None])[0]
                else:
                    predicted = network(data[first:row][None])[0]
                errors.append(predicted.numpy() - values[row, responses])
            errors = np.asarray(errors, dtype=np.float64)  # (r, R)
            if p.residual_spread:
                vector = np.concatenate([errors.mean(axis=0), np.sqrt((errors ** 2).mean(axis=0))])
                scores[s] = float(detector.error_model_.score(vector[None])[0])
            else:
                scores[s] = float(np.mean(errors.mean(axis=0) ** 2))
    return scores


@pytest.mark.parametrize("kind", ["plain", "plain_mean", "drivers", "spread"])
def test_chunked_scores_are_the_network_over_each_chunks_rows(fitted, kind):
    values, detectors = fitted
    detector = detectors[kind]
    # a run of 13 windows (chunks of 5, 5, 3), a run of 2 and two lone windows, handed over shuffled
    starts = np.concatenate([np.arange(300, 313), [330, 331], [340, 350]])
    shuffled = np.random.default_rng(1).permutation(starts)
    got = detector.score(windows_at(values, shuffled))
    expected = reference_scores(detector, values, starts)
    np.testing.assert_allclose(got, [expected[s] for s in shuffled], rtol=1e-4, atol=1e-7)


def test_the_spread_of_the_residuals_scores_the_same_for_windows_alone(fitted):
    values, detectors = fitted
    alone = copy.copy(detectors["spread"])
    alone.params = dataclasses.replace(alone.params, scoring_chunk=1)
    starts = np.concatenate([np.arange(300, 313), [340]])
    got = alone.score(windows_at(values, starts))
    expected = reference_scores(alone, values, starts, chunk=1)
    np.testing.assert_allclose(got, [expected[s] for s in starts], rtol=1e-4, atol=1e-7)
    # the error vector is 2R long: the mean residuals, then their root mean square (never below |mean|)
    assert alone.error_model_.mean_.shape == (4,)
    shares = alone.channel_shares(windows_at(values, starts))
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    assert np.all(shares[:, 0] == 0)  # the driver


def test_lone_windows_and_chunk_starts_score_as_windows_alone(fitted):
    values, detectors = fitted
    chunked = detectors["plain"]
    alone = copy.copy(chunked)
    alone.params = dataclasses.replace(chunked.params, scoring_chunk=1)
    starts = np.concatenate([np.arange(300, 313), [340, 350]])
    got, exact = chunked.score(windows_at(values, starts)), alone.score(windows_at(values, starts))
    # each chunk's first window (300, 305, 310) and the lone ones see exactly their own rows
    same = np.isin(starts, [300, 305, 310, 340, 350])
    np.testing.assert_allclose(got[same], exact[same], rtol=1e-5)
    # the others see more rows before their own: close, not equal
    assert not np.allclose(got[~same], exact[~same], rtol=1e-7, atol=0)
