r"""One vocabulary for the hyperparameters of :mod:`inna_jax.dynamics`: names, defaults, checks.

========================  ==================  =======  ======================================
quantity                  name                default  allowed
========================  ==================  =======  ======================================
INNA/DIN friction         ``alpha``           0.5      finite, :math:`\alpha > 0`
INNA/DIN Newton damping   ``beta``            0.1      finite, :math:`\beta > 0`
INNA/DIN initial speed    ``initial_speed``   β        finite, :math:`s \ge 0`
heavy-ball friction a     ``friction``        1.0      finite, :math:`a \ge 0`
Nesterov damping r (r/t)  ``damping``         3.0      finite, :math:`r > 0`
gradient-flow scale c     ``scale``           1.0      finite, :math:`c > 0`
========================  ==================  =======  ======================================

The INNA defaults are those of :func:`inna_jax.inna`. Old names live on as deprecated aliases
that warn (:func:`resolve_aliases`).

Checks come in two kinds. A concrete value (a Python number or a concrete array, scalar or a
grid) is checked element-wise before anything is compiled, and a bad one raises a one-line
``ValueError`` naming the argument, the value (and its grid index) and what is allowed. A
traced value (under ``jit`` or ``vmap``) cannot be read in Python, so the compiled solves
check it at run time with :func:`equinox.error_if`, whose message names the argument.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class _Default(float):
    """A float default whose identity tells 'not passed' from 'passed the same value'."""

    __slots__ = ()


ALPHA = _Default(0.5)
BETA = _Default(0.1)
FRICTION = _Default(1.0)
DAMPING = _Default(3.0)
SCALE = _Default(1.0)


class Rule(NamedTuple):
    """What a hyperparameter may be: finite and ``> low`` (strict) or ``>= low``."""

    low: float
    strict: bool

    def allows(self, values: np.ndarray) -> np.ndarray:
        above = values > self.low if self.strict else values >= self.low
        return np.isfinite(values) & above

    def describe(self) -> str:
        return f"a finite number {'>' if self.strict else '>='} {self.low:g}"


RULES: dict[str, Rule] = {
    "alpha": Rule(0.0, True),
    "beta": Rule(0.0, True),
    "initial_speed": Rule(0.0, False),
    "friction": Rule(0.0, False),
    "damping": Rule(0.0, True),
    "scale": Rule(0.0, True),
    "t0": Rule(0.0, True),
}


def is_traced(value: Any) -> bool:
    """Whether ``value`` (an array or a pytree of arrays) holds a tracer."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(value))


def check(name: str, value: Any, rule: Rule | None = None) -> None:
    """Checks a concrete hyperparameter element-wise; traced values are left to :func:`guard`.

    Args:
        name: the argument's name (a key of :data:`RULES` unless ``rule`` is given).
        value: a number, or an array of any shape (a grid); ``None`` is skipped.
        rule: overrides ``RULES[name]``.

    Raises:
        ValueError: one line with the name, the first bad value, its index for a grid,
            and what is allowed.
    """
    if value is None or callable(value) or is_traced(value):
        return
    rule = RULES[name] if rule is None else rule
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be {rule.describe()}, got {name}={value!r}")
    ok = rule.allows(array.astype(np.float64))
    if array.ndim == 0:
        if not ok:
            raise ValueError(f"{name} must be {rule.describe()}, got {name}={value!r}")
        return
    if not ok.all():
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        bad = array[index].item()
        raise ValueError(
            f"{name} must be {rule.describe()} at every grid point, got {name}={bad!r} at "
            f"index {index if len(index) > 1 else index[0]} (shape {array.shape})"  # pyright: ignore[reportGeneralTypeIssues]
        )


def check_scalar(name: str, value: Any, rule: Rule | None = None) -> None:
    """:func:`check` for a hyperparameter that must be a scalar (use ``vmap`` for grids)."""
    if value is not None and not callable(value) and not is_traced(value):
        shape = np.shape(value)
        if shape != ():
            raise ValueError(
                f"{name} must be a scalar, got an array of shape {shape}; for a grid of values "
                "use inna_jax.dynamics.solve_grid (or jax.vmap)"
            )
    check(name, value, rule)


def guard(name: str, value: jax.Array) -> jax.Array:
    """``value`` unchanged, with a run-time check (for traced values) that it is allowed."""
    rule = RULES[name]
    above = value > rule.low if rule.strict else value >= rule.low
    return eqx.error_if(
        value,
        jnp.logical_not(jnp.isfinite(value) & above),
        f"{name} must be {rule.describe()}; a traced value (for example one point of a "
        f"vmapped grid) is not",
    )


def resolve_aliases(
    func: str,
    extra: Mapping[str, Any],
    aliases: Mapping[str, str],
    current: Mapping[str, Any],
    allowed: tuple[str, ...],
    stacklevel: int = 3,
) -> dict[str, Any]:
    """Maps deprecated keyword names in ``extra`` to their new names, warning for each.

    Args:
        func: the public function's name, for the messages.
        extra: the keyword arguments the signature did not take (``**deprecated``).
        aliases: old name -> new name.
        current: new name -> the value passed under the new name (a :class:`_Default`
            instance or ``None`` when it was not passed).
        allowed: the function's keyword arguments, for the unknown-name message.
        stacklevel: of the warning (3: the caller of the public function that calls this).

    Returns:
        ``{new name: value}`` for each deprecated name used.

    Raises:
        TypeError: for an unknown keyword, or an old and a new name both given.
    """
    resolved = {}
    for old, value in extra.items():
        if old not in aliases:
            raise TypeError(
                f"{func}() got an unexpected keyword argument {old!r}; it takes "
                f"{', '.join(allowed)}"
            )
        new = aliases[old]
        if not _not_passed(current.get(new)) or new in resolved:
            raise TypeError(
                f"{func}() got both {old}= (the deprecated name) and {new}=; pass only {new}="
            )
        warnings.warn(
            f"{func}({old}=...) is deprecated; use {new}={value!r} instead",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        resolved[new] = value
    return resolved


def _not_passed(value: Any) -> bool:
    return value is None or isinstance(value, _Default)


def as_array(value: Any) -> jax.Array:
    """A hyperparameter as an array (data for ``jit``, not a constant).

    Python numbers stay weakly typed, so a float32 state is not promoted under x64.
    """
    array = jnp.asarray(finite_default(value))
    if not jnp.issubdtype(array.dtype, jnp.inexact):
        array = array.astype(jnp.result_type(float))
    return array


def finite_default(value: Any) -> Any:
    """A :class:`_Default` as a plain float (so that it prints and hashes like one)."""
    return float(value) if isinstance(value, _Default) else value
