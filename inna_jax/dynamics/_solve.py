r"""Solving DIN and the ODE limits with diffrax, with defaults that survive nonsmooth losses.

**Defaults.** ``solver=None`` means ``diffrax.Tsit5()`` and ``stepsize_controller=None`` means
:func:`default_controller`: ``diffrax.PIDController(rtol=1e-6, atol=1e-9, dtmin=1e-4,
force_dtmin=True)``, with ``max_steps=DEFAULT_MAX_STEPS`` (:math:`2^{20}`). What we measured
with diffrax 0.7.2 on Figure 1's :math:`J(\theta) = 100(\theta_2 - |\theta_1|)^2 + |1 -
\theta_1|` from :math:`(-1, 1.5)`: once the path reaches the kink :math:`\theta_2 =
|\theta_1|` it chatters across it, and an adaptive solver needs about 950 steps per unit of
time from then on (13,000 steps to :math:`t = 20` for :math:`\beta = 0.1`, 54,000 to
:math:`t = 60`, 95,000 to :math:`t = 100`). diffrax's default ``max_steps=4096`` therefore
fails ("The maximum number of solver steps was reached") for :math:`\beta = 0.1` already at
:math:`t = 20`, and the implicit ``Kvaerno5`` fails the same way (all three panels) even with
``max_steps=100_000``. With :math:`2^{20}` steps Tsit5 reaches :math:`(1, 1)` to within
:math:`5\cdot10^{-5}` on all three panels. The ``dtmin`` floor with ``force_dtmin=True`` is the
safeguard: the controller may never shrink the step below ``1e-4`` at a kink, so the cost of a
solve is bounded by about :math:`t_1/10^{-4}` accepted steps, and ``max_steps`` covers that for
:math:`t_1 \le 104`; on Figure 1 the floor is rarely hit and the step counts match the
unfloored controller's to within 1%. On smooth problems the floor is never reached and the
solve is an ordinary adaptive Tsit5 solve at ``rtol=1e-6``. Fixed steps
(``diffrax.ConstantStepSize()`` with ``dt0=1e-3``) also survive the kinks.

**Compilation.** Each solve runs one ``equinox.filter_jit``-compiled function. Hyperparameters,
times and initial points are passed as arrays, so a second call with other values does not
recompile, as long as ``loss_fn`` is the same Python object (define it once, or make it an
``equinox.Module`` or ``jax.tree_util.Partial`` holding its data). All solves are vmappable over
hyperparameters and initial points; :func:`inna_jax.dynamics.solve_grid` solves a whole grid
of hyperparameters in one call, with the strategy that is fastest for the step-size
controller.

**Names and checks.** The hyperparameters are named as everywhere in
:mod:`inna_jax.dynamics`: ``alpha``, ``beta``, ``initial_speed`` (DIN), ``friction`` (heavy
ball's :math:`a`), ``damping`` (Nesterov's :math:`r`), ``scale`` (gradient flow). A concrete
bad value raises a one-line ``ValueError`` before anything is compiled; a traced one (under
``jit`` or ``vmap``) is checked inside the compiled solve (:func:`equinox.error_if`), so a
vmapped grid with :math:`\beta = 0` in it fails with a message about ``beta``, not with
diffrax's "maximum number of solver steps".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from inna_jax._validation import concrete_float
from inna_jax.dynamics._fields import (
    din_vector_field,
    gradient_flow,
    heavy_ball_ode,
    nesterov_ode,
)
from inna_jax.dynamics._hyper import (
    ALPHA,
    BETA,
    DAMPING,
    FRICTION,
    SCALE,
    Rule,
    as_array,
    check_scalar,
    guard,
    resolve_aliases,
)
from inna_jax.inertial._inna import inna_psi0

DEFAULT_MAX_STEPS = 2**20
"""Default ``max_steps``: :math:`t_1/\\text{dtmin}` steps for :math:`t_1 \\approx 105`."""

DEFAULT_NUM_SAVES = 101
"""With ``ts=None``, the solution is saved at this many evenly spaced times."""

LossFn = Callable[[Any], jax.Array]


def default_controller() -> diffrax.PIDController:
    """The default step-size controller, which survives kinks (see the module docstring).

    Returns:
        ``diffrax.PIDController(rtol=1e-6, atol=1e-9, dtmin=1e-4, force_dtmin=True)``.

    Example:
        >>> from inna_jax.dynamics import default_controller
        >>> default_controller().dtmin
        0.0001
    """
    return diffrax.PIDController(rtol=1e-6, atol=1e-9, dtmin=1e-4, force_dtmin=True)


class _Grad(eqx.Module):
    """``jax.grad(loss_fn)`` as a module whose only static part is ``loss_fn`` (stable jit key)."""

    loss_fn: LossFn

    def __call__(self, theta):
        return jax.grad(self.loss_fn)(theta)


class DinSolution(NamedTuple):
    """A DIN solve.

    Attributes:
        ts: the save times, shape ``(n,)``.
        theta: :math:`\\theta(t)`, a pytree like ``theta0`` with a leading axis of size ``n``.
        psi: :math:`\\psi(t)`, same structure.
        num_steps: number of solver steps taken.
    """

    ts: jax.Array
    theta: Any
    psi: Any
    num_steps: jax.Array


class SecondOrderSolution(NamedTuple):
    """A heavy-ball or Nesterov solve.

    Attributes:
        ts: the save times, shape ``(n,)``.
        theta: :math:`\\theta(t)`, a pytree like ``theta0`` with a leading axis of size ``n``.
        velocity: :math:`\\dot\\theta(t)`, same structure.
        num_steps: number of solver steps taken.
    """

    ts: jax.Array
    theta: Any
    velocity: Any
    num_steps: jax.Array


class FlowSolution(NamedTuple):
    """A gradient-flow solve.

    Attributes:
        ts: the save times, shape ``(n,)``.
        theta: :math:`\\theta(t)`, a pytree like ``theta0`` with a leading axis of size ``n``.
        num_steps: number of solver steps taken.
    """

    ts: jax.Array
    theta: Any
    num_steps: jax.Array


def _nesterov_series(theta0, g0, damping, t):
    """The start of the Nesterov solution at rest: (X(t), X'(t)) up to O(t^4), O(t^3)."""
    x = jax.tree.map(lambda x, g: x - t**2 / (2 * (damping + 1)) * g, theta0, g0)
    v = jax.tree.map(lambda g: -t / (damping + 1) * g, g0)
    return x, v


def _field_and_start(kind, grad_fn, theta0, hyper, extra, t0) -> tuple[Any, Any]:
    """The vector field and the initial state of one of the four ODEs."""
    if kind == "din":
        alpha, beta, speed = hyper["alpha"], hyper["beta"], hyper["initial_speed"]
        psi0 = inna_psi0(theta0, grad_fn(theta0), alpha=alpha, beta=beta, initial_speed=speed)
        return din_vector_field(grad_fn, alpha, beta), (theta0, psi0)
    if kind == "flow":
        return gradient_flow(grad_fn, hyper["scale"]), theta0
    if kind == "heavy_ball":
        velocity0 = jax.tree.map(jnp.zeros_like, theta0) if extra is None else extra
        return heavy_ball_ode(grad_fn, hyper["friction"]), (theta0, velocity0)
    damping = hyper["damping"]
    return nesterov_ode(grad_fn, damping), _nesterov_series(theta0, grad_fn(theta0), damping, t0)


@eqx.filter_jit
def _integrate(kind, loss_fn, theta0, hyper, extra, t0, t1, ts, solver, controller, dt0, steps):
    grad_fn = _Grad(loss_fn)
    # traced hyperparameters (vmap, jit) are checked here, at run time, with their names
    hyper = {name: guard(name, value) for name, value in hyper.items()}
    field, y0 = _field_and_start(kind, grad_fn, theta0, hyper, extra, t0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        saveat=diffrax.SaveAt(ts=jnp.maximum(ts, t0)),
        stepsize_controller=controller,
        max_steps=steps,
    )
    ys = sol.ys
    if kind == "nesterov":
        # save times before t0 (such as t = 0) come from the series at 0
        early = ts < t0
        g0 = grad_fn(theta0)
        series = jax.vmap(lambda t: _nesterov_series(theta0, g0, hyper["damping"], t))(ts)

        def fill(solved, start):
            mask = early.reshape((-1,) + (1,) * (solved.ndim - 1))
            return jnp.where(mask, start, solved)

        ys = jax.tree.map(fill, ys, series)
    return ts, ys, sol.stats["num_steps"]


def _run(
    kind,
    loss_fn,
    theta0,
    hyper,
    extra=None,
    *,
    t0,
    t1,
    ts,
    solver,
    stepsize_controller,
    dt0,
    max_steps,
) -> tuple[jax.Array, Any, jax.Array]:
    """Validates the options and calls the compiled integrator (hyperparameters as arrays)."""
    for name, value in hyper.items():
        check_scalar(name, value)
    check_scalar("t0", t0, Rule(0.0, False))
    t0_value = concrete_float(t0)
    check_scalar("t1", t1, Rule(0.0 if t0_value is None else t0_value, True))
    if isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got max_steps={max_steps!r}")
    solver = diffrax.Tsit5() if solver is None else solver
    controller = default_controller() if stepsize_controller is None else stepsize_controller
    if dt0 is None and isinstance(controller, diffrax.ConstantStepSize):
        raise ValueError("dt0 is required with a constant step size, got dt0=None")
    check_scalar("dt0", dt0, Rule(0.0, True))
    t0 = jnp.asarray(t0, dtype=float)
    t1 = jnp.asarray(t1, dtype=float)
    if ts is None:
        ts = jnp.linspace(0.0, t1, DEFAULT_NUM_SAVES)
    ts = jnp.asarray(ts, dtype=t1.dtype)
    if ts.ndim != 1:
        raise ValueError(f"ts must be a 1-d array of times, got shape {ts.shape}")
    dt0 = None if dt0 is None else jnp.asarray(dt0, dtype=t1.dtype)
    hyper = {name: as_array(value) for name, value in hyper.items()}
    return _integrate(
        kind, loss_fn, theta0, hyper, extra, t0, t1, ts, solver, controller, dt0, int(max_steps)
    )


_SOLVER_ARGS = ("ts", "solver", "stepsize_controller", "dt0", "max_steps")


def _solver_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The solver options (:data:`_SOLVER_ARGS`) among a solve function's arguments."""
    return {name: arguments[name] for name in _SOLVER_ARGS}


def solve_din(
    loss_fn: LossFn,
    theta0: Any,
    *,
    t1: ArrayLike,
    alpha: ArrayLike = ALPHA,
    beta: ArrayLike = BETA,
    initial_speed: ArrayLike | None = None,
    ts: ArrayLike | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> DinSolution:
    r"""Solves DIN, :func:`din_vector_field`, from :math:`t = 0` to :math:`t_1` with diffrax.

    The initial point is :math:`(\theta_0, \psi_0)` with :math:`\psi_0` =
    :func:`inna_jax.inna_psi0` :math:`(\theta_0, \nabla J(\theta_0))`, i.e. the initial
    velocity :math:`\dot\theta(0) = -s\nabla J(\theta_0)`: the same mapping as the optimizer,
    so INNA with ``initial_speed=s`` is the Euler discretisation of this very solution.
    The defaults are :func:`inna_jax.inna`'s (:math:`\alpha = 0.5`, :math:`\beta = 0.1`,
    :math:`s = \beta`), and the solver's survive nonsmooth losses (see
    :mod:`inna_jax.dynamics._solve`).

    Args:
        loss_fn: :math:`J`, a scalar function of the pytree ``theta``.
        theta0: :math:`\theta_0`, any pytree of arrays.
        t1: final time :math:`t_1 > 0`.
        alpha: friction :math:`\alpha > 0` (may be traced, e.g. under ``vmap``).
        beta: Newtonian damping :math:`\beta > 0`.
        initial_speed: :math:`s \ge 0`; ``None`` means :math:`s = \beta`, as in ``inna``.
        ts: save times in :math:`[0, t_1]`; ``None`` means 101 evenly spaced times.
        solver: any diffrax solver; ``None`` means ``diffrax.Tsit5()``.
        stepsize_controller: any diffrax controller; ``None`` means
            :func:`default_controller`.
        dt0: initial step; ``None`` lets an adaptive controller choose it (required for
            ``diffrax.ConstantStepSize``).
        max_steps: solver step limit (static).

    Returns:
        A :class:`DinSolution` ``(ts, theta, psi, num_steps)``.

    Raises:
        ValueError: for :math:`t_1 \le 0`, :math:`\alpha, \beta` not finite and positive,
            :math:`s` not finite and non-negative, an array where a number is expected (use
            :func:`inna_jax.dynamics.solve_grid` for grids), ``ts`` not 1-d, or a constant step
            size without ``dt0``. A traced bad value raises at run time, naming the argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import solve_din
        >>> loss = lambda x: 100 * (x[1] - jnp.abs(x[0])) ** 2 + jnp.abs(1 - x[0])
        >>> sol = solve_din(loss, jnp.array([-1.0, 1.5]), t1=20.0, alpha=0.5, beta=0.1,
        ...                 ts=jnp.array([20.0]))
        >>> [round(float(x), 2) for x in sol.theta[-1]]
        [1.0, 1.0]

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2. Kidger, "On Neural Differential Equations", 2021 (diffrax).
    """
    speed = beta if initial_speed is None else initial_speed
    ts, (theta, psi), num_steps = _run(
        "din",
        loss_fn,
        theta0,
        {"alpha": alpha, "beta": beta, "initial_speed": speed},
        t0=0.0,
        t1=t1,
        **_solver_options(locals()),
    )
    return DinSolution(ts, theta, psi, num_steps)


def solve_gradient_flow(
    loss_fn: LossFn,
    theta0: Any,
    *,
    t1: ArrayLike,
    scale: ArrayLike = SCALE,
    ts: ArrayLike | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> FlowSolution:
    r"""Solves the gradient flow :math:`\dot\theta = -c\nabla L(\theta)` from :math:`\theta_0`.

    Gradient descent with steps :math:`\gamma_k` follows it on :math:`t_k = \sum_{i<k}
    \gamma_i`. See :func:`solve_din` for the solver options and defaults.

    Args:
        loss_fn: :math:`L`, a scalar function of the pytree ``theta``.
        theta0: :math:`\theta_0`, any pytree of arrays.
        t1: final time :math:`t_1 > 0`.
        scale: :math:`c > 0` (default 1; see :func:`gradient_flow`).
        ts: save times in :math:`[0, t_1]`; ``None`` means 101 evenly spaced times.
        solver: any diffrax solver; ``None`` means ``diffrax.Tsit5()``.
        stepsize_controller: any diffrax controller; ``None`` means
            :func:`default_controller`.
        dt0: initial step (required for ``diffrax.ConstantStepSize``).
        max_steps: solver step limit (static).

    Returns:
        A :class:`FlowSolution` ``(ts, theta, num_steps)``.

    Raises:
        ValueError: for :math:`t_1 \le 0`, a bad ``scale`` or bad solver options.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import solve_gradient_flow
        >>> sol = solve_gradient_flow(lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0]),
        ...                           t1=1.0, ts=jnp.array([1.0]))
        >>> round(float(sol.theta[-1, 0]), 4)  # exp(-1)
        0.3679

    References:
        Bu, Xu, Chen, AISTATS 2021, §3.
    """
    ts, theta, num_steps = _run(
        "flow",
        loss_fn,
        theta0,
        {"scale": scale},
        t0=0.0,
        t1=t1,
        **_solver_options(locals()),
    )
    return FlowSolution(ts, theta, num_steps)


def solve_heavy_ball(
    loss_fn: LossFn,
    theta0: Any,
    *,
    t1: ArrayLike,
    friction: ArrayLike = FRICTION,
    velocity0: Any | None = None,
    ts: ArrayLike | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    **deprecated: Any,
) -> SecondOrderSolution:
    r"""Solves :math:`\ddot\theta + a\dot\theta + \nabla L(\theta) = 0` (:func:`heavy_ball_ode`).

    The start is :math:`\theta(0) = \theta_0` and :math:`\dot\theta(0) = v_0` (zero by
    default, which is the limit of heavy ball started with :math:`\theta_{-1} = \theta_0`).
    Time is :math:`t = k\sqrt\eta` for heavy ball with step :math:`\eta` and momentum
    :math:`b = 1 - a\sqrt\eta`. See :func:`solve_din` for the solver options and defaults.

    Args:
        loss_fn: :math:`L`, a scalar function of the pytree ``theta``.
        theta0: :math:`\theta_0`, any pytree of arrays.
        t1: final time :math:`t_1 > 0`.
        friction: :math:`a \ge 0` (default 1).
        velocity0: :math:`\dot\theta(0)`, a pytree like ``theta0``; ``None`` means zero.
        ts: save times in :math:`[0, t_1]`; ``None`` means 101 evenly spaced times.
        solver: any diffrax solver; ``None`` means ``diffrax.Tsit5()``.
        stepsize_controller: any diffrax controller; ``None`` means
            :func:`default_controller`.
        dt0: initial step (required for ``diffrax.ConstantStepSize``).
        max_steps: solver step limit (static).
        **deprecated: ``damping=`` is the old name of ``friction`` (warns; ``damping`` now
            names Nesterov's :math:`r`).

    Returns:
        A :class:`SecondOrderSolution` ``(ts, theta, velocity, num_steps)``.

    Raises:
        ValueError: for :math:`t_1 \le 0`, a negative friction, or bad solver options.
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import solve_heavy_ball
        >>> sol = solve_heavy_ball(lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0]),
        ...                        friction=2.0, t1=1.0, ts=jnp.array([1.0]))
        >>> round(float(sol.theta[-1, 0]), 4)  # critical damping: (1 + t) exp(-t)
        0.7358

    References:
        Polyak (1964). Bu, Xu, Chen, AISTATS 2021, §3.
    """
    if deprecated:
        friction = resolve_aliases(
            "solve_heavy_ball",
            deprecated,
            {"damping": "friction"},
            {"friction": friction},
            ("t1", "friction", "velocity0", *_SOLVER_ARGS),
        ).get("friction", friction)
    ts, (theta, velocity), num_steps = _run(
        "heavy_ball",
        loss_fn,
        theta0,
        {"friction": friction},
        velocity0,
        t0=0.0,
        t1=t1,
        **_solver_options(locals()),
    )
    return SecondOrderSolution(ts, theta, velocity, num_steps)


def solve_nesterov(
    loss_fn: LossFn,
    theta0: Any,
    *,
    t1: ArrayLike,
    damping: ArrayLike = DAMPING,
    t0: ArrayLike = 1e-3,
    ts: ArrayLike | None = None,
    solver: diffrax.AbstractSolver | None = None,
    stepsize_controller: diffrax.AbstractStepSizeController | None = None,
    dt0: ArrayLike | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    **deprecated: Any,
) -> SecondOrderSolution:
    r"""Solves the Nesterov ODE :math:`\ddot X + (r/t)\dot X + \nabla f(X) = 0`, at rest at 0.

    The damping :math:`r/t` is singular at 0, so the solver starts at :math:`t_0 > 0` from
    the series of the solution at 0,

    .. math::

        X(t) = x_0 - \frac{t^2}{2(r+1)}\nabla f(x_0) + O(t^4), \qquad
        \dot X(t) = -\frac{t}{r+1}\nabla f(x_0) + O(t^3),

    and save times :math:`t < t_0` (such as :math:`t = 0`) are filled from the same series.
    Time is :math:`t = k\sqrt s` for Nesterov's method with step :math:`s` and momentum
    :math:`(k-1)/(k+r-1)`. See :func:`solve_din` for the solver options and defaults.

    Args:
        loss_fn: :math:`f`, a scalar function of the pytree ``theta``.
        theta0: :math:`x_0`, any pytree of arrays.
        t1: final time, :math:`t_1 > t_0`.
        damping: the damping constant :math:`r > 0` of :math:`r/t` (default 3, the classical
            method).
        t0: start time of the solver, :math:`0 < t_0 < t_1`; keep
            :math:`t_0^2\|\nabla^2 f\|` small.
        ts: save times in :math:`[0, t_1]`; ``None`` means 101 evenly spaced times.
        solver: any diffrax solver; ``None`` means ``diffrax.Tsit5()``.
        stepsize_controller: any diffrax controller; ``None`` means
            :func:`default_controller`.
        dt0: initial step (required for ``diffrax.ConstantStepSize``).
        max_steps: solver step limit (static).
        **deprecated: ``r=`` is the old name of ``damping`` (warns).

    Returns:
        A :class:`SecondOrderSolution` ``(ts, theta, velocity, num_steps)``.

    Raises:
        ValueError: for :math:`t_0 \le 0`, :math:`t_1 \le t_0`, :math:`r \le 0`, or bad
            solver options.
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import solve_nesterov
        >>> sol = solve_nesterov(lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0]), t1=2.0,
        ...                      ts=jnp.array([0.0, 2.0]))
        >>> [round(float(x), 4) for x in sol.theta[:, 0]]  # 2 J1(t) / t
        [1.0, 0.5767]

    References:
        Su, Boyd, Candès, "A Differential Equation for Modeling Nesterov's Accelerated
        Gradient Method", JMLR 17 (2016), §2 and §3.
    """
    if deprecated:
        damping = resolve_aliases(
            "solve_nesterov",
            deprecated,
            {"r": "damping"},
            {"damping": damping},
            ("t1", "damping", "t0", *_SOLVER_ARGS),
        ).get("damping", damping)
    check_scalar("t0", t0)
    ts, (theta, velocity), num_steps = _run(
        "nesterov",
        loss_fn,
        theta0,
        {"damping": damping},
        t0=t0,
        t1=t1,
        **_solver_options(locals()),
    )
    return SecondOrderSolution(ts, theta, velocity, num_steps)
