"""Checks on hyperparameters: types always, values when they are concrete.

Hyperparameters may be traced (under ``optax.inject_hyperparams`` or ``jax.jit``), so a
value check can only run when the value is known in Python; no check ever branches on a
traced value. What is refused at once, traced or not, is a value that is not a real number:
a string (``inna_jax.inna("0.1")``), a bool, a complex number, an object, or an array that
is not 0-d.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

_NUMBER = "a real number (a Python int or float, or a 0-d array)"


def _refuse(name: str | None, value: Any, what: str) -> NoReturn:
    label = f"{name}={value!r}" if name else repr(value)
    raise ValueError(
        f"{name or 'hyperparameter'} must be {what}, got {label} (a {type(value).__name__})"
    )


def concrete_float(value: Any, name: str | None = None) -> float | None:
    """Returns ``value`` as a Python float if it is a concrete real scalar, else ``None``.

    Callables (optax schedules), ``None`` and traced arrays give ``None``: their values are
    not known here. Anything that is not a real number raises at once, traced or not.

    Args:
        value: a hyperparameter.
        name: the argument's name, used in the error message.

    Raises:
        ValueError: for a string, bytes, a bool, a complex number, an object, or an array
            (traced or not) that is not 0-d.
    """
    if value is None or callable(value):
        return None
    if isinstance(value, (str, bytes, bool, np.bool_)):
        _refuse(name, value, _NUMBER)
    if isinstance(value, jax.core.Tracer):
        dtype, shape = value.dtype, value.shape
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            _refuse(name, value, _NUMBER)
        dtype, shape = array.dtype, array.shape
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        # jax's bfloat16 is not a numpy floating subtype; accept every jax float dtype
        if not jax.dtypes.issubdtype(dtype, np.floating):
            _refuse(name, value, _NUMBER)
    if len(shape) != 0:
        label = name or "hyperparameter"
        raise ValueError(f"{label} must be a scalar, got an array of shape {tuple(shape)}")
    if isinstance(value, jax.core.Tracer):
        return None
    return float(array)


def check_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a real number, finite and > 0 when concrete."""
    v = concrete_float(value, name)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")


def check_nonnegative(name: str, value: Any) -> None:
    """Raises ``ValueError`` unless ``value`` is a real number, finite and >= 0 when concrete."""
    v = concrete_float(value, name)
    if v is not None and not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")


def check_in_range(
    name: str, value: Any, low: float, high: float, *, closed_low: bool = True
) -> None:
    """Raises ``ValueError`` unless a concrete ``value`` lies in ``[low, high)`` (or
    ``(low, high)`` with ``closed_low=False``)."""
    v = concrete_float(value, name)
    if v is None:
        return
    above = v >= low if closed_low else v > low
    if not (math.isfinite(v) and above and v < high):
        bracket = "[" if closed_low else "("
        raise ValueError(f"{name} must lie in {bracket}{low:g}, {high:g}), got {name}={value!r}")


def check_schedule_value(name: str, value: Any, count: Any, *, positive: bool = False) -> None:
    """Raises ``ValueError`` when a schedule's value at ``count`` is known and is not a finite
    number >= 0 (> 0 with ``positive``). Inside ``jit`` (a traced count or value) nothing is
    checked."""
    if isinstance(value, jax.core.Tracer) or isinstance(count, jax.core.Tracer):
        return
    k = int(np.asarray(count))
    v = concrete_float(value, f"{name}({k})")
    if v is None:
        return
    if not (math.isfinite(v) and (v > 0 if positive else v >= 0)):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{name} must be a schedule of finite values {bound}, got {name}({k}) = {v!r} "
            "(schedules are checked where their value is known: at init and at updates "
            "outside jit)"
        )


def as_float_arrays(tree: Any, name: str, who: str) -> Any:
    """``tree`` with each leaf as a JAX array (Python scalars in JAX's default dtype, not
    weakly typed, as ``optax.apply_updates`` returns them), ``None`` leaves kept.

    Raises:
        ValueError: for a leaf whose dtype is not floating point (integer, bool, complex),
            naming its key path and dtype.
    """

    def leaf(path: Any, x: Any) -> Any:
        if x is None:
            return None
        a = jnp.asarray(x)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(
                f"{who} takes floating-point parameters only, got {name}"
                f"{jax.tree_util.keystr(path)} of dtype {a.dtype}; cast it "
                "(jnp.asarray(x, jnp.float32)) or keep it out of the optimizer (optax.masked, "
                "or a None leaf)"
            )
        if jax.typeof(a).weak_type:
            a = a.astype(a.dtype)
        return a

    return jax.tree_util.tree_map_with_path(leaf, tree, is_leaf=lambda x: x is None)
