r"""Fitted temporal-difference policy evaluation with any optax optimizer (EGN included).

Each step draws a batch of transitions :math:`(x_i, \text{cost}_i, x_i')`, forms the TD
regression targets :math:`y_i = \text{cost}_i + \gamma V_{\theta^-}(x_i')` with frozen target
parameters :math:`\theta^-`, and takes one optimizer step on the regression loss

.. math::

    L(\theta) = \frac1{2b}\sum_i \big(V_\theta(x_i) - y_i\big)^2 ,

the mean-squared error that EGN solves in batch space. Every ``target_period`` steps the
target is refreshed, :math:`\theta^- \leftarrow \theta`. With features that represent the
Bellman backup exactly (quadratic features on an LQR problem) and an optimizer that fits each
regression, this is value iteration, :math:`P \leftarrow Q_K + \gamma A_K^\top P A_K`, which
converges to the exact :math:`P` at the rate :math:`\gamma\rho(A_K)^2` per target refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from inna_jax._validation import concrete_float
from inna_jax.rl._lqr import LQRProblem, sample_lqr_transitions

ValueFn = Callable[[Any, jax.Array], jax.Array]


class TDState(NamedTuple):
    """The carry of :func:`td_policy_evaluation`.

    Attributes:
        params: the value model's parameters :math:`\\theta`.
        target_params: the frozen :math:`\\theta^-` of the TD targets.
        opt_state: the optimizer's state.
        key: the random key of the next batch.
        step: the number of optimizer steps taken so far.
    """

    params: Any
    target_params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


def td_init(params: Any, optimizer: optax.GradientTransformation, key: jax.Array) -> TDState:
    """The initial :class:`TDState`: the target equals ``params``, step 0.

    Args:
        params: the value model's initial parameters.
        optimizer: the optax optimizer that :func:`td_policy_evaluation` will use.
        key: a JAX random key for the batches.

    Returns:
        A :class:`TDState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from inna_jax import rl
        >>> state = rl.td_init(jnp.zeros(3), optax.sgd(0.1), jax.random.key(0))
        >>> int(state.step)
        0
    """
    return TDState(params, params, optimizer.init(params), key, jnp.zeros((), jnp.int32))


def td_policy_evaluation(
    state: TDState,
    value_fn: ValueFn,
    optimizer: optax.GradientTransformation,
    problem: LQRProblem,
    *,
    steps: int,
    batch_size: int,
    target_period: int | jax.Array,
    state_scale: float = 1.0,
) -> tuple[TDState, jax.Array]:
    r"""``steps`` fitted-TD steps on fresh LQR transitions (one ``lax.scan``; jit- and vmap-safe).

    Each step samples ``batch_size`` transitions (:func:`sample_lqr_transitions`), sets
    :math:`y = \text{cost} + \gamma V_{\theta^-}(x')`, and calls
    ``optimizer.update(grads, opt_state, params, inputs=x, targets=y)`` with the gradient of
    :math:`L(\theta) = \frac1{2b}\sum_i (V_\theta(x_i) - y_i)^2`; first-order optimizers use
    the gradient, :func:`inna_jax.egn` and :func:`inna_jax.sgn` the inputs and targets (any
    optimizer works: plain ones are wrapped by ``optax.with_extra_args_support``). After the
    update, :math:`\theta^- \leftarrow \theta` when the step count is a multiple of
    ``target_period`` (``optax.periodic_update``).

    Args:
        state: the carry (:func:`td_init`).
        value_fn: ``value_fn(params, x)`` returning :math:`V_\theta(x)` of shape ``(b,)``.
        optimizer: an optax optimizer.
        problem: the :class:`LQRProblem` whose policy is evaluated.
        steps: optimizer steps.
        batch_size: transitions per step.
        target_period: steps between target refreshes (1: semi-gradient TD(0) targets); an
            integer, or a traced integer scalar (to vmap or reuse one program over periods).
        state_scale: the standard deviation of the sampled states.

    Returns:
        ``(state, losses)``, with the batch loss :math:`L(\theta)` before each step.

    Raises:
        ValueError: for ``steps``, ``batch_size`` or ``target_period`` below 1.

    Example:
        >>> import jax, numpy as np
        >>> import inna_jax
        >>> from inna_jax import rl
        >>> problem = rl.make_lqr(0, noise=0.0)    # noise-free: fitted TD is value iteration
        >>> value_fn = lambda theta, x: rl.quadratic_features(x) @ theta
        >>> tx = inna_jax.egn(value_fn, "mse", learning_rate=1.0, regularizer=1e-6)
        >>> state = rl.td_init(np.zeros(11, np.float32), tx, jax.random.key(0))
        >>> state, losses = rl.td_policy_evaluation(
        ...     state, value_fn, tx, problem, steps=300, batch_size=64, target_period=10)
        >>> p_hat, _ = rl.quadratic_matrix(state.params, 4)
        >>> p, _ = rl.lqr_value(problem)
        >>> bool(np.linalg.norm(p_hat - p) / np.linalg.norm(p) < 1e-4)
        True

    References:
        Sutton and Barto, "Reinforcement Learning: An Introduction" (2nd ed., 2018),
        sections 9.3 and 11.3 (semi-gradient TD, fitted value iteration); Mnih et al., "Human-
        level control through deep reinforcement learning", Nature 518 (2015) (target
        parameters); Korbit et al., arXiv:2405.14402 (2024) (EGN on policy evaluation).
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    period = concrete_float(target_period)  # may be traced (a grid in one program)
    if period is not None and (int(period) != period or period < 1):
        raise ValueError(f"target_period must be an integer >= 1, got {target_period!r}")
    tx = optax.with_extra_args_support(optimizer)

    def loss_fn(params, x, y):
        return 0.5 * jnp.mean((value_fn(params, x) - y) ** 2)

    def body(carry: TDState, _):
        key, sample_key = jax.random.split(carry.key)
        x, cost, x_next = sample_lqr_transitions(
            problem, sample_key, int(batch_size), state_scale=state_scale
        )
        y = cost + problem.gamma * value_fn(carry.target_params, x_next)
        y = jax.lax.stop_gradient(y)
        loss, grads = jax.value_and_grad(loss_fn)(carry.params, x, y)
        updates, opt_state = tx.update(grads, carry.opt_state, carry.params, inputs=x, targets=y)
        params = optax.apply_updates(carry.params, updates)
        step = carry.step + 1
        target = optax.periodic_update(params, carry.target_params, step, target_period)
        return TDState(params, target, opt_state, key, step), loss

    return jax.lax.scan(body, state, None, length=int(steps))
