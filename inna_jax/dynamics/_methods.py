r"""The four methods of :mod:`inna_jax.dynamics._compare`: names, hyperparameters, time axes.

For each ``method`` ("inna", "gd", "heavy_ball", "nesterov") this module holds what
:func:`~inna_jax.dynamics.compare`, :func:`~inna_jax.dynamics.discrete_path` and
:func:`~inna_jax.dynamics.convergence_order` share: the hyperparameters it takes (another
method's is an error) and their defaults, its optax optimizer, the time :math:`t_k` of its
iterate :math:`k`, and its ODE solved at given times (one call of the solvers of
:mod:`inna_jax.dynamics._solve`).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

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
    solve_din,
    solve_gradient_flow,
    solve_heavy_ball,
    solve_nesterov,
)
from inna_jax.inertial._inna import inna

METHODS = ("inna", "gd", "heavy_ball", "nesterov")


POSITIVE = Rule(0.0, True)


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


class Hyper(NamedTuple):
    """Every method's hyperparameters as arrays (unused ones hold their defaults), so that one
    compiled function per method serves every value."""

    alpha: jax.Array
    beta: jax.Array
    initial_speed: jax.Array
    friction: jax.Array
    damping: jax.Array


def resolve(func, method, alpha, beta, initial_speed, friction, damping, deprecated):
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
    return Hyper(*(as_array(v) for v in (alpha, beta, speed, friction, damping)))


def _takes(method):
    names = METHOD_HYPERPARAMETERS[method]
    if not names:
        return ", which takes no hyperparameter besides learning_rate"
    return f", which takes {', '.join(names)}"


def optimizer(method, lr, hyper):
    if method == "inna":
        return inna(lr, hyper.alpha, hyper.beta, initial_speed=hyper.initial_speed)
    if method == "gd":
        return optax.sgd(lr)
    return optax.sgd(lr, momentum=1 - hyper.friction * jnp.sqrt(lr))


def time_axis(method, lr, steps):
    if method in ("inna", "gd"):
        if callable(lr):
            gammas: Any = jax.vmap(lr)(jnp.arange(steps))
        else:
            gammas = jnp.full((steps,), lr)
        return jnp.concatenate([jnp.zeros(1, gammas.dtype), jnp.cumsum(gammas)])
    root = jnp.sqrt(jnp.asarray(lr))
    return root * jnp.arange(steps + 1, dtype=root.dtype)


def solve_ode(method, loss_fn, theta0, ts, hyper, ode_options):
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


solve_ode_jit = eqx.filter_jit(solve_ode)


def ode_options(solver, stepsize_controller, dt0, max_steps):
    """The ODE options, with ``dt0`` as an array (data for jit, not a constant)."""
    check_scalar("dt0", dt0, POSITIVE)
    return {
        "solver": solver,
        "stepsize_controller": stepsize_controller,
        "dt0": None if dt0 is None else jnp.asarray(dt0, dtype=jnp.result_type(float)),
        "max_steps": max_steps,
    }


def check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got steps={steps!r}")
    return int(steps)


def checked_learning_rate(method, learning_rate):
    """The learning rate: a schedule ("inna", "gd") or a checked float array."""
    if callable(learning_rate):
        if method not in ("inna", "gd"):
            raise ValueError(
                f"a learning-rate schedule is only allowed for 'inna' and 'gd', got {method!r}"
            )
        return learning_rate
    check_scalar("learning_rate", learning_rate, POSITIVE)
    return jnp.asarray(learning_rate, dtype=float)
