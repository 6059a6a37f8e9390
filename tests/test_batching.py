"""Deterministic shuffling and batching: pure functions of (seed, epoch, step)."""

import numpy as np
import pytest

from inna_jax.data import batch_at_step, batch_indices, epoch_permutation, steps_per_epoch


def test_steps_per_epoch_drops_the_remainder():
    assert steps_per_epoch(1348, 32) == 42
    assert steps_per_epoch(64, 64) == 1
    assert steps_per_epoch(10, 3) == 3


@pytest.mark.parametrize("n,b", [(0, 1), (10, 0), (10, 11), (10, -1)])
def test_bad_sizes_raise(n, b):
    with pytest.raises(ValueError, match="must be"):
        steps_per_epoch(n, b)


def test_negative_seed_or_step_raise():
    with pytest.raises(ValueError, match="seed"):
        epoch_permutation(5, seed=-1, epoch=0)
    with pytest.raises(ValueError, match="step"):
        batch_at_step(5, 2, seed=0, step=-1)


def test_batches_are_disjoint_blocks_of_a_permutation():
    idx = batch_indices(103, 10, seed=3, epoch=2)
    assert idx.shape == (10, 10)
    flat = idx.ravel()
    assert len(np.unique(flat)) == 100
    assert flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(flat, epoch_permutation(103, seed=3, epoch=2)[:100])


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = batch_indices(50, 7, seed=11, epoch=4)
    b = batch_indices(50, 7, seed=11, epoch=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, batch_indices(50, 7, seed=12, epoch=4))
    assert not np.array_equal(a, batch_indices(50, 7, seed=11, epoch=5))


def test_batch_at_step_matches_the_epoch_table():
    n, b, seed = 23, 5, 7
    m = steps_per_epoch(n, b)
    for step in range(3 * m):
        epoch, j = divmod(step, m)
        expected = batch_indices(n, b, seed=seed, epoch=epoch)[j]
        np.testing.assert_array_equal(batch_at_step(n, b, seed=seed, step=step), expected)


def test_batches_are_drawn_uniformly():
    # Over E epochs each example falls in the used part of the permutation with probability
    # m*b/n = 0.9, and each position of a batch holds each example with probability 1/n.
    n, b, epochs = 10, 3, 3000
    inclusion = np.zeros(n)
    first = np.zeros(n)
    for e in range(epochs):
        idx = batch_indices(n, b, seed=0, epoch=e)
        inclusion[idx.ravel()] += 1
        first[idx[0, 0]] += 1
    p = 0.9
    sd = np.sqrt(epochs * p * (1 - p))
    assert np.all(np.abs(inclusion - epochs * p) < 5 * sd)
    sd1 = np.sqrt(epochs * 0.1 * 0.9)
    assert np.all(np.abs(first - epochs * 0.1) < 5 * sd1)
