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

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._validation import concrete_float
from inna_jax.dynamics._discrete import DiscretePath as DiscretePath
from inna_jax.dynamics._discrete import discrete_path as discrete_path
from inna_jax.dynamics._discrete import nesterov_scan as nesterov_scan
from inna_jax.dynamics._discrete import run_discrete
from inna_jax.dynamics._hyper import (
    check_scalar,
)
from inna_jax.dynamics._methods import METHODS as METHODS
from inna_jax.dynamics._methods import (
    POSITIVE,
    check_steps,
    checked_learning_rate,
    ode_options,
    resolve,
    solve_ode,
    solve_ode_jit,
    time_axis,
)
from inna_jax.dynamics._solve import (
    DEFAULT_MAX_STEPS,
)


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


def _tree_norms(a, b):
    sq = jax.tree.map(lambda x, y: jnp.sum((x - y).reshape(x.shape[0], -1) ** 2, axis=1), a, b)
    return jnp.sqrt(sum(jax.tree.leaves(sq)))


@eqx.filter_jit
def _compare(method, loss_fn, theta0, steps, lr, hyper, ode_options):
    ts = time_axis(method, lr, steps)
    discrete, _ = run_discrete(method, loss_fn, theta0, steps, 1, lr, hyper, None)
    continuous = solve_ode(method, loss_fn, theta0, ts, hyper, ode_options)
    gaps = _tree_norms(discrete, continuous)
    return Comparison(ts, discrete, continuous, gaps, jnp.max(gaps))


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
    hyper = resolve("compare", method, alpha, beta, initial_speed, friction, damping, deprecated)
    steps = check_steps(steps)
    lr = checked_learning_rate(method, learning_rate)
    options = ode_options(solver, stepsize_controller, dt0, max_steps)
    return _compare(method, loss_fn, theta0, steps, lr, hyper, options)


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
    hyper = resolve(
        "convergence_order", method, alpha, beta, initial_speed, friction, damping, deprecated
    )
    if isinstance(halvings, bool) or not isinstance(halvings, int | np.integer) or halvings < 1:
        raise ValueError(f"halvings must be an integer >= 1, got halvings={halvings!r}")
    check_scalar("time_step", time_step, POSITIVE)
    check_scalar("t1", t1, POSITIVE)
    h0, t1 = concrete_float(time_step), concrete_float(t1)  # pyright: ignore[reportAssignmentType]
    if h0 is None or t1 is None:
        raise ValueError("t1 and time_step must be concrete numbers (they set the grids)")
    base_steps = round(t1 / h0)
    if base_steps < 1 or abs(base_steps * h0 - t1) > 1e-9 * max(1.0, t1):
        raise ValueError(f"t1 / time_step must be a whole number, got {t1!r} / {time_step!r}")
    dtype = jnp.result_type(float)
    options = ode_options(solver, stepsize_controller, dt0, max_steps)
    ts = h0 * jnp.arange(base_steps + 1, dtype=dtype)
    ode = solve_ode_jit(method, loss_fn, theta0, ts, hyper, options)
    steps_h, gaps = [], []
    for j in range(int(halvings) + 1):
        h = h0 / 2**j
        lr = jnp.asarray(h if method in ("inna", "gd") else h * h, dtype=dtype)
        sub = jnp.asarray(2**j)
        path, _ = run_discrete(method, loss_fn, theta0, base_steps, sub, lr, hyper, None)
        steps_h.append(h)
        gaps.append(float(jnp.max(_tree_norms(path, ode))))
    steps_arr, gaps_arr = np.asarray(steps_h), np.asarray(gaps)
    order = float(np.polyfit(np.log(steps_arr), np.log(gaps_arr), 1)[0])
    return OrderFit(order, steps_arr, gaps_arr)
