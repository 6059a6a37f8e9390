r"""Discrete methods against their ODE limits, on one time axis, and the fitted order of the gap.

Time axes (Su, Boyd, Candès, JMLR 2016, §2; Bu, Xu, Chen, AISTATS 2021, §3), for each ``method``:

- "inna": :func:`inna_jax.inna` in ``lax.scan`` against DIN, at :math:`t_k = \sum_{i<k}\gamma_i`;
- "gd": ``optax.sgd(lr)`` against the gradient flow, at :math:`t_k = \sum_{i<k}\gamma_i`;
- "heavy_ball": ``optax.sgd(eta, momentum=1 - a * sqrt(eta))`` against the heavy-ball ODE
  with damping :math:`a`, at :math:`t_k = k\sqrt\eta`;
- "nesterov": :func:`nesterov_scan`, momentum :math:`(k-1)/(k+r-1)`, against the Nesterov
  ODE with damping :math:`r/t`, at :math:`t_k = k\sqrt s`.

**optax and heavy ball.** ``optax.sgd(eta, momentum=b)`` keeps the trace
:math:`v_{k+1} = g_k + b v_k` (:math:`v_0 = 0`) and steps :math:`\theta_{k+1} = \theta_k -
\eta v_{k+1}`. Since :math:`-\eta b v_k = b(\theta_k - \theta_{k-1})`, this is exactly
Polyak's :math:`\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k) + b(\theta_k -
\theta_{k-1})` with :math:`\theta_{-1} = \theta_0`. ``optax.sgd(..., nesterov=True)`` is
Nesterov with a *constant* momentum (it tends to the heavy-ball ODE), not the
:math:`(k-1)/(k+2)` method of Su, Boyd and Candès, which we write as a scan.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._inna import inna
from inna_jax._validation import check_positive, concrete_float
from inna_jax.dynamics._solve import (
    _Grad,
    solve_din,
    solve_gradient_flow,
    solve_heavy_ball,
    solve_nesterov,
)

METHODS = ("inna", "gd", "heavy_ball", "nesterov")


class Comparison(NamedTuple):
    """A discrete trajectory and its ODE on one time axis.

    Attributes:
        ts: times :math:`t_0 = 0, t_1, \\dots, t_K` of the iterates, shape ``(K + 1,)``.
        discrete: the iterates :math:`\\theta_0, \\dots, \\theta_K`, a pytree like ``theta0``
            with a leading axis of size ``K + 1``.
        continuous: the ODE solution :math:`\\theta(t_k)`, same structure.
        gaps: :math:`\\|\\theta_k - \\theta(t_k)\\|_2` (over all leaves), shape ``(K + 1,)``.
        gap: the maximum gap, :math:`\\max_k \\|\\theta_k - \\theta(t_k)\\|_2`.
    """

    ts: jax.Array
    discrete: Any
    continuous: Any
    gaps: jax.Array
    gap: jax.Array


class OrderFit(NamedTuple):
    """The fitted order of the gap.

    Attributes:
        order: slope of the least-squares line of :math:`\\log(\\text{gap})` against
            :math:`\\log h`.
        time_steps: the time steps :math:`h` (:math:`\\gamma` or :math:`\\sqrt\\eta`).
        gaps: the maximum gap at each time step, on the coarsest grid.
    """

    order: float
    time_steps: np.ndarray
    gaps: np.ndarray


def _prepend(theta0, path):
    return jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs]), theta0, path)


def nesterov_scan(grad_fn: Callable[[Any], Any], theta0: Any, *, step: ArrayLike, r, steps: int):
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
        step: :math:`s > 0`.
        r: momentum constant :math:`r > 0`.
        steps: number of iterations :math:`K` (static).

    Returns:
        :math:`x_0, \dots, x_K`, a pytree like ``theta0`` with a leading axis of size
        :math:`K + 1`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import nesterov_scan
        >>> xs = nesterov_scan(jax.grad(lambda x: 0.5 * jnp.sum(x**2)), jnp.array([1.0]),
        ...                    step=0.5, r=3.0, steps=2)
        >>> [round(float(x), 4) for x in xs[:, 0]]
        [1.0, 0.5, 0.25]

    References:
        Su, Boyd, Candès, JMLR 17 (2016), equation (1).
    """

    def body(carry, _):
        carry = _nesterov_step(grad_fn, step, r, carry)
        return carry, carry[0]

    k1 = jnp.ones((), jnp.result_type(float))
    _, path = jax.lax.scan(body, (theta0, theta0, k1), None, length=steps)
    return _prepend(theta0, path)


