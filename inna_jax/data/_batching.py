r"""Deterministic shuffling and batching: the batch order is a pure function of the seed.

Each epoch :math:`e` draws a uniformly random permutation :math:`\sigma_e` of the
:math:`n` training examples from a generator seeded by the pair ``(seed, e)``, and cuts it
into :math:`\lfloor n / b \rfloor` batches of :math:`b` examples; the last
:math:`n \bmod b` examples of the permutation are left out of that epoch. So every batch is a
uniformly drawn subset of size :math:`b`, no example appears twice in an epoch, and the
batch of global step :math:`k` is

.. math::

    B_k = \sigma_e[\,j b : (j + 1) b\,], \qquad e = \lfloor k / m \rfloor,\quad
    j = k \bmod m,\quad m = \lfloor n / b \rfloor.

It depends on ``(seed, e, j)`` only: not on the device count (each device takes a slice of
:math:`B_k`), not on the host, and not on whether the run was interrupted and resumed.
"""

from __future__ import annotations

import numpy as np


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    r"""Number of full batches in one epoch, :math:`\lfloor n / b \rfloor`.

    Args:
        num_examples: size :math:`n` of the training set.
        batch_size: global batch size :math:`b`, with :math:`1 \le b \le n`.

    Returns:
        The number of optimizer steps per epoch.

    Raises:
        ValueError: if ``batch_size`` is not in ``[1, num_examples]``.

    Example:
        >>> from inna_jax.data import steps_per_epoch
        >>> steps_per_epoch(1348, 32)
        42
    """
    if int(num_examples) < 1:
        raise ValueError(f"num_examples must be >= 1, got num_examples={num_examples!r}")
    if not 1 <= int(batch_size) <= int(num_examples):
        raise ValueError(
            f"batch_size must be an integer in [1, num_examples={num_examples}], "
            f"got batch_size={batch_size!r}"
        )
    return int(num_examples) // int(batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    r"""The permutation :math:`\sigma_e` of epoch ``epoch``, seeded by ``(seed, epoch)``.

    NumPy's ``default_rng`` (PCG64 behind a ``SeedSequence`` of the pair) is used, so the
    order is reproducible across runs, hosts and device counts.

    Args:
        num_examples: size :math:`n` of the training set.
        seed: a non-negative integer seed.
        epoch: a non-negative epoch index.

    Returns:
        An ``int64`` array holding a permutation of ``range(num_examples)``.

    Example:
        >>> from inna_jax.data import epoch_permutation
        >>> epoch_permutation(6, seed=0, epoch=0).tolist() == sorted(
        ...     epoch_permutation(6, seed=0, epoch=0).tolist()
        ... )
        False
        >>> sorted(epoch_permutation(6, seed=0, epoch=1).tolist())
        [0, 1, 2, 3, 4, 5]
    """
    if int(seed) < 0 or int(epoch) < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed!r}, epoch={epoch!r}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(int(num_examples))


def batch_indices(num_examples: int, batch_size: int, *, seed: int, epoch: int) -> np.ndarray:
    r"""Indices of every batch of one epoch, shape ``(steps_per_epoch, batch_size)``.

    Row :math:`j` is the batch :math:`B_{e m + j}` of the module docstring: the
    :math:`j`-th block of :math:`b` entries of :func:`epoch_permutation`.

    Args:
        num_examples: size :math:`n` of the training set.
        batch_size: global batch size :math:`b`.
        seed: a non-negative integer seed.
        epoch: a non-negative epoch index.

    Returns:
        An ``int64`` array of shape ``(n // b, b)``; no index repeats.

    Example:
        >>> from inna_jax.data import batch_indices
        >>> idx = batch_indices(10, 3, seed=0, epoch=0)
        >>> idx.shape, len(set(idx.ravel().tolist()))
        ((3, 3), 9)
    """
    m = steps_per_epoch(num_examples, batch_size)
    perm = epoch_permutation(num_examples, seed=seed, epoch=epoch)
    return perm[: m * int(batch_size)].reshape(m, int(batch_size))


def batch_at_step(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    r"""Indices of the batch :math:`B_k` used at global step ``step`` (counted from 0).

    Args:
        num_examples: size :math:`n` of the training set.
        batch_size: global batch size :math:`b`.
        seed: a non-negative integer seed.
        step: global step :math:`k \ge 0`, counted across epochs.

    Returns:
        An ``int64`` array of shape ``(batch_size,)``.

    Example:
        >>> import numpy as np
        >>> from inna_jax.data import batch_at_step, batch_indices
        >>> bool(np.array_equal(batch_at_step(10, 3, seed=1, step=4),
        ...                     batch_indices(10, 3, seed=1, epoch=1)[1]))
        True
    """
    if int(step) < 0:
        raise ValueError(f"step must be >= 0, got step={step!r}")
    m = steps_per_epoch(num_examples, batch_size)
    epoch, j = divmod(int(step), m)
    perm = epoch_permutation(num_examples, seed=seed, epoch=epoch)
    return perm[j * int(batch_size) : (j + 1) * int(batch_size)]
