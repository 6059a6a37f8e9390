r"""Discrete methods against their ODE limits, on one time axis, and the fitted order of the gap.

Time axes (Su, Boyd, Candès, JMLR 2016, §2; Bu, Xu, Chen, AISTATS 2021, §3), for each ``method``:

- "inna": :func:`inna_jax.inna` in ``lax.scan`` against DIN, at :math:`t_k = \sum_{i<k}\gamma_i`;
- "gd": ``optax.sgd(lr)`` against the gradient flow, at :math:`t_k = \sum_{i<k}\gamma_i`;
- "heavy_ball": ``optax.sgd(eta, momentum=1 - a * sqrt(eta))`` against the heavy-ball ODE
  with ``friction`` :math:`a`, at :math:`t_k = k\sqrt\eta`;
- "nesterov": :func:`nesterov_scan`, momentum :math:`(k-1)/(k+r-1)`, against the Nesterov
  ODE with ``damping`` :math:`r/t`, at :math:`t_k = k\sqrt s`.

Each method takes only its own hyperparameters (INNA: ``alpha``, ``beta``,
``initial_speed``; heavy ball: ``friction``; Nesterov: ``damping``; GD: none); passing
another method's is an error, not silently ignored.

**optax and heavy ball.** ``optax.sgd(eta, momentum=b)`` keeps the trace
:math:`v_{k+1} = g_k + b v_k` (:math:`v_0 = 0`) and steps :math:`\theta_{k+1} = \theta_k -
\eta v_{k+1}`. Since :math:`-\eta b v_k = b(\theta_k - \theta_{k-1})`, this is exactly
Polyak's :math:`\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k) + b(\theta_k -
\theta_{k-1})` with :math:`\theta_{-1} = \theta_0`. ``optax.sgd(..., nesterov=True)`` is
Nesterov with a *constant* momentum (it tends to the heavy-ball ODE), not the
:math:`(k-1)/(k+2)` method of Su, Boyd and Candès, which we write as a scan.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._inna import inna
from inna_jax._validation import concrete_float
from inna_jax.dynamics._hyper import (
    ALPHA,
    BETA,
    DAMPING,
    FRICTION,
    Rule,
    as_array,
    check_scalar,
    resolve_aliases,
)
from inna_jax.dynamics._solve import (
    DEFAULT_MAX_STEPS,
    _Grad,
    solve_din,
    solve_gradient_flow,
    solve_heavy_ball,
    solve_nesterov,
)

METHODS = ("inna", "gd", "heavy_ball", "nesterov")
_POSITIVE = Rule(0.0, True)

#: The hyperparameters each method takes (besides the learning rate), and what they mean.
METHOD_HYPERPARAMETERS = {
    "inna": ("alpha", "beta", "initial_speed"),
    "gd": (),
    "heavy_ball": ("friction",),
    "nesterov": ("damping",),
}
_MEANING = {
    "alpha": "INNA's friction alpha",
    "beta": "INNA's Newtonian damping beta",
    "initial_speed": "INNA's initial speed s",
    "friction": "heavy ball's friction a",
    "damping": "Nesterov's damping r in r/t",
}
_ODE_ARGS = ("solver", "stepsize_controller", "dt0", "max_steps")


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


class _Hyper(NamedTuple):
    """Every method's hyperparameters as arrays (unused ones hold their defaults), so that one
    compiled function per method serves every value."""

    alpha: jax.Array
    beta: jax.Array
    initial_speed: jax.Array
    friction: jax.Array
    damping: jax.Array


def _resolve(func, method, alpha, beta, initial_speed, friction, damping, deprecated):
    """Checks the method and its hyperparameters and fills in the defaults.

    Old names: ``r=`` is Nesterov's ``damping``; ``damping=`` with method "heavy_ball" is the
    old name of ``friction`` (``damping`` now means Nesterov's r). Both warn. A hyperparameter
    of another method is an error.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    deprecated = dict(deprecated)
    if "r" in deprecated and method != "nesterov":
        raise ValueError(
            f"r (the old name of damping, {_MEANING['damping']}) does not apply to "
            f"method={method!r}{_takes(method)}"
        )
    if method == "heavy_ball" and damping is not None:
        if friction is not None:
            raise TypeError(
                f"{func}('heavy_ball', ...) got both damping= (the old name of friction) and "
                "friction=; pass only friction="
            )
        warnings.warn(
            f"{func}('heavy_ball', damping=...) is deprecated: heavy ball's a is now called "
            f"friction, and damping names Nesterov's r; use friction={damping!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        friction, damping = damping, None
    allowed = ("steps", "learning_rate", *_MEANING, *_ODE_ARGS)
    if deprecated:
        resolved = resolve_aliases(
            func, deprecated, {"r": "damping"}, {"damping": damping}, allowed, stacklevel=4
        )
        damping = resolved.get("damping", damping)
    given = {
        "alpha": alpha,
        "beta": beta,
        "initial_speed": initial_speed,
        "friction": friction,
        "damping": damping,
    }
    for name, value in given.items():
        if value is not None and name not in METHOD_HYPERPARAMETERS[method]:
            raise ValueError(
                f"{name} ({_MEANING[name]}) does not apply to method={method!r}{_takes(method)}"
            )
    for name, value in given.items():
        check_scalar(name, value)
    alpha = ALPHA if alpha is None else alpha
    beta = BETA if beta is None else beta
    speed = beta if initial_speed is None else initial_speed
    friction = FRICTION if friction is None else friction
    damping = DAMPING if damping is None else damping
    return _Hyper(*(as_array(v) for v in (alpha, beta, speed, friction, damping)))


def _takes(method):
    names = METHOD_HYPERPARAMETERS[method]
    if not names:
        return ", which takes no hyperparameter besides learning_rate"
    return f", which takes {', '.join(names)}"


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
    check_scalar("learning_rate", learning_rate, _POSITIVE)
    check_scalar("damping", damping)
    damping = as_array(damping)

    def body(carry, _):
        carry = _nesterov_step(grad_fn, learning_rate, damping, carry)
        return carry, carry[0]

    k1 = jnp.ones((), jnp.result_type(float))
    _, path = jax.lax.scan(body, (theta0, theta0, k1), None, length=steps)
    return _prepend(theta0, path)


def _nesterov_step(grad_fn, step, damping, carry):
    """(x_{k-1}, y_{k-1}, k) -> (x_k, y_k, k + 1)."""
    x_prev, y_prev, k = carry
    x = jax.tree.map(lambda y, g: y - step * g, y_prev, grad_fn(y_prev))
    mom = (k - 1) / (k + damping - 1)
    y = jax.tree.map(lambda a, b: a + mom * (a - b), x, x_prev)
    return x, y, k + 1


def _tree_norms(a, b):
    sq = jax.tree.map(lambda x, y: jnp.sum((x - y).reshape(x.shape[0], -1) ** 2, axis=1), a, b)
    return jnp.sqrt(sum(jax.tree.leaves(sq)))


def _optimizer(method, lr, hyper):
    if method == "inna":
        return inna(lr, hyper.alpha, hyper.beta, initial_speed=hyper.initial_speed)
    if method == "gd":
        return optax.sgd(lr)
    return optax.sgd(lr, momentum=1 - hyper.friction * jnp.sqrt(lr))


@eqx.filter_jit
def _discrete(method, loss_fn, theta0, steps, substeps, lr, hyper, record):
    """``record`` of the iterates at every ``substeps``-th step, ``steps`` times, and the last
    iterate; one compile for all ``substeps`` (a traced trip count) and hyperparameters."""
    grad_fn = _Grad(loss_fn)
    keep = (lambda x: x) if record is None else record
    if method == "nesterov":

        def step(_, carry):  # pyright: ignore[reportRedeclaration]
            return _nesterov_step(grad_fn, lr, hyper.damping, carry)

        carry = (theta0, theta0, jnp.ones((), lr.dtype))
    else:
        tx = _optimizer(method, lr, hyper)

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


def _time_axis(method, lr, steps):
    if method in ("inna", "gd"):
        if callable(lr):
            gammas: Any = jax.vmap(lr)(jnp.arange(steps))
        else:
            gammas = jnp.full((steps,), lr)
        return jnp.concatenate([jnp.zeros(1, gammas.dtype), jnp.cumsum(gammas)])
    root = jnp.sqrt(jnp.asarray(lr))
    return root * jnp.arange(steps + 1, dtype=root.dtype)


def _solve_ode(method, loss_fn, theta0, ts, hyper, ode_options):
    """theta(t) at ``ts`` (with ts[0] = 0) for the ODE of ``method``."""
    t1 = ts[-1]
    if method == "inna":
        sol = solve_din(
            loss_fn,
            theta0,
            t1=t1,
            alpha=hyper.alpha,
            beta=hyper.beta,
            initial_speed=hyper.initial_speed,
            ts=ts,
            **ode_options,
        )
    elif method == "gd":
        sol = solve_gradient_flow(loss_fn, theta0, t1=t1, ts=ts, **ode_options)
    elif method == "heavy_ball":
        sol = solve_heavy_ball(
            loss_fn, theta0, t1=t1, friction=hyper.friction, ts=ts, **ode_options
        )
    else:
        t0 = jnp.minimum(1e-3, ts[1] / 2)
        sol = solve_nesterov(
            loss_fn, theta0, t1=t1, damping=hyper.damping, t0=t0, ts=ts, **ode_options
        )
    return sol.theta


_solve_ode_jit = eqx.filter_jit(_solve_ode)


@eqx.filter_jit
def _compare(method, loss_fn, theta0, steps, lr, hyper, ode_options):
    ts = _time_axis(method, lr, steps)
    discrete, _ = _discrete(method, loss_fn, theta0, steps, 1, lr, hyper, None)
    continuous = _solve_ode(method, loss_fn, theta0, ts, hyper, ode_options)
    gaps = _tree_norms(discrete, continuous)
    return Comparison(ts, discrete, continuous, gaps, jnp.max(gaps))


def _ode_options(solver, stepsize_controller, dt0, max_steps):
    """The ODE options, with ``dt0`` as an array (data for jit, not a constant)."""
    check_scalar("dt0", dt0, _POSITIVE)
    return {
        "solver": solver,
        "stepsize_controller": stepsize_controller,
        "dt0": None if dt0 is None else jnp.asarray(dt0, dtype=jnp.result_type(float)),
        "max_steps": max_steps,
    }


def compare(
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
    solver: Any = None,
    stepsize_controller: Any = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    **deprecated: Any,
) -> Comparison:
    r"""Runs a discrete method and its ODE limit on one time axis and measures the gap.

    ============  ==================================  =================================
    ``method``    discrete                            ODE, :math:`t_k`
    ============  ==================================  =================================
    "inna"        ``inna_jax.inna`` (lax.scan)         DIN, :math:`\sum_{i<k}\gamma_i`
    "gd"          ``optax.sgd(lr)``                    gradient flow, :math:`\sum_{i<k}\gamma_i`
    "heavy_ball"  ``optax.sgd(eta, momentum=b)``        heavy ball (friction a), :math:`k\sqrt\eta`
    "nesterov"    :func:`nesterov_scan`                Nesterov (damping r/t), :math:`k\sqrt s`
    ============  ==================================  =================================

    For heavy ball, :math:`b = 1 - a\sqrt\eta` (``friction`` :math:`= a`); optax's momentum
    form is exactly Polyak's (see :mod:`inna_jax.dynamics._compare`). INNA and DIN start
    from the same :math:`\psi_0` (:func:`inna_jax.inna_psi0`). Each method takes only its
    own hyperparameters; another method's raises. The call is compiled once per
    ``(method, loss_fn, steps)`` and shapes; hyperparameters are data.

    Args:
        method: one of "inna", "gd", "heavy_ball", "nesterov".
        loss_fn: a scalar function of the pytree ``theta``.
        theta0: the initial point, any pytree of arrays.
        steps: number of iterations :math:`K`.
        learning_rate: :math:`\gamma` (a float or, for "inna" and "gd", an optax schedule),
            :math:`\eta` for heavy ball, :math:`s` for Nesterov.
        alpha: "inna" only: friction :math:`\alpha > 0`; ``None`` means 0.5.
        beta: "inna" only: Newtonian damping :math:`\beta > 0`; ``None`` means 0.1.
        initial_speed: "inna" only: :math:`s \ge 0`; ``None`` means :math:`\beta`, as in
            ``inna``.
        friction: "heavy_ball" only: :math:`a \ge 0`; ``None`` means 1.
        damping: "nesterov" only: :math:`r > 0` (momentum :math:`(k-1)/(k+r-1)`); ``None``
            means 3. With "heavy_ball" it is read as the deprecated name of ``friction``
            (with a ``DeprecationWarning``).
        solver: the ODE solver (see :func:`solve_din`); ``None`` means ``diffrax.Tsit5()``.
        stepsize_controller: ``None`` means :func:`default_controller`.
        dt0: initial (or constant) ODE step.
        max_steps: ODE step limit.
        **deprecated: ``r=`` is the old name of ``damping`` (warns).

    Returns:
        A :class:`Comparison` ``(ts, discrete, continuous, gaps, gap)``.

    Raises:
        ValueError: for an unknown method, a hyperparameter of another method, a bad value,
            ``steps < 1``, a non-positive learning rate, or a schedule for "heavy_ball" or
            "nesterov".
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import compare
        >>> loss = lambda x: 0.5 * jnp.sum(x**2)
        >>> res = compare("gd", loss, jnp.array([1.0]), steps=10, learning_rate=0.1)
        >>> round(float(res.ts[-1]), 4), round(float(res.gap), 3)
        (1.0, 0.019)

    References:
        Castera et al., JMLR 22 (2021), Section 2. Bu, Xu, Chen, AISTATS 2021, §3. Su, Boyd,
        Candès, JMLR 17 (2016), §2.
    """
    hyper = _resolve("compare", method, alpha, beta, initial_speed, friction, damping, deprecated)
    steps = _check_steps(steps)
    lr = _learning_rate(method, learning_rate)
    options = _ode_options(solver, stepsize_controller, dt0, max_steps)
    return _compare(method, loss_fn, theta0, steps, lr, hyper, options)


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
    hyper = _resolve(
        "discrete_path", method, alpha, beta, initial_speed, friction, damping, deprecated
    )
    steps = _check_steps(steps)
    lr = _learning_rate(method, learning_rate)
    values, final = _discrete(method, loss_fn, theta0, steps, 1, lr, hyper, record)
    return DiscretePath(_time_axis(method, lr, steps), values, final)


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got steps={steps!r}")
    return int(steps)


def _learning_rate(method, learning_rate):
    """The learning rate: a schedule ("inna", "gd") or a checked float array."""
    if callable(learning_rate):
        if method not in ("inna", "gd"):
            raise ValueError(
                f"a learning-rate schedule is only allowed for 'inna' and 'gd', got {method!r}"
            )
        return learning_rate
    check_scalar("learning_rate", learning_rate, _POSITIVE)
    return jnp.asarray(learning_rate, dtype=float)


def convergence_order(
    method: str,
    loss_fn: Callable[[Any], jax.Array],
    theta0: Any,
    *,
    t1: float,
    time_step: float,
    halvings: int = 4,
    alpha: ArrayLike | None = None,
    beta: ArrayLike | None = None,
    initial_speed: ArrayLike | None = None,
    friction: ArrayLike | None = None,
    damping: ArrayLike | None = None,
    solver: Any = None,
    stepsize_controller: Any = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    **deprecated: Any,
) -> OrderFit:
    r"""Halves the time step repeatedly and fits the order :math:`p` of gap :math:`\propto h^p`.

    The time step is :math:`h = \gamma` for "inna" and "gd" and :math:`h = \sqrt\eta`
    (resp. :math:`\sqrt s`) for "heavy_ball" and "nesterov", so halving :math:`h` divides
    :math:`\eta` by 4. For :math:`h_j = h_0 2^{-j}`, :math:`j = 0..` ``halvings``, it runs
    the discrete method of :func:`compare` to :math:`t_1` and takes the maximum gap over
    the times of the coarsest grid (common to every level). The ODE is solved once, on
    that grid, and the discrete runs share one compiled function (the number of substeps
    per grid interval is data). The order is the least-squares slope of
    :math:`\log(\text{gap})` against :math:`\log h`. Explicit Euler (INNA, GD) has order 1.
    Hyperparameters have the names and defaults of :func:`compare`, and only the method's
    own are accepted.

    Args:
        method: one of "inna", "gd", "heavy_ball", "nesterov".
        loss_fn: a scalar function of the pytree ``theta``.
        theta0: the initial point.
        t1: horizon; :math:`t_1/h_0` must be a whole number.
        time_step: :math:`h_0`, the coarsest time step.
        halvings: number of halvings (at least 1).
        alpha: "inna" only: friction :math:`\alpha`; ``None`` means 0.5.
        beta: "inna" only: Newtonian damping :math:`\beta`; ``None`` means 0.1.
        initial_speed: "inna" only: :math:`s`; ``None`` means :math:`\beta`.
        friction: "heavy_ball" only: :math:`a`; ``None`` means 1.
        damping: "nesterov" only: :math:`r`; ``None`` means 3 (with "heavy_ball": the
            deprecated name of ``friction``).
        solver: the ODE solver, as in :func:`compare`.
        stepsize_controller: the ODE step-size controller.
        dt0: initial ODE step.
        max_steps: ODE step limit.
        **deprecated: ``r=`` is the old name of ``damping`` (warns).

    Returns:
        An :class:`OrderFit` ``(order, time_steps, gaps)``.

    Raises:
        ValueError: for ``halvings < 1``, a non-positive step, :math:`t_1/h_0` not whole, or
            a hyperparameter of another method.
        TypeError: for an unknown keyword argument.

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
    hyper = _resolve(
        "convergence_order", method, alpha, beta, initial_speed, friction, damping, deprecated
    )
    if isinstance(halvings, bool) or not isinstance(halvings, int | np.integer) or halvings < 1:
        raise ValueError(f"halvings must be an integer >= 1, got halvings={halvings!r}")
    check_scalar("time_step", time_step, _POSITIVE)
    check_scalar("t1", t1, _POSITIVE)
    h0, t1 = concrete_float(time_step), concrete_float(t1)  # pyright: ignore[reportAssignmentType]
    if h0 is None or t1 is None:
        raise ValueError("t1 and time_step must be concrete numbers (they set the grids)")
    base_steps = round(t1 / h0)
    if base_steps < 1 or abs(base_steps * h0 - t1) > 1e-9 * max(1.0, t1):
        raise ValueError(f"t1 / time_step must be a whole number, got {t1!r} / {time_step!r}")
    dtype = jnp.result_type(float)
    options = _ode_options(solver, stepsize_controller, dt0, max_steps)
    ts = h0 * jnp.arange(base_steps + 1, dtype=dtype)
    ode = _solve_ode_jit(method, loss_fn, theta0, ts, hyper, options)
    steps_h, gaps = [], []
    for j in range(int(halvings) + 1):
        h = h0 / 2**j
        lr = jnp.asarray(h if method in ("inna", "gd") else h * h, dtype=dtype)
        sub = jnp.asarray(2**j)
        path, _ = _discrete(method, loss_fn, theta0, base_steps, sub, lr, hyper, None)
        steps_h.append(h)
        gaps.append(float(jnp.max(_tree_norms(path, ode))))
    steps_arr, gaps_arr = np.asarray(steps_h), np.asarray(gaps)
    order = float(np.polyfit(np.log(steps_arr), np.log(gaps_arr), 1)[0])
    return OrderFit(order, steps_arr, gaps_arr)