def _nesterov_step(grad_fn, step, r, carry):
    """(x_{k-1}, y_{k-1}, k) -> (x_k, y_k, k + 1)."""
    x_prev, y_prev, k = carry
    x = jax.tree.map(lambda y, g: y - step * g, y_prev, grad_fn(y_prev))
    mom = (k - 1) / (k + r - 1)
    y = jax.tree.map(lambda a, b: a + mom * (a - b), x, x_prev)
    return x, y, k + 1


def _tree_norms(a, b):
    sq = jax.tree.map(lambda x, y: jnp.sum((x - y).reshape(x.shape[0], -1) ** 2, axis=1), a, b)
    return jnp.sqrt(sum(jax.tree.leaves(sq)))


def _optimizer(method, lr, alpha, beta, speed, damping):
    if method == "inna":
        return inna(lr, alpha, beta, initial_speed=speed)
    if method == "gd":
        return optax.sgd(lr)
    return optax.sgd(lr, momentum=1 - damping * jnp.sqrt(lr))


@eqx.filter_jit
def _discrete(method, loss_fn, theta0, steps, substeps, lr, alpha, beta, speed, damping, r):
    """The iterates at every ``substeps``-th step, ``steps`` times; one compile for all
    ``substeps`` (a traced trip count)."""
    grad_fn = _Grad(loss_fn)
    if method == "nesterov":

        def step(_, carry):
            return _nesterov_step(grad_fn, lr, r, carry)

        carry = (theta0, theta0, jnp.ones((), lr.dtype))
    else:
        tx = _optimizer(method, lr, alpha, beta, speed, damping)

        def step(_, carry):
            params, state = carry
            updates, state = tx.update(grad_fn(params), state, params)
            return optax.apply_updates(params, updates), state

        carry = (theta0, tx.init(theta0))

    def outer(carry, _):
        carry = jax.lax.fori_loop(0, substeps, step, carry)
        return carry, carry[0]

    _, path = jax.lax.scan(outer, carry, None, length=steps)
    return _prepend(theta0, path)


def _time_axis(method, lr, steps):
    if method in ("inna", "gd"):
        if callable(lr):
            gammas = jax.vmap(lr)(jnp.arange(steps))
        else:
            gammas = jnp.full((steps,), lr)
        return jnp.concatenate([jnp.zeros(1, gammas.dtype), jnp.cumsum(gammas)])
    return jnp.sqrt(lr) * jnp.arange(steps + 1)


def _solve_ode(method, loss_fn, theta0, ts, alpha, beta, speed, damping, r, ode_options):
    """theta(t) at ``ts`` (with ts[0] = 0) for the ODE of ``method``."""
    t1 = ts[-1]
    if method == "inna":
        sol = solve_din(
            loss_fn,
            theta0,
            alpha=alpha,
            beta=beta,
            t1=t1,
            initial_speed=speed,
            ts=ts,
            **ode_options,
        )
    elif method == "gd":
        sol = solve_gradient_flow(loss_fn, theta0, t1=t1, ts=ts, **ode_options)
    elif method == "heavy_ball":
        sol = solve_heavy_ball(loss_fn, theta0, damping=damping, t1=t1, ts=ts, **ode_options)
    else:
        t0 = jnp.minimum(1e-3, ts[1] / 2)
        sol = solve_nesterov(loss_fn, theta0, t1=t1, r=r, t0=t0, ts=ts, **ode_options)
    return sol.theta


_solve_ode_jit = eqx.filter_jit(_solve_ode)


@eqx.filter_jit
def _compare(method, loss_fn, theta0, steps, lr, alpha, beta, speed, damping, r, ode_options):
    ts = _time_axis(method, lr, steps)
    discrete = _discrete(method, loss_fn, theta0, steps, 1, lr, alpha, beta, speed, damping, r)
    continuous = _solve_ode(
        method, loss_fn, theta0, ts, alpha, beta, speed, damping, r, ode_options
    )
    gaps = _tree_norms(discrete, continuous)
    return Comparison(ts, discrete, continuous, gaps, jnp.max(gaps))


