r"""NTK function-space dynamics of gradient descent, heavy ball and Nesterov on MSE.

In the NTK regime a network trained on :math:`L = \tfrac12\|u - y\|^2` moves its predictions
:math:`u \in \mathbb{R}^n` on the training points by a *linear* ODE driven by the NTK Gram
matrix :math:`K`. Writing :math:`e = u - y` for the prediction error:

.. math::

    \text{GD:}\quad & \dot e = -K e \\
    \text{heavy ball:}\quad & \ddot e + a \dot e + K e = 0, \quad \dot e(0) = 0 \\
    \text{Nesterov:}\quad & \ddot e + \tfrac{r}{t} \dot e + K e = 0, \quad \dot e(0) = 0

with the time scalings of the discrete methods: :math:`t = k\eta` for GD,
:math:`t = k\sqrt\eta` and :math:`a = (1-b)/\sqrt\eta` for heavy ball with momentum :math:`b`,
and :math:`t = k\sqrt s` for Nesterov with momentum :math:`(k-1)/(k+r-1)` (:math:`r = 3` is
the classical one).

On each eigendirection of :math:`K` (eigenvalue :math:`\lambda`) the error is a scalar times

.. math::

    \text{GD: } e^{-\lambda t}, \qquad
    \text{HB: } \frac{s_2 e^{s_1 t} - s_1 e^{s_2 t}}{s_2 - s_1},\ s_{1,2} \text{ roots of }
    s^2 + a s + \lambda, \qquad
    \text{NAG: } \Gamma(\nu + 1) \Big(\frac{2}{\sqrt\lambda t}\Big)^{\nu} J_\nu(\sqrt\lambda t),
    \ \nu = \frac{r - 1}{2},

so with :math:`\lambda_0 = \lambda_{\min}(K)`, GD converges like :math:`e^{-\lambda_0 t}`, heavy
ball like :math:`e^{-c t}` with :math:`c = (a - \sqrt{\max(a^2 - 4\lambda_0, 0)})/2`, and
Nesterov only polynomially: the Bessel envelope gives :math:`\|e\| \sim t^{-r/2}`.

References:
    Bu, Xu and Chen, "A dynamical view on optimization algorithms of overparameterized neural
    networks", AISTATS 2021. Su, Boyd and Candès, "A differential equation for modeling
    Nesterov's accelerated gradient method", JMLR 2016.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.typing import ArrayLike

from inna_jax._validation import concrete_float
from inna_jax.dynamics._fields import gradient_flow, heavy_ball_ode, nesterov_ode
from inna_jax.dynamics._hyper import DAMPING, FRICTION, check_scalar

METHODS = ("gd", "heavy_ball", "nesterov")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")


def _check_kernel(kernel: Any, n: int | None = None) -> None:
    shape = np.shape(kernel)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"kernel must be a square (n, n) matrix, got shape {shape}")
    if n is not None and shape[0] != n:
        raise ValueError(f"kernel has shape {shape} but the predictions have length {n}")


_TAKES = {"gd": None, "heavy_ball": "friction", "nesterov": "damping"}
_MEANING = {"friction": "heavy ball's friction a", "damping": "Nesterov's damping r in r/t"}


def _hyper(method: str, friction: ArrayLike | None, damping: ArrayLike | None) -> ArrayLike:
    """The method's hyperparameter (a for heavy ball, r for Nesterov, 0 for GD), checked.

    ``friction`` applies only to heavy ball (default 1), ``damping`` only to Nesterov (default
    3): the names and defaults of :func:`inna_jax.dynamics.compare`.
    """
    _check_method(method)
    for name, value in (("friction", friction), ("damping", damping)):
        if value is not None and _TAKES[method] != name:
            takes = _TAKES[method] or "no hyperparameter"
            raise ValueError(
                f"{name} ({_MEANING[name]}) does not apply to method={method!r}, which takes "
                f"{takes}"
            )
        check_scalar(name, value)
    if method == "heavy_ball":
        return float(FRICTION) if friction is None else friction
    if method == "nesterov":
        return float(DAMPING) if damping is None else damping
    return 0.0


def _kernel_gradient(kernel: jax.Array, targets: jax.Array, u: jax.Array) -> jax.Array:
    """The NTK drive of the function-space ODE, K (u - y)."""
    return kernel @ (u - targets)


def function_space_vector_field(
    method: str,
    kernel: ArrayLike,
    targets: ArrayLike,
    *,
    friction: ArrayLike | None = None,
    damping: ArrayLike | None = None,
) -> Any:
    r"""The diffrax vector field of the NTK function-space ODE of ``method``.

    It is the parameter-space field of :mod:`inna_jax.dynamics` (:func:`gradient_flow`,
    :func:`heavy_ball_ode`, :func:`nesterov_ode`) with the gradient replaced by the NTK drive
    :math:`u \mapsto K(u - y)`:

    .. math::

        \text{gd: } \dot u = -K(u - y), \quad
        \text{heavy\_ball: } \ddot u = -a\dot u - K(u - y), \quad
        \text{nesterov: } \ddot u = -\tfrac{r}{t}\dot u - K(u - y).

    ``K`` and ``y`` are array leaves of the returned module (a ``jax.tree_util.Partial``
    inside), so one compiled solve serves every kernel of a given shape.

    Args:
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        kernel: the NTK Gram matrix ``(n, n)``.
        targets: :math:`y`, shape ``(n,)``.
        friction: "heavy_ball" only: :math:`a \ge 0`; ``None`` means 1.
        damping: "nesterov" only: :math:`r > 0`; ``None`` means 3.

    Returns:
        ``f(t, state, args)`` for ``diffrax.ODETerm``; the state is :math:`u` for GD and
        :math:`(u, \dot u)` otherwise.

    Raises:
        ValueError: for an unknown method, a hyperparameter of another method, or a bad
            value.

    Example:
        >>> import jax.numpy as jnp
        >>> f = function_space_vector_field(
        ...     "heavy_ball", 2.0 * jnp.eye(2), jnp.zeros(2), friction=1.0
        ... )
        >>> du, dv = f(0.0, (jnp.ones(2), jnp.zeros(2)), None)
        >>> [float(x) for x in dv]
        [-2.0, -2.0]

    References:
        Bu, Xu and Chen, AISTATS 2021, §3.
    """
    h = _hyper(method, friction, damping)
    drive = jax.tree_util.Partial(_kernel_gradient, jnp.asarray(kernel), jnp.asarray(targets))
    if method == "gd":
        return gradient_flow(drive)
    if method == "heavy_ball":
        return heavy_ball_ode(drive, h)
    return nesterov_ode(drive, h)


class FunctionSpaceSolution(NamedTuple):
    """Predictions of the NTK function-space ODE at the requested times.

    Attributes:
        ts: times, shape ``(T,)``.
        predictions: :math:`u(t)`, shape ``(T, n)``.
        loss: :math:`\\tfrac12\\|u(t) - y\\|^2`, shape ``(T,)``.
    """

    ts: jax.Array | np.ndarray
    predictions: jax.Array | np.ndarray
    loss: jax.Array | np.ndarray


def solve_function_space(
    method: str,
    kernel: ArrayLike,
    predictions0: ArrayLike,
    targets: ArrayLike,
    ts: ArrayLike,
    *,
    friction: ArrayLike | None = None,
    damping: ArrayLike | None = None,
    t0: float = 1e-4,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 100_000,
) -> FunctionSpaceSolution:
    r"""Solves the NTK function-space ODE of GD, heavy ball or Nesterov with diffrax.

    GD solves :math:`\dot u = -K(u - y)`; heavy ball :math:`\ddot u + a\dot u + K(u - y) = 0`
    and Nesterov :math:`\ddot u + (r/t)\dot u + K(u - y) = 0`, both from rest
    (:math:`\dot u(0) = 0`). Nesterov's :math:`r/t` is singular at 0, so its solve starts at
    ``t0 > 0`` from the series :math:`e(t_0) = e_0 - K e_0 t_0^2 / (2(r+1))`,
    :math:`\dot e(t_0) = -K e_0 t_0/(r+1)` (exact to :math:`O(t_0^4)`), and any requested time
    below ``t0`` reports the state at ``t0``.

    The default solver is Tsit5 with an adaptive PID controller: these ODEs are linear and
    smooth. Hyperparameters may be traced (they travel as diffrax ``args``).

    Args:
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        kernel: the NTK Gram matrix :math:`K`, shape ``(n, n)``, for the loss
            :math:`\tfrac12\|u - y\|^2` (divide it by ``n`` for a mean-squared loss).
        predictions0: :math:`u(0)`, shape ``(n,)``.
        targets: :math:`y`, shape ``(n,)``.
        ts: increasing times :math:`\ge 0` at which to report :math:`u`.
        friction: "heavy_ball" only: the friction :math:`a = (1 - b)/\sqrt\eta \ge 0`;
            ``None`` means 1.
        damping: "nesterov" only: :math:`r > 0` in :math:`r/t`; ``None`` means 3 (the
            classical method).
        t0: Nesterov's start time.
        solver: a diffrax solver (default ``diffrax.Tsit5()``).
        rtol: relative tolerance of the step-size controller (default 1e-8 in float64,
            1e-5 in float32).
        atol: absolute tolerance (default 1e-10 in float64, 1e-7 in float32).
        max_steps: diffrax's step budget.

    Returns:
        A :class:`FunctionSpaceSolution` with ``ts``, ``predictions`` and ``loss``.

    Raises:
        ValueError: for an unknown method, a hyperparameter of another method, a bad value,
            or shapes that do not match.

    Example:
        >>> import jax.numpy as jnp
        >>> sol = solve_function_space(
        ...     "gd", jnp.diag(jnp.array([1.0, 2.0])), jnp.zeros(2), jnp.ones(2), jnp.array([1.0])
        ... )
        >>> [round(float(u), 4) for u in sol.predictions[0]]  # 1 - exp(-lambda t)
        [0.6321, 0.8647]

    References:
        Bu, Xu and Chen, AISTATS 2021, §3 and §4 (Theorems on GD, HB and NAG in the NTK regime).
    """
    h = _hyper(method, friction, damping)
    check_scalar("t0", t0)
    kernel = jnp.asarray(kernel)
    u0 = jnp.asarray(predictions0)
    y = jnp.asarray(targets)
    if u0.ndim != 1 or u0.shape != y.shape:
        raise ValueError(
            f"predictions0 and targets must be vectors of one shape, got {u0.shape} and {y.shape}"
        )
    _check_kernel(kernel, u0.shape[0])
    ts = jnp.asarray(ts, dtype=u0.dtype)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of times, got shape {ts.shape}")
    dtype = jnp.result_type(kernel.dtype, u0.dtype, y.dtype)
    kernel, u0, y = kernel.astype(dtype), u0.astype(dtype), y.astype(dtype)
    h = jnp.asarray(h, dtype)
    wide = jnp.finfo(dtype).bits >= 64
    rtol = rtol if rtol is not None else (1e-8 if wide else 1e-5)
    atol = atol if atol is not None else (1e-10 if wide else 1e-7)
    # integrate the error e = u - y: the tolerances then scale with the error, not with y
    name = _TAKES[method]
    field = function_space_vector_field(
        method, kernel, jnp.zeros_like(y), **({name: h} if name else {})
    )
    e0 = u0 - y
    if method == "gd":
        start, state0, save_ts = 0.0, e0, ts
    elif method == "heavy_ball":
        start, state0, save_ts = 0.0, (e0, jnp.zeros_like(e0)), ts
    else:
        drive0 = kernel @ e0
        state0 = (e0 - drive0 * t0**2 / (2 * (h + 1)), -drive0 * t0 / (h + 1))
        start, save_ts = t0, jnp.maximum(ts, t0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver if solver is not None else diffrax.Tsit5(),
        t0=start,
        t1=save_ts[-1],
        dt0=None,
        y0=state0,
        saveat=diffrax.SaveAt(ts=save_ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    errors: Any = sol.ys if method == "gd" else cast(Any, sol.ys)[0]
    return FunctionSpaceSolution(ts, errors + y, 0.5 * jnp.sum(errors**2, axis=-1))


def _mode_profile(method: str, eigenvalues: np.ndarray, ts: np.ndarray, hyper: float) -> np.ndarray:
    """Per-eigendirection error profile phi(t), shape (T, n), with phi(0) = 1, phi'(0) = 0."""
    lam = np.maximum(eigenvalues, 0.0)[None, :]
    t = ts[:, None]
    if method == "gd":
        return np.exp(-lam * t)
    if method == "heavy_ball":
        a = hyper
        disc = np.sqrt((a * a - 4 * lam).astype(complex))
        s1, s2 = (-a + disc) / 2, (-a - disc) / 2
        close = np.abs(disc) < 1e-7 * max(a, 1.0)
        safe = np.where(close, 1.0, s2 - s1)
        generic = (s2 * np.exp(s1 * t) - s1 * np.exp(s2 * t)) / safe
        critical = (1 + a * t / 2) * np.exp(-a * t / 2)
        return np.where(close, critical, generic).real
    nu = (hyper - 1) / 2
    x = np.sqrt(lam) * t
    safe = np.where(x > 0, x, 1.0)
    bessel = scipy.special.gamma(nu + 1) * (2 / safe) ** nu * scipy.special.jv(nu, safe)
    return np.where(x > 0, bessel, 1.0)


