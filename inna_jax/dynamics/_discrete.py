r"""The discrete methods on the ODE's time axis: one ``lax.scan`` for all four.

"inna" is :func:`inna_jax.inna`, "gd" ``optax.sgd``, "heavy_ball" ``optax.sgd`` with momentum
(Polyak's method, see :mod:`inna_jax.dynamics._compare`), "nesterov" :func:`nesterov_scan`'s
step with momentum :math:`(k-1)/(k+r-1)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax.dynamics._hyper import (
    DAMPING,
    as_array,
    check_scalar,
    resolve_aliases,
)
from inna_jax.dynamics._methods import (
    POSITIVE,
    check_steps,
    checked_learning_rate,
    optimizer,
    resolve,
    time_axis,
)
from inna_jax.dynamics._solve import (
    _Grad,
)


class DiscretePath(NamedTuple):
    """A discrete method's iterates (or a function of them) on the ODE's time axis.

    Attributes:
        ts: times :math:`t_0 = 0, \\dots, t_K` of the iterates, shape ``(K + 1,)``.
        values: ``record(theta_k)`` for :math:`k = 0..K`, stacked on a leading axis (the
            iterates themselves when ``record`` is ``None``).
        final: the last iterate :math:`\\theta_K`, a pytree like ``theta0``.
    """

    ts: jax.Array
    values: Any
    final: Any


def _prepend(theta0, path):
    return jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs]), theta0, path)


def nesterov_scan(
    grad_fn: Callable[[Any], Any],
    theta0: Any,
    *,
    steps: int,
    learning_rate: ArrayLike | None = None,
    damping: ArrayLike = DAMPING,
    **deprecated: Any,
) -> Any:
    r"""Nesterov's method with momentum :math:`(k-1)/(k+r-1)`, as a ``lax.scan``.

    .. math::

        x_k = y_{k-1} - s\nabla f(y_{k-1}), \qquad
        y_k = x_k + \frac{k-1}{k+r-1}(x_k - x_{k-1}), \qquad k \ge 1,

    with :math:`y_0 = x_0`. For :math:`r = 3` this is the :math:`(k-1)/(k+2)` scheme of Su,
    Boyd and Candès, whose iterates follow :func:`solve_nesterov` at :math:`t = k\sqrt s`.
    optax's ``sgd(nesterov=True)`` has a constant momentum, so it is not this method.

    Args:
        grad_fn: :math:`\nabla f`, a function of a pytree.
        theta0: :math:`x_0`.
        steps: number of iterations :math:`K` (static).
        learning_rate: the step :math:`s > 0` (required).
        damping: :math:`r > 0` (default 3).
        **deprecated: ``step=`` and ``r=`` are the old names of ``learning_rate`` and
            ``damping`` (they warn).

    Returns:
        :math:`x_0, \dots, x_K`, a pytree like ``theta0`` with a leading axis of size
        :math:`K + 1`.

    Raises:
        ValueError: for a concrete bad ``learning_rate`` or ``damping``.
        TypeError: for a missing ``learning_rate`` or an unknown keyword argument.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import nesterov_scan
        >>> xs = nesterov_scan(jax.grad(lambda x: 0.5 * jnp.sum(x**2)), jnp.array([1.0]),
        ...                    learning_rate=0.5, damping=3.0, steps=2)
        >>> [round(float(x), 4) for x in xs[:, 0]]
        [1.0, 0.5, 0.25]

    References:
        Su, Boyd, Candès, JMLR 17 (2016), equation (1).
    """
    if deprecated:
        resolved = resolve_aliases(
            "nesterov_scan",
            deprecated,
            {"step": "learning_rate", "r": "damping"},
            {"learning_rate": learning_rate, "damping": damping},
            ("steps", "learning_rate", "damping"),
        )
        learning_rate = resolved.get("learning_rate", learning_rate)
        damping = resolved.get("damping", damping)
    if learning_rate is None:
        raise TypeError("nesterov_scan() missing the keyword argument learning_rate (the step s)")
    check_scalar("learning_rate", learning_rate, POSITIVE)
    check_scalar("damping", damping)
    damping = as_array(damping)

    def body(carry, _):
        carry = nesterov_step(grad_fn, learning_rate, damping, carry)
        return carry, carry[0]

    k1 = jnp.ones((), jnp.result_type(float))
    _, path = jax.lax.scan(body, (theta0, theta0, k1), None, length=steps)
    return _prepend(theta0, path)


def nesterov_step(grad_fn, step, damping, carry):
    """(x_{k-1}, y_{k-1}, k) -> (x_k, y_k, k + 1)."""
    x_prev, y_prev, k = carry
    x = jax.tree.map(lambda y, g: y - step * g, y_prev, grad_fn(y_prev))
    mom = (k - 1) / (k + damping - 1)
    y = jax.tree.map(lambda a, b: a + mom * (a - b), x, x_prev)
    return x, y, k + 1


@eqx.filter_jit
def run_discrete(method, loss_fn, theta0, steps, substeps, lr, hyper, record):
    """``record`` of the iterates at every ``substeps``-th step, ``steps`` times, and the last
    iterate; one compile for all ``substeps`` (a traced trip count) and hyperparameters."""
    grad_fn = _Grad(loss_fn)
    keep = (lambda x: x) if record is None else record
    if method == "nesterov":

        def step(_, carry):  # pyright: ignore[reportRedeclaration]
            return nesterov_step(grad_fn, lr, hyper.damping, carry)

        carry = (theta0, theta0, jnp.ones((), lr.dtype))
    else:
        tx = optimizer(method, lr, hyper)

        def step(_, carry):
            params, state = carry
            updates, state = tx.update(grad_fn(params), state, params)
            return optax.apply_updates(params, updates), state

        carry = (theta0, tx.init(theta0))

    def outer(carry, _):
        carry = jax.lax.fori_loop(0, substeps, step, carry)
        return carry, keep(carry[0])

    carry, path = jax.lax.scan(outer, carry, None, length=steps)
    return _prepend(keep(theta0), path), carry[0]


def discrete_path(
    method: str,
    loss_fn: Callable[[Any], jax.Array],
    theta0: Any,
    *,
    steps: int,
    learning_rate: ArrayLike | optax.Schedule,
    alpha: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    initial_speed: ArrayLike | None = None,
    friction: ArrayLike | None = None,
    damping: ArrayLike | None = None,
    record: Callable[[Any], Any] | None = None,
    **deprecated: Any,
) -> DiscretePath:
    r"""The discrete method of :func:`compare` alone: its iterates on the ODE's time axis.

    The same runners as :func:`compare` ("inna": ``inna_jax.inna``; "gd": ``optax.sgd``;
    "heavy_ball": ``optax.sgd(eta, momentum=1 - a sqrt(eta))``, Polyak's method; "nesterov":
    :func:`nesterov_scan`'s step), in one ``lax.scan``, with the same names and defaults.
    ``record`` maps each iterate to what is kept (a loss, the predictions), so that a long
    run on a large model need not store every iterate. Compiled once per
    ``(method, loss_fn, record, steps)`` and shapes; hyperparameters are data.

    Args:
        method: one of "inna", "gd", "heavy_ball", "nesterov".
        loss_fn: a scalar function of the pytree ``theta``.
        theta0: the initial point, any pytree of arrays.
        steps: number of iterations :math:`K`.
        learning_rate: :math:`\gamma`, :math:`\eta` or :math:`s`, as in :func:`compare`.
        alpha: "inna" only, as in :func:`compare`.
        beta: "inna" only.
        initial_speed: "inna" only.
        friction: "heavy_ball" only: :math:`a` (momentum :math:`b = 1 - a\sqrt\eta`).
        damping: "nesterov" only: :math:`r`.
        record: a function of one iterate; ``None`` keeps the iterates. Pass the same
            Python object (or a ``jax.tree_util.Partial``) to reuse the compilation.
        **deprecated: ``r=`` is the old name of ``damping`` (warns).

    Returns:
        A :class:`DiscretePath` ``(ts, values, final)``: the times :math:`t_k`,
        ``record(theta_k)`` for :math:`k = 0..K`, and :math:`\theta_K`.

    Raises:
        ValueError: as :func:`compare`.
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import discrete_path
        >>> loss = lambda x: 0.5 * jnp.sum(x**2)
        >>> path = discrete_path("heavy_ball", loss, jnp.array([1.0]), steps=3,
        ...                      learning_rate=0.25, friction=1.0, record=loss)
        >>> [round(float(v), 4) for v in path.values], round(float(path.ts[-1]), 4)
        ([0.5, 0.2812, 0.0957, 0.0148], 1.5)

    References:
        Polyak (1964). Su, Boyd, Candès, JMLR 17 (2016), equation (1). Castera et al.,
        JMLR 22 (2021), Algorithm 1.
    """
    hyper = resolve(
        "discrete_path", method, alpha, beta, initial_speed, friction, damping, deprecated
    )
    steps = check_steps(steps)
    lr = checked_learning_rate(method, learning_rate)
    values, final = run_discrete(method, loss_fn, theta0, steps, 1, lr, hyper, record)
    return DiscretePath(time_axis(method, lr, steps), values, final)