def compare(
    method: str,
    loss_fn: Callable[[Any], jax.Array],
    theta0: Any,
    *,
    steps: int,
    learning_rate: ArrayLike | optax.Schedule,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    initial_speed: ArrayLike | None = None,
    damping: ArrayLike = 1.0,
    r: ArrayLike = 3.0,
    **ode_options: Any,
) -> Comparison:
    r"""Runs a discrete method and its ODE limit on one time axis and measures the gap.

    ============  ==================================  =================================
    ``method``    discrete                            ODE, :math:`t_k`
    ============  ==================================  =================================
    "inna"        ``inna_jax.inna`` (lax.scan)         DIN, :math:`\sum_{i<k}\gamma_i`
    "gd"          ``optax.sgd(lr)``                    gradient flow, :math:`\sum_{i<k}\gamma_i`
    "heavy_ball"  ``optax.sgd(eta, momentum=b)``        heavy ball (damping a), :math:`k\sqrt\eta`
    "nesterov"    :func:`nesterov_scan`                Nesterov (:math:`r/t`), :math:`k\sqrt s`
    ============  ==================================  =================================

    For heavy ball, :math:`b = 1 - a\sqrt\eta` (``damping`` :math:`= a`); optax's momentum
    form is exactly Polyak's (see :mod:`inna_jax.dynamics._compare`). INNA and DIN start
    from the same :math:`\psi_0` (:func:`inna_jax.inna_psi0`). The call is compiled once per
    ``(method, loss_fn, steps)`` and shapes; hyperparameters are data.

    Args:
        method: one of "inna", "gd", "heavy_ball", "nesterov".
        loss_fn: a scalar function of the pytree ``theta``.
        theta0: the initial point, any pytree of arrays.
        steps: number of iterations :math:`K`.
        learning_rate: :math:`\gamma` (a float or, for "inna" and "gd", an optax schedule),
            :math:`\eta` for heavy ball, :math:`s` for Nesterov.
        alpha: INNA friction :math:`\alpha > 0`.
        beta: INNA damping :math:`\beta > 0`.
        initial_speed: INNA's :math:`s`; ``None`` means :math:`\beta`, as in ``inna``.
        damping: heavy-ball damping :math:`a \ge 0`.
        r: Nesterov's damping constant (momentum :math:`(k-1)/(k+r-1)`).
        **ode_options: ``solver``, ``stepsize_controller``, ``dt0``, ``max_steps`` for the
            ODE solve (see :func:`solve_din`).

    Returns:
        A :class:`Comparison` ``(ts, discrete, continuous, gaps, gap)``.

    Raises:
        ValueError: for an unknown method, ``steps < 1``, a non-positive learning rate, or a
            schedule for "heavy_ball" or "nesterov".

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import compare
        >>> loss = lambda x: 0.5 * jnp.sum(x**2)
        >>> res = compare("gd", loss, jnp.array([1.0]), steps=10, learning_rate=0.1)
        >>> round(float(res.ts[-1]), 4), round(float(res.gap), 3)
        (1.0, 0.019)

    References:
        Castera et al., JMLR 22 (2021). Bu, Xu, Chen, AISTATS 2021. Su, Boyd, Candès,
        JMLR 17 (2016).
    """
    lr, hyper = _prepare(method, steps, learning_rate, alpha, beta, initial_speed, damping, r)
    return _compare(method, loss_fn, theta0, int(steps), lr, *hyper, ode_options)