def function_space_closed_form(
    method: str,
    kernel: ArrayLike,
    predictions0: ArrayLike,
    targets: ArrayLike,
    ts: ArrayLike,
    *,
    friction: float | None = None,
    damping: float | None = None,
) -> FunctionSpaceSolution:
    r"""The exact solution of the function-space ODE, by eigendecomposition of ``K``.

    With :math:`K = Q \Lambda Q^\top` and :math:`c = Q^\top (u_0 - y)`,
    :math:`u(t) = y + Q\,(\phi(t) \odot c)` where :math:`\phi` is, per eigenvalue
    :math:`\lambda`, :math:`e^{-\lambda t}` (GD), the heavy-ball two-root solution from rest,
    or the Bessel profile :math:`\Gamma(\nu+1)(2/x)^\nu J_\nu(x)`, :math:`x = \sqrt\lambda t`,
    :math:`\nu = (r-1)/2` (Nesterov; :math:`2J_1(x)/x` for :math:`r = 3`). Computed in NumPy
    float64 with SciPy's Bessel functions, so it needs concrete inputs.

    Args:
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        kernel: symmetric PSD ``(n, n)`` NTK Gram matrix.
        predictions0: :math:`u(0)`, shape ``(n,)``.
        targets: :math:`y`, shape ``(n,)``.
        ts: times :math:`\ge 0`.
        friction: "heavy_ball" only: :math:`a`; ``None`` means 1.
        damping: "nesterov" only: :math:`r`; ``None`` means 3.

    Returns:
        A :class:`FunctionSpaceSolution` (NumPy arrays).

    Example:
        >>> import numpy as np
        >>> sol = function_space_closed_form(
        ...     "nesterov", np.eye(1), np.zeros(1), np.ones(1), np.array([0.0, 2.0])
        ... )
        >>> [round(float(u), 4) for u in sol.predictions[:, 0]]  # 1 - 2 J1(t)/t
        [0.0, 0.4233]

    References:
        Su, Boyd and Candès, JMLR 2016, §3.2 (the Bessel solution for quadratics).
    """
    hyper = cast(float, concrete_float(_hyper(method, friction, damping)))
    k = np.asarray(kernel, dtype=np.float64)
    _check_kernel(k)
    y = np.asarray(targets, dtype=np.float64)
    e0 = np.asarray(predictions0, dtype=np.float64) - y
    ts = np.asarray(ts, dtype=np.float64)
    eigenvalues, q = np.linalg.eigh((k + k.T) / 2)
    phi = _mode_profile(method, eigenvalues, ts, hyper)
    errors = (phi * (q.T @ e0)[None, :]) @ q.T
    return FunctionSpaceSolution(ts, errors + y, 0.5 * np.sum(errors**2, axis=-1))


