"""A uniform experience-replay buffer held in device arrays: a ring of fixed capacity.

The buffer is a pytree (a ``NamedTuple`` of arrays), so it lives inside jitted and vmapped
training loops: adding writes ``n`` rows at ``(position + arange(n)) mod capacity`` and
sampling draws indices uniformly from the ``size`` rows filled so far (Lin 1992; Mnih et al.
2015).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ReplayBuffer(NamedTuple):
    """A ring buffer of transitions.

    Attributes:
        data: a pytree of arrays, each with a leading axis of length ``capacity``.
        position: the row that the next transition is written to (int32 scalar).
        size: the number of filled rows, at most ``capacity`` (int32 scalar).
    """

    data: Any
    position: jax.Array
    size: jax.Array


def replay_init(example: Any, capacity: int) -> ReplayBuffer:
    """An empty buffer for transitions shaped like ``example`` (one transition, no batch axis).

    Args:
        example: a pytree of arrays, one transition (e.g. ``{"obs": ..., "action": ...}``).
        capacity: the number of transitions kept, >= 1.

    Returns:
        A :class:`ReplayBuffer` of zeros, position 0 and size 0.

    Raises:
        ValueError: for a capacity below 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> buffer = rl.replay_init({"obs": jnp.zeros(3), "reward": jnp.zeros(())}, 100)
        >>> buffer.data["obs"].shape, int(buffer.size)
        ((100, 3), 0)

    References:
        Lin, "Self-improving reactive agents based on reinforcement learning, planning and
        teaching", Machine Learning 8 (1992), section 4 (experience replay).
    """
    if int(capacity) != capacity or capacity < 1:
        raise ValueError(f"capacity must be an integer >= 1, got capacity={capacity!r}")
    data = jax.tree.map(
        lambda x: jnp.zeros((int(capacity), *jnp.shape(x)), jnp.asarray(x).dtype), example
    )
    zero = jnp.zeros((), jnp.int32)
    return ReplayBuffer(data, zero, zero)


def replay_add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
    """Writes a batch of ``n <= capacity`` transitions, overwriting the oldest ones.

    Row ``(position + i) mod capacity`` receives transition ``i``; then
    ``position <- (position + n) mod capacity`` and ``size <- min(size + n, capacity)``.

    Args:
        buffer: a :class:`ReplayBuffer`.
        batch: a pytree like the buffer's ``data`` with a leading axis of length ``n``.

    Returns:
        The updated buffer.

    Raises:
        ValueError: when ``n`` exceeds the capacity.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> buffer = rl.replay_init(jnp.zeros(()), 3)
        >>> buffer = rl.replay_add(buffer, jnp.array([1.0, 2.0]))
        >>> buffer = rl.replay_add(buffer, jnp.array([3.0, 4.0]))
        >>> buffer.data, int(buffer.position), int(buffer.size)
        (Array([4., 2., 3.], dtype=float32), 1, 3)

    References:
        Lin (1992), section 4 (see :func:`replay_init`).
    """
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    n = jax.tree.leaves(batch)[0].shape[0]
    if n > capacity:
        raise ValueError(f"cannot add {n} transitions to a buffer of capacity {capacity}")
    rows = (buffer.position + jnp.arange(n, dtype=jnp.int32)) % capacity
    data = jax.tree.map(lambda d, x: d.at[rows].set(x.astype(d.dtype)), buffer.data, batch)
    return ReplayBuffer(
        data, (buffer.position + n) % capacity, jnp.minimum(buffer.size + n, capacity)
    )


def replay_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
    """Draws ``batch_size`` transitions uniformly, with replacement, from the filled rows.

    Args:
        buffer: a :class:`ReplayBuffer` with ``size >= 1``.
        key: a JAX random key.
        batch_size: the number of transitions.

    Returns:
        A pytree like ``buffer.data`` with a leading axis of length ``batch_size``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax import rl
        >>> buffer = rl.replay_add(rl.replay_init(jnp.zeros(()), 10), jnp.array([5.0, 6.0]))
        >>> sample = rl.replay_sample(buffer, jax.random.key(0), 4)
        >>> bool(jnp.all((sample == 5.0) | (sample == 6.0)))
        True

    References:
        Mnih et al., "Human-level control through deep reinforcement learning", Nature 518
        (2015), Methods (uniform sampling from the replay memory).
    """
    rows = jax.random.randint(key, (int(batch_size),), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[rows], buffer.data)