def _prepare(method, steps, learning_rate, alpha, beta, initial_speed, damping, r):
    """Validates the arguments; hyperparameters become arrays (data for jit, not constants)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive integer, got steps={steps!r}")
    if callable(learning_rate):
        if method not in ("inna", "gd"):
            raise ValueError(
                f"a learning-rate schedule is only allowed for 'inna' and 'gd', got {method!r}"
            )
        lr = learning_rate
    else:
        check_positive("learning_rate", learning_rate)
        lr = jnp.asarray(learning_rate, dtype=float)
    speed = beta if initial_speed is None else initial_speed
    hyper = [jnp.asarray(v, dtype=float) for v in (alpha, beta, speed, damping, r)]
    return lr, hyper


def convergence_order(
    method: str,
    loss_fn: Callable[[Any], jax.Array],
    theta0: Any,
    *,
    t1: float,
    time_step: float,
    halvings: int = 4,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    initial_speed: ArrayLike | None = None,
    damping: ArrayLike = 1.0,
    r: ArrayLike = 3.0,
    **ode_options: Any,
) -> OrderFit:
    r"""Halves the time step repeatedly and fits the order :math:`p` of gap :math:`\propto h^p`.

    The time step is :math:`h = \gamma` for "inna" and "gd" and :math:`h = \sqrt\eta`
    (resp. :math:`\sqrt s`) for "heavy_ball" and "nesterov", so halving :math:`h` divides
    :math:`\eta` by 4. For :math:`h_j = h_0 2^{-j}`, :math:`j = 0..` ``halvings``, it runs
    :func:`compare` to :math:`t_1` and takes the maximum gap over the times of the coarsest
    grid (common to every level). The ODE is solved once, on that grid, and the discrete
    runs share one compiled function (the number of substeps per grid interval is data).
    The order is the least-squares slope of :math:`\log(\text{gap})` against
    :math:`\log h`. Explicit Euler (INNA, GD) has order 1.

    Args:
        method: one of "inna", "gd", "heavy_ball", "nesterov".
        loss_fn: a scalar function of the pytree ``theta``.
        theta0: the initial point.
        t1: horizon; :math:`t_1/h_0` must be a whole number.
        time_step: :math:`h_0`, the coarsest time step.
        halvings: number of halvings (at least 1).
        alpha: INNA friction, as in :func:`compare`.
        beta: INNA damping.
        initial_speed: INNA's initial speed; ``None`` means :math:`\\beta`.
        damping: heavy-ball damping :math:`a`.
        r: Nesterov's damping constant.
        **ode_options: ``solver``, ``stepsize_controller``, ``dt0``, ``max_steps``.

    Returns:
        An :class:`OrderFit` ``(order, time_steps, gaps)``.

    Raises:
        ValueError: for ``halvings < 1``, a non-positive step, or :math:`t_1/h_0` not whole.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import convergence_order
        >>> fit = convergence_order("gd", lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0]),
        ...                         t1=1.0, time_step=0.1, halvings=3)
        >>> round(fit.order, 1)
        1.0

    References:
        Hairer, Nørsett, Wanner, "Solving Ordinary Differential Equations I", Section II.3.
        diffrax's ``test_ode_order``.
    """
    if int(halvings) < 1:
        raise ValueError(f"halvings must be an integer >= 1, got halvings={halvings!r}")
    h0 = concrete_float(time_step)
    if h0 is None or not h0 > 0:
        raise ValueError(f"time_step must be a number > 0, got time_step={time_step!r}")
    base_steps = round(t1 / h0)
    if base_steps < 1 or abs(base_steps * h0 - t1) > 1e-9 * max(1.0, t1):
        raise ValueError(f"t1 / time_step must be a whole number, got {t1!r} / {time_step!r}")
    lr0, hyper = _prepare(
        method,
        base_steps,
        h0 if method in ("inna", "gd") else h0 * h0,
        alpha,
        beta,
        initial_speed,
        damping,
        r,
    )
    ts = h0 * jnp.arange(base_steps + 1, dtype=lr0.dtype)
    ode = _solve_ode_jit(method, loss_fn, theta0, ts, *hyper, ode_options)
    steps_h, gaps = [], []
    for j in range(int(halvings) + 1):
        h = h0 / 2**j
        lr = jnp.asarray(h if method in ("inna", "gd") else h * h, dtype=lr0.dtype)
        sub = jnp.asarray(2**j)
        path = _discrete(method, loss_fn, theta0, base_steps, sub, lr, *hyper)
        steps_h.append(h)
        gaps.append(float(jnp.max(_tree_norms(path, ode))))
    steps_arr, gaps_arr = np.asarray(steps_h), np.asarray(gaps)
    order = float(np.polyfit(np.log(steps_arr), np.log(gaps_arr), 1)[0])
    return OrderFit(order, steps_arr, gaps_arr)