def predicted_rate(
    method: str,
    lambda_min: float,
    *,
    friction: float | None = None,
    damping: float | None = None,
) -> float:
    r"""The predicted decay rate of :math:`\|u(t) - y\|` in the NTK regime.

    - ``"gd"``: :math:`\|e(t)\| \le e^{-\lambda_0 t}\|e_0\|`, rate :math:`\lambda_0`.
    - ``"heavy_ball"``: rate :math:`c = (a - \sqrt{\max(a^2 - 4\lambda_0, 0)})/2`, at best
      :math:`\sqrt{\lambda_0}` when :math:`a = 2\sqrt{\lambda_0}`.
    - ``"nesterov"``: not exponential; the returned value is the *polynomial* exponent
      :math:`r/2` of the Bessel envelope, :math:`\|e(t)\| \sim t^{-r/2}` (loss
      :math:`\sim t^{-r}`) once :math:`\sqrt{\lambda_0} t \gg 1`.

    The loss :math:`\tfrac12\|e\|^2` decays at twice these rates (semilog slope :math:`-2c`,
    log-log slope :math:`-r` for Nesterov).

    Args:
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        lambda_min: :math:`\lambda_0 = \lambda_{\min}(K) > 0`.
        friction: "heavy_ball" only: :math:`a`; ``None`` means 1.
        damping: "nesterov" only: :math:`r`; ``None`` means 3.

    Returns:
        The rate (GD, heavy ball) or the polynomial exponent (Nesterov), a float.

    Example:
        >>> predicted_rate("heavy_ball", 0.25, friction=1.0)  # a = 2 sqrt(lambda0): optimal
        0.5
        >>> predicted_rate("nesterov", 0.25, damping=3.0)
        1.5

    References:
        Bu, Xu and Chen, AISTATS 2021, Theorems 1-3.
    """
    hyper = cast(float, concrete_float(_hyper(method, friction, damping)))
    lam = concrete_float(lambda_min)
    if lam is None or not lam > 0:
        raise ValueError(f"lambda_min must be a concrete number > 0, got {lambda_min!r}")
    if method == "gd":
        return lam
    if method == "heavy_ball":
        return float((hyper - np.sqrt(max(hyper * hyper - 4 * lam, 0.0))) / 2)
    return hyper / 2


