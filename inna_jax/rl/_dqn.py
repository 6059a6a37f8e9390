r"""DQN whose whole training loop is one jitted program: vectorised gymnax environments, a
replay buffer in device arrays, a target network, and any optax optimizer (EGN included).

Each update of :func:`dqn_train` steps ``num_envs`` environments ``env_steps_per_update``
times with an :math:`\varepsilon`-greedy policy, writes the transitions into the
:class:`~inna_jax.rl.ReplayBuffer`, samples a batch :math:`(s_i, a_i, r_i, s_i', d_i)` and
takes one optimizer step on the TD regression

.. math::

    L(\theta) = \frac1{2b}\sum_i \big(Q_\theta(s_i)_{a_i} - y_i\big)^2, \qquad
    y_i = r_i + \gamma (1 - d_i) \max_{a'} Q_{\theta^-}(s_i')_{a'},

with :math:`d_i` the termination flag (a time-limit truncation still bootstraps) and
:math:`\theta^-` the target network, copied from :math:`\theta` every ``target_period``
updates. For EGN the model is the chosen action's value, :math:`f(x_i, \theta) =
Q_\theta(s_i)_{a_i}` of shape ``(b,)``, so the Gauss-Newton system is :math:`b \times b`
(:func:`chosen_action_value`). Updates never branch: the random warm-up that fills the buffer
before learning is its own loop (:func:`dqn_init`), so a vmap over seeds runs no idle branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inna_jax.rl._replay import ReplayBuffer, replay_add, replay_init, replay_sample

QFn = Callable[[Any, jax.Array], jax.Array]


class DQNConfig(NamedTuple):
    """Static DQN settings (Python numbers; changing one compiles a new program).

    Attributes:
        num_envs: environments stepped in parallel (``vmap``).
        buffer_size: replay capacity in transitions.
        batch_size: transitions per update (EGN solves a ``batch_size`` square system).
        gamma: the discount factor in (0, 1].
        env_steps_per_update: vectorised environment steps (each ``num_envs`` transitions)
            between two updates.
        learning_starts: transitions collected with uniformly random actions before the
            first update (rounded up to a multiple of ``num_envs``).
        target_period: updates between two copies :math:`\\theta^- \\leftarrow \\theta`.
        epsilon_start: exploration rate at the first update.
        epsilon_end: exploration rate after the decay.
        epsilon_decay_updates: updates over which :math:`\\varepsilon` decays linearly.
    """

    num_envs: int = 8
    buffer_size: int = 10_000
    batch_size: int = 64
    gamma: float = 0.99
    env_steps_per_update: int = 1
    learning_starts: int = 1_000
    target_period: int = 250
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_updates: int = 2_000


DEFAULT_CONFIG = DQNConfig()


class DQNState(NamedTuple):
    """The carry of :func:`dqn_train` (a pytree; vmap it over seeds).

    Attributes:
        params: the Q-network's parameters :math:`\\theta`.
        target_params: the target network's :math:`\\theta^-`.
        opt_state: the optimizer's state.
        buffer: the :class:`~inna_jax.rl.ReplayBuffer`.
        env_state: the batched gymnax environment states.
        obs: the current observations, ``(num_envs, *obs_shape)``.
        episode_return: the running undiscounted return of each environment's episode.
        key: the random key.
        updates: the number of updates taken.
    """

    params: Any
    target_params: Any
    opt_state: Any
    buffer: ReplayBuffer
    env_state: Any
    obs: jax.Array
    episode_return: jax.Array
    key: jax.Array
    updates: jax.Array


class DQNMetrics(NamedTuple):
    """Per-update outputs of :func:`dqn_train` (each of shape ``(num_updates,)``).

    Attributes:
        return_sum: the summed returns of the episodes that ended during the update's
            environment steps.
        episodes: how many episodes ended then.
        loss: the batch TD loss before the update.
    """

    return_sum: jax.Array
    episodes: jax.Array
    loss: jax.Array


def chosen_action_value(q_fn: QFn, obs_shape: tuple[int, ...], num_actions: int) -> QFn:
    r"""The model :math:`f(x, \theta) = Q_\theta(s)_a` on inputs ``x = [flat(s), onehot(a)]``.

    EGN (and SGN) take a ``predict_fn(params, x)`` with one array of inputs; DQN's regression
    is on the value of the action taken, so the inputs carry the action as a one-hot block
    (:func:`dqn_inputs` builds them) and the output has shape ``(b,)``.

    Args:
        q_fn: ``q_fn(params, obs)`` returning all action values, ``(b, num_actions)``.
        obs_shape: the shape of one observation.
        num_actions: the number of discrete actions.

    Returns:
        ``predict_fn(params, x)`` with outputs of shape ``(b,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> q_fn = lambda w, s: s @ w                     # 2 features, 3 actions
        >>> f = rl.chosen_action_value(q_fn, (2,), 3)
        >>> w = jnp.arange(6.0).reshape(2, 3)
        >>> x = rl.dqn_inputs(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([2, 0]), 3)
        >>> f(w, x)
        Array([2., 3.], dtype=float32)

    References:
        Mnih et al., Nature 518 (2015), Methods (the Q-learning loss on the chosen action);
        Korbit et al., arXiv:2405.14402 (2024) (EGN).
    """
    obs_size = int(np.prod(obs_shape))

    def predict_fn(params, x):
        obs = x[:, :obs_size].reshape(x.shape[0], *obs_shape)
        q = q_fn(params, obs)
        return jnp.sum(q * x[:, obs_size : obs_size + num_actions], axis=-1)

    return predict_fn


def dqn_inputs(obs: jax.Array, actions: jax.Array, num_actions: int) -> jax.Array:
    """The inputs ``[flat(obs), onehot(action)]`` of :func:`chosen_action_value`, ``(b, d + A)``.

    Args:
        obs: observations ``(b, *obs_shape)`` (cast to a float dtype).
        actions: integer actions ``(b,)``.
        num_actions: the number of discrete actions.

    Returns:
        The concatenated inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> rl.dqn_inputs(jnp.array([[0.5]]), jnp.array([1]), 2)
        Array([[0.5, 0. , 1. ]], dtype=float32)
    """
    flat = obs.reshape(obs.shape[0], -1)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        flat = flat.astype(jnp.zeros(()).dtype)
    return jnp.concatenate([flat, jax.nn.one_hot(actions, num_actions, dtype=flat.dtype)], 1)


def _check_config(config: DQNConfig) -> None:
    for name in (
        "num_envs",
        "buffer_size",
        "batch_size",
        "env_steps_per_update",
        "target_period",
        "epsilon_decay_updates",
    ):
        value = getattr(config, name)
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    starts = config.learning_starts
    if int(starts) != starts or starts < 1:
        raise ValueError(f"learning_starts must be an integer >= 1, got learning_starts={starts!r}")
    if not 0 < config.gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got gamma={config.gamma!r}")
    for name in ("epsilon_start", "epsilon_end"):
        value = getattr(config, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {name}={value!r}")
    if config.num_envs * config.env_steps_per_update > config.buffer_size:
        raise ValueError(
            f"buffer_size={config.buffer_size} must hold at least num_envs * "
            f"env_steps_per_update = {config.num_envs * config.env_steps_per_update} transitions"
        )


def _env_step(env, env_params, state, key, actions):
    """Steps every environment; returns the transitions and the updated carry pieces."""
    keys = jax.random.split(key, state.obs.shape[0])
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None)
    )(keys, state.env_state, actions, env_params)
    done = jnp.logical_or(terminated, truncated)
    reward = reward.astype(state.episode_return.dtype)
    episode_return = state.episode_return + reward
    transition = {
        "obs": state.obs,
        "action": actions.astype(jnp.int32),
        "reward": reward,
        "next_obs": info["final_observation"],  # gymnax's ``obs`` is already the reset one
        "terminated": terminated.astype(reward.dtype),
    }
    finished = jnp.sum(jnp.where(done, episode_return, 0.0))
    count = jnp.sum(done.astype(jnp.int32))
    state = state._replace(
        env_state=env_state,
        obs=obs,
        episode_return=jnp.where(done, 0.0, episode_return),
        buffer=replay_add(state.buffer, transition),
    )
    return state, finished, count


def dqn_init(
    key: jax.Array,
    env: Any,
    env_params: Any,
    params: Any,
    optimizer: optax.GradientTransformation,
    config: DQNConfig = DEFAULT_CONFIG,
) -> DQNState:
    """Resets the environments and fills the buffer with ``learning_starts`` random transitions.

    Jit- and vmap-safe (``env`` and ``config`` are static: close over them).

    Args:
        key: a JAX random key.
        env: a gymnax environment (``gymnax.make(name)[0]``).
        env_params: its parameters.
        params: the Q-network's initial parameters (the target starts equal to them).
        optimizer: the optax optimizer that :func:`dqn_train` will use.
        config: a :class:`DQNConfig`.

    Returns:
        A :class:`DQNState` with ``updates = 0``.

    Raises:
        ValueError: for out-of-range settings in ``config``.

    Example:
        >>> import gymnax, jax, optax
        >>> from inna_jax import rl
        >>> env, env_params = gymnax.make("CartPole-v1")
        >>> config = rl.DQNConfig(num_envs=4, buffer_size=64, learning_starts=16)
        >>> params = jax.numpy.zeros((4, 2))
        >>> state = rl.dqn_init(jax.random.key(0), env, env_params, params, optax.adam(1e-3),
        ...                     config)
        >>> int(state.buffer.size)
        16

    References:
        Mnih et al., "Human-level control through deep reinforcement learning", Nature 518
        (2015), Methods; Lange, "gymnax: A JAX-based reinforcement learning environment
        library" (2022).
    """
    _check_config(config)
    key, reset_key = jax.random.split(key)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, config.num_envs), env_params
    )
    dtype = jax.tree.leaves(params)[0].dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.zeros(()).dtype
    obs = obs.astype(dtype)
    example = {
        "obs": obs[0],
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), dtype),
        "next_obs": obs[0],
        "terminated": jnp.zeros((), dtype),
    }
    state = DQNState(
        params=params,
        target_params=params,
        opt_state=optimizer.init(params),
        buffer=replay_init(example, config.buffer_size),
        env_state=env_state,
        obs=obs,
        episode_return=jnp.zeros(config.num_envs, dtype),
        key=key,
        updates=jnp.zeros((), jnp.int32),
    )
    num_actions = env.action_space(env_params).n
    warmup = -(-config.learning_starts // config.num_envs)

    def random_step(state, _):
        key, action_key, step_key = jax.random.split(state.key, 3)
        actions = jax.random.randint(action_key, (config.num_envs,), 0, num_actions)
        state, _, _ = _env_step(env, env_params, state._replace(key=key), step_key, actions)
        state = state._replace(obs=state.obs.astype(dtype))
        return state, None

    state, _ = jax.lax.scan(random_step, state, None, length=warmup)
    # episodes cut by the warm-up are counted from the first update on
    return state


def dqn_train(
    state: DQNState,
    env: Any,
    env_params: Any,
    q_fn: QFn,
    optimizer: optax.GradientTransformation,
    config: DQNConfig = DEFAULT_CONFIG,
    *,
    num_updates: int,
) -> tuple[DQNState, DQNMetrics]:
    r"""``num_updates`` DQN iterations in one ``lax.scan`` (jit- and vmap-safe).

    One iteration: ``env_steps_per_update`` vectorised :math:`\varepsilon`-greedy steps
    (:math:`\varepsilon` decays linearly from ``epsilon_start`` to ``epsilon_end`` over
    ``epsilon_decay_updates`` updates, ``optax.linear_schedule``), each writing ``num_envs``
    transitions into the buffer; then one optimizer step on a uniformly sampled batch,
    ``optimizer.update(grads, opt_state, params, inputs=x, targets=y)`` with
    ``x = dqn_inputs(s, a)`` and the TD targets ``y`` of the module docstring (first-order
    optimizers use ``grads``; :func:`inna_jax.egn` uses ``inputs``/``targets`` with
    ``predict_fn = chosen_action_value(q_fn, ...)``); then the target copy every
    ``target_period`` updates (``optax.periodic_update``).

    Args:
        state: the carry (:func:`dqn_init`).
        env: the gymnax environment given to :func:`dqn_init`.
        env_params: its parameters.
        q_fn: ``q_fn(params, obs)`` returning action values ``(b, num_actions)``.
        optimizer: an optax optimizer (plain ones are wrapped by
            ``optax.with_extra_args_support``).
        config: the :class:`DQNConfig` given to :func:`dqn_init`.
        num_updates: iterations to run.

    Returns:
        ``(state, metrics)``, :class:`DQNMetrics` with one entry per update.

    Raises:
        ValueError: for ``num_updates`` below 1 or out-of-range settings in ``config``.

    Example:
        >>> import gymnax, jax, jax.numpy as jnp, optax
        >>> from inna_jax import rl
        >>> env, env_params = gymnax.make("CartPole-v1")
        >>> config = rl.DQNConfig(num_envs=4, buffer_size=256, batch_size=8, learning_starts=32)
        >>> q_fn = lambda w, s: s @ w
        >>> tx = optax.adam(1e-3)
        >>> state = rl.dqn_init(jax.random.key(0), env, env_params, jnp.zeros((4, 2)), tx, config)
        >>> state, metrics = rl.dqn_train(state, env, env_params, q_fn, tx, config,
        ...                               num_updates=10)
        >>> int(state.updates), int(state.buffer.size), metrics.loss.shape
        (10, 72, (10,))

    References:
        Mnih et al., "Human-level control through deep reinforcement learning", Nature 518
        (2015), Methods; Korbit et al., arXiv:2405.14402 (2024) (EGN for DQN).
    """
    _check_config(config)
    if int(num_updates) != num_updates or num_updates < 1:
        raise ValueError(f"num_updates must be an integer >= 1, got num_updates={num_updates!r}")
    tx = optax.with_extra_args_support(optimizer)
    obs_shape = state.obs.shape[1:]
    num_actions = env.action_space(env_params).n
    predict_fn = chosen_action_value(q_fn, obs_shape, num_actions)
    epsilon = optax.linear_schedule(
        config.epsilon_start, config.epsilon_end, config.epsilon_decay_updates
    )
    dtype = state.episode_return.dtype

    def act_and_step(carry, _):
        state, eps = carry
        key, explore_key, action_key, step_key = jax.random.split(state.key, 4)
        greedy = jnp.argmax(q_fn(state.params, state.obs), axis=-1)
        random_actions = jax.random.randint(action_key, greedy.shape, 0, num_actions)
        explore = jax.random.uniform(explore_key, greedy.shape) < eps
        actions = jnp.where(explore, random_actions, greedy)
        state, finished, count = _env_step(env, env_params, state._replace(key=key), step_key,
                                           actions)  # fmt: skip
        return (state._replace(obs=state.obs.astype(dtype)), eps), (finished, count)

    def loss_fn(params, x, y):
        return 0.5 * jnp.mean((predict_fn(params, x) - y) ** 2)

    def update(state: DQNState, _):
        eps = epsilon(state.updates)
        (state, _), (finished, count) = jax.lax.scan(
            act_and_step, (state, eps), None, length=config.env_steps_per_update
        )
        key, sample_key = jax.random.split(state.key)
        batch = replay_sample(state.buffer, sample_key, config.batch_size)
        next_q = jnp.max(q_fn(state.target_params, batch["next_obs"]), axis=-1)
        y = batch["reward"] + config.gamma * (1.0 - batch["terminated"]) * next_q
        y = jax.lax.stop_gradient(y)
        x = dqn_inputs(batch["obs"], batch["action"], num_actions)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, inputs=x, targets=y)
        params = optax.apply_updates(state.params, updates)
        count_updates = state.updates + 1
        target = optax.periodic_update(
            params, state.target_params, count_updates, config.target_period
        )
        state = state._replace(
            params=params,
            target_params=target,
            opt_state=opt_state,
            key=key,
            updates=count_updates,
        )
        return state, DQNMetrics(jnp.sum(finished), jnp.sum(count), loss)

    return jax.lax.scan(update, state, None, length=int(num_updates))
