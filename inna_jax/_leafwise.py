"""Per-leaf helpers shared by the INNA family: two results per leaf, and the compute dtype."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def is_none(x: Any) -> bool:
    """``is_leaf`` for tree maps that keep ``None`` leaves (frozen or absent parameters)."""
    return x is None


class Pair(NamedTuple):
    """Two per-leaf results, split by :func:`unzip` (a class, so no user pytree matches)."""

    first: Any
    second: Any


def unzip(pairs: Any) -> tuple[Any, Any]:
    """Splits a pytree of :class:`Pair` (or ``None``) leaves into two pytrees."""
    is_pair = lambda x: isinstance(x, Pair)
    first = jax.tree.map(lambda x: None if x is None else x.first, pairs, is_leaf=is_pair)
    second = jax.tree.map(lambda x: None if x is None else x.second, pairs, is_leaf=is_pair)
    return first, second


def compute_dtype(*leaves: jax.Array | np.ndarray) -> jnp.dtype:
    """The standard promotion of the leaves' dtypes (bf16 with f32 gives f32), also when the
    user runs JAX with strict promotion: the casts that follow are explicit."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*(leaf.dtype for leaf in leaves))
