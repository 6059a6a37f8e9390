r"""Vector fields of DIN and of the ODE limits of gradient descent, heavy ball and Nesterov.

Each factory returns an :class:`equinox.Module` ``f(t, y, args)``, ready for
``diffrax.ODETerm``. The state ``y`` is a pytree (for DIN a pair ``(theta, psi)``, for the
second-order ODEs a pair ``(theta, velocity)``), and ``grad_fn`` is any function mapping a
pytree like ``theta`` to one of the same structure: ``jax.grad(loss)``, or a linear map such
as :math:`u \mapsto K(u - y)` for function-space dynamics. Hyperparameters are array fields
of the module, so they may be traced and vmapped, and a solve jit-compiled once serves every
value.

Names and defaults are the vocabulary of :mod:`inna_jax.dynamics`: INNA's ``alpha`` (0.5) and
``beta`` (0.1), heavy ball's ``friction`` :math:`a` (1.0), Nesterov's ``damping`` :math:`r`
(3.0). Time scalings (Su, Boyd, Candès 2016, §2; Bu, Xu, Chen 2021, §3): INNA and gradient
descent with steps :math:`\gamma_k` follow their ODE on :math:`t_k = \sum_{i<k}\gamma_i`;
heavy ball with step :math:`\eta` and momentum :math:`b = 1 - a\sqrt\eta`, and Nesterov with
momentum :math:`(k-1)/(k+r-1)`, follow theirs on :math:`t = k\sqrt\eta`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from jax.typing import ArrayLike

from inna_jax.dynamics._hyper import (
    ALPHA,
    BETA,
    DAMPING,
    FRICTION,
    SCALE,
    Rule,
    as_array,
    check_scalar,
    resolve_aliases,
)

GradFn = Callable[[Any], Any]
_NONNEGATIVE = Rule(0.0, False)


def _axpy(*terms: tuple[ArrayLike, Any]) -> Any:
    """The pytree :math:`\\sum_i c_i x_i` for pairs ``(c_i, x_i)`` of one structure."""
    coefs, trees = zip(*terms, strict=True)

    def leaf(*xs):
        return sum(c * x for c, x in zip(coefs, xs, strict=True))

    return jax.tree.map(leaf, *trees)


class _DinField(eqx.Module):
    grad_fn: GradFn
    alpha: jax.Array
    beta: jax.Array

    def __call__(self, t, y, args):
        theta, psi = y
        inv_b = 1 / self.beta
        phi = _axpy((inv_b - self.alpha, theta), (-inv_b, psi))
        return _axpy((1.0, phi), (-self.beta, self.grad_fn(theta))), phi


class _DinHessianField(eqx.Module):
    grad_fn: GradFn
    alpha: jax.Array
    beta: jax.Array

    def __call__(self, t, y, args):
        theta, velocity = y
        grad, hvp = jax.jvp(self.grad_fn, (theta,), (velocity,))
        accel = _axpy((-self.alpha, velocity), (-self.beta, hvp), (-1.0, grad))
        return velocity, accel


class _GradientFlowField(eqx.Module):
    grad_fn: GradFn
    scale: jax.Array

    def __call__(self, t, y, args):
        return jax.tree.map(lambda g: -self.scale * g, self.grad_fn(y))


class _HeavyBallField(eqx.Module):
    grad_fn: GradFn
    friction: jax.Array

    def __call__(self, t, y, args):
        theta, velocity = y
        accel = _axpy((-self.friction, velocity), (-1.0, self.grad_fn(theta)))
        return velocity, accel


class _NesterovField(eqx.Module):
    grad_fn: GradFn
    damping: jax.Array

    def __call__(self, t, y, args):
        theta, velocity = y
        accel = _axpy((-self.damping / t, velocity), (-1.0, self.grad_fn(theta)))
        return velocity, accel


def din_vector_field(
    grad_fn: GradFn, alpha: ArrayLike = ALPHA, beta: ArrayLike = BETA
) -> eqx.Module:
    r"""The first-order, Hessian-free DIN system in :math:`(\theta, \psi)`.

    .. math::

        \dot\theta &= -\beta\nabla J(\theta) - (\alpha - 1/\beta)\,\theta - \psi/\beta \\
        \dot\psi &= -(\alpha - 1/\beta)\,\theta - \psi/\beta

    For :math:`J` of class :math:`C^2` it is equivalent to :func:`din_hessian_form` through
    :math:`\psi = -\beta\dot\theta - \beta^2\nabla J(\theta) - (\alpha\beta - 1)\theta`; the
    initial :math:`\psi_0` for :math:`\dot\theta(0) = -s\nabla J(\theta_0)` is
    :func:`inna_jax.inna_psi0`. INNA (:func:`inna_jax.inna_step`) is its explicit Euler step.
    Only gradients are evaluated, so the field is defined for nonsmooth :math:`J` too
    (where DIN is a differential inclusion).

    Args:
        grad_fn: :math:`\nabla J`, a function of a pytree ``theta``.
        alpha: friction :math:`\alpha > 0` (default 0.5, as :func:`inna_jax.inna`).
        beta: Newtonian damping :math:`\beta > 0` (default 0.1, as :func:`inna_jax.inna`).

    Returns:
        A callable module ``f(t, (theta, psi), args) -> (dtheta, dpsi)``.

    Raises:
        ValueError: for a concrete :math:`\alpha \le 0` or :math:`\beta \le 0`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import din_vector_field
        >>> f = din_vector_field(jax.grad(lambda x: 0.5 * jnp.sum(x**2)), alpha=0.5, beta=0.1)
        >>> dtheta, dpsi = f(0.0, (jnp.array([1.0]), jnp.array([0.95])), None)
        >>> round(float(dtheta[0]), 4), round(float(dpsi[0]), 4)
        (-0.1, 0.0)

    References:
        Alvarez, Attouch, Bolte, Redont, "A second-order gradient-like dissipative dynamical
        system with Hessian-driven damping", J. Math. Pures Appl. 81 (2002).
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2.
    """
    check_scalar("alpha", alpha)
    check_scalar("beta", beta)
    return _DinField(grad_fn, as_array(alpha), as_array(beta))


def din_hessian_form(
    grad_fn: GradFn, alpha: ArrayLike = ALPHA, beta: ArrayLike = BETA
) -> eqx.Module:
    r"""DIN as a second-order ODE in :math:`(\theta, \dot\theta)`, with Hessian damping.

    .. math::

        \ddot\theta + \alpha\dot\theta + \beta\nabla^2 J(\theta)\,\dot\theta
        + \nabla J(\theta) = 0

    The product :math:`\nabla^2 J(\theta)\dot\theta` is one forward-mode
    Hessian-vector product, ``jax.jvp(grad_fn, (theta,), (velocity,))``, which also returns
    :math:`\nabla J(\theta)`; the Hessian is never materialised. This form needs :math:`J`
    of class :math:`C^2`; for nonsmooth losses use :func:`din_vector_field`.

    Args:
        grad_fn: :math:`\nabla J`, a differentiable function of a pytree ``theta``.
        alpha: friction :math:`\alpha > 0` (default 0.5).
        beta: Hessian damping :math:`\beta \ge 0` (default 0.1; 0 gives
            :func:`heavy_ball_ode` with ``friction=alpha``).

    Returns:
        A callable module ``f(t, (theta, velocity), args) -> (velocity, acceleration)``.

    Raises:
        ValueError: for a concrete :math:`\alpha \le 0` or :math:`\beta < 0`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import din_hessian_form
        >>> f = din_hessian_form(jax.grad(lambda x: jnp.sum(x**2)), alpha=0.5, beta=0.1)
        >>> v, a = f(0.0, (jnp.array([1.0]), jnp.array([-1.0])), None)
        >>> a.round(4)
        Array([-1.3], dtype=float32)

    References:
        Alvarez, Attouch, Bolte, Redont, J. Math. Pures Appl. 81 (2002).
        Castera, Bolte, Févotte, Pauwels, JMLR 22 (2021), Section 2.
    """
    check_scalar("alpha", alpha)
    check_scalar("beta", beta, _NONNEGATIVE)
    return _DinHessianField(grad_fn, as_array(alpha), as_array(beta))


def gradient_flow(grad_fn: GradFn, scale: ArrayLike = SCALE) -> eqx.Module:
    r"""The gradient flow :math:`\dot\theta = -c\,\nabla L(\theta)`, the ODE limit of GD.

    Gradient descent with steps :math:`\gamma_k` follows it on :math:`t_k = \sum_{i<k}
    \gamma_i` with :math:`c = 1`. Heavy ball with a *fixed* momentum :math:`b` and
    :math:`t = k\eta` tends to the rescaled flow with :math:`c = 1/(1 - b)`.

    Args:
        grad_fn: :math:`\nabla L`, a function of a pytree ``theta``.
        scale: :math:`c > 0` (default 1).

    Returns:
        A callable module ``f(t, theta, args) -> dtheta``.

    Raises:
        ValueError: for a concrete ``scale`` :math:`\le 0`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import gradient_flow
        >>> f = gradient_flow(jax.grad(lambda x: jnp.sum(x**2)))
        >>> f(0.0, jnp.array([1.0, -2.0]), None)
        Array([-2.,  4.], dtype=float32)

    References:
        Bu, Xu, Chen, "A Dynamical View on Optimization Algorithms of Overparameterized
        Neural Networks", AISTATS 2021.
    """
    check_scalar("scale", scale)
    return _GradientFlowField(grad_fn, as_array(scale))


def heavy_ball_ode(
    grad_fn: GradFn, friction: ArrayLike = FRICTION, **deprecated: Any
) -> eqx.Module:
    r"""The heavy-ball ODE :math:`\ddot\theta + a\dot\theta + \nabla L(\theta) = 0`.

    Heavy ball, :math:`\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k) + b(\theta_k -
    \theta_{k-1})`, tends to it with :math:`t = k\sqrt\eta` and :math:`b = 1 - a\sqrt\eta`,
    i.e. :math:`a = (1 - b)/\sqrt\eta`. The velocity :math:`\dot\theta` is in units of
    :math:`t`, so :math:`\theta_k - \theta_{k-1} \approx \sqrt\eta\,\dot\theta(t_k)`.

    Args:
        grad_fn: :math:`\nabla L`, a function of a pytree ``theta``.
        friction: :math:`a \ge 0` (default 1).
        **deprecated: ``damping=`` is the old name of ``friction`` (warns).

    Returns:
        A callable module ``f(t, (theta, velocity), args) -> (velocity, acceleration)``.

    Raises:
        ValueError: for a concrete negative or non-finite ``friction``.
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import heavy_ball_ode
        >>> f = heavy_ball_ode(jax.grad(lambda x: 0.5 * jnp.sum(x**2)), friction=2.0)
        >>> f(0.0, (jnp.array([1.0]), jnp.array([0.5])), None)
        (Array([0.5], dtype=float32), Array([-2.], dtype=float32))

    References:
        Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
        Bu, Xu, Chen, AISTATS 2021, §3.
    """
    if deprecated:
        friction = resolve_aliases(
            "heavy_ball_ode", deprecated, {"damping": "friction"}, {"friction": friction},
            ("friction",),
        ).get("friction", friction)  # fmt: skip
    check_scalar("friction", friction)
    return _HeavyBallField(grad_fn, as_array(friction))


def nesterov_ode(grad_fn: GradFn, damping: ArrayLike = DAMPING, **deprecated: Any) -> eqx.Module:
    r"""The Nesterov ODE :math:`\ddot X + (r/t)\dot X + \nabla f(X) = 0`.

    Nesterov's method :math:`x_k = y_{k-1} - s\nabla f(y_{k-1})`, :math:`y_k = x_k +
    \frac{k-1}{k+r-1}(x_k - x_{k-1})` tends to it with :math:`t = k\sqrt s` (:math:`r = 3`
    is the classical :math:`(k-1)/(k+2)`). The damping :math:`r/t` is singular at
    :math:`t = 0`, so solve from some :math:`t_0 > 0` (see :func:`solve_nesterov`).

    Args:
        grad_fn: :math:`\nabla f`, a function of a pytree ``X``.
        damping: the damping constant :math:`r > 0` of :math:`r/t` (default 3).
        **deprecated: ``r=`` is the old name of ``damping`` (warns).

    Returns:
        A callable module ``f(t, (X, velocity), args) -> (velocity, acceleration)``.

    Raises:
        ValueError: for a concrete ``damping`` :math:`\le 0` or not finite.
        TypeError: for an unknown keyword argument.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inna_jax.dynamics import nesterov_ode
        >>> f = nesterov_ode(jax.grad(lambda x: 0.5 * jnp.sum(x**2)))
        >>> f(1.0, (jnp.array([1.0]), jnp.array([0.5])), None)
        (Array([0.5], dtype=float32), Array([-2.5], dtype=float32))

    References:
        Su, Boyd, Candès, "A Differential Equation for Modeling Nesterov's Accelerated
        Gradient Method", JMLR 17 (2016), §2.
    """
    if deprecated:
        damping = resolve_aliases(
            "nesterov_ode", deprecated, {"r": "damping"}, {"damping": damping}, ("damping",)
        ).get("damping", damping)
    check_scalar("damping", damping)
    return _NesterovField(grad_fn, as_array(damping))