def fit_log_slope(
    ts: ArrayLike,
    values: ArrayLike,
    *,
    t_min: float,
    t_max: float,
    loglog: bool = False,
) -> float:
    r"""Least-squares slope of :math:`\log v` against :math:`t` (or :math:`\log t`) on a window.

    For :math:`v = C e^{-\rho t}` the semilog slope is :math:`-\rho`; for :math:`v = C t^{-p}`
    the log-log slope is :math:`-p`.

    Args:
        ts: times, shape ``(T,)``.
        values: positive values (a loss), shape ``(T,)``.
        t_min: window start.
        t_max: window end.
        loglog: fit against :math:`\log t` instead of :math:`t`.

    Returns:
        The fitted slope, a float.

    Example:
        >>> import numpy as np
        >>> t = np.linspace(0.0, 10.0, 101)
        >>> round(fit_log_slope(t, 3 * np.exp(-0.7 * t), t_min=1.0, t_max=9.0), 6)
        -0.7

    References:
        Bu, Xu and Chen, AISTATS 2021, §5 (log-loss slopes per epoch).
    """
    t = np.asarray(ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    mask = (t >= t_min) & (t <= t_max)
    if mask.sum() < 2:
        raise ValueError(
            f"the window [t_min, t_max] = [{t_min}, {t_max}] holds {int(mask.sum())} of the "
            "times; it needs at least 2"
        )
    if np.any(v[mask] <= 0):
        raise ValueError("values must be > 0 on the window to take their logarithm")
    x = np.log(t[mask]) if loglog else t[mask]
    return float(np.polyfit(x, np.log(v[mask]), 1)[0])
