"""Checks on hyperparameters that are concrete, skipped silently for traced ones.

Hyperparameters may be traced (under ``optax.inject_hyperparams`` or ``jax.jit``), so a
check can only run when the value is known in Python. No check ever branches on a traced
value.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def concrete_float(value: Any) -> float | None:
    """Returns ``value`` as a Python float if it is a concrete scalar, else ``None``.

    Callables (optax schedules) and traced arrays give ``None``.
    """
    if value is None or callable(value):
        return None
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    if array.ndim != 0:
        raise ValueError(f"expected a scalar hyperparameter, got an array of shape {array.shape}")
    return float(array)


def check_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless a concrete ``value`` is finite and > 0."""
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")


def check_nonnegative(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless a concrete ``value`` is finite and >= 0."""
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
