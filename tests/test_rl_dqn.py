"""The jitted DQN: replay buffer, transitions, TD targets and target network against NumPy."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import inna_jax
from inna_jax import rl


class NumpyRing:
    """A NumPy transcription of a uniform replay ring buffer."""

    def __init__(self, capacity, shape):
        self.data = np.zeros((capacity, *shape))
        self.position = 0
        self.size = 0

    def add(self, batch):
        for row in batch:
            self.data[self.position] = row
            self.position = (self.position + 1) % len(self.data)
            self.size = min(self.size + 1, len(self.data))


def test_replay_add_matches_numpy_ring():
    rng = np.random.default_rng(0)
    buffer = rl.replay_init({"x": jnp.zeros(2), "a": jnp.zeros((), jnp.int32)}, 7)
    reference = NumpyRing(7, (2,))
    add = jax.jit(rl.replay_add)
    for n in (3, 1, 5, 7, 2, 6):
        rows = rng.standard_normal((n, 2))
        buffer = add(buffer, {"x": jnp.asarray(rows), "a": jnp.arange(n, dtype=jnp.int32)})
        reference.add(rows)
        np.testing.assert_array_equal(buffer.data["x"], reference.data)
        assert int(buffer.position) == reference.position
        assert int(buffer.size) == reference.size
    with pytest.raises(ValueError, match="capacity"):
        rl.replay_add(buffer, {"x": jnp.zeros((8, 2)), "a": jnp.zeros(8, jnp.int32)})


def test_replay_sample_is_uniform_over_filled_rows():
    buffer = rl.replay_init(jnp.zeros(()), 10)
    buffer = rl.replay_add(buffer, jnp.array([1.0, 2.0, 3.0, 4.0]))
    sample = np.asarray(rl.replay_sample(buffer, jax.random.key(0), 8000))
    values, counts = np.unique(sample, return_counts=True)
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0, 4.0])  # never an empty row
    # binomial(8000, 1/4): standard deviation 38.7; 5 sigma
    assert np.all(np.abs(counts - 2000) < 5 * 38.7), counts


def test_transitions_store_the_true_next_observation_across_resets():
    """gymnax resets inside ``step``; the buffer must keep the pre-reset observation."""
    env, env_params = gymnax.make("CartPole-v1")
    config = rl.DQNConfig(num_envs=3, buffer_size=600, learning_starts=600)
    state = jax.jit(lambda k: rl.dqn_init(k, env, env_params, jnp.zeros((4, 2)),
                                          optax.sgd(0.1), config))(jax.random.key(0))  # fmt: skip
    data = jax.tree.map(np.asarray, state.buffer.data)
    assert int(state.buffer.size) == 600
    terminated = data["terminated"].astype(bool)
    assert 5 < terminated.sum() < 200  # random CartPole episodes last about 20 steps
    # a terminal next observation is out of bounds: |x| > 2.4 or |angle| > 12 degrees
    out = (np.abs(data["next_obs"][:, 0]) > 2.4) | (np.abs(data["next_obs"][:, 2]) > 0.2095)
    np.testing.assert_array_equal(out, terminated)
    # rows t and t + num_envs belong to the same environment at consecutive steps
    nxt, obs = data["next_obs"][:-3], data["obs"][3:]
    same = ~terminated[:-3]
    np.testing.assert_array_equal(nxt[same], obs[same])
    assert not np.any(np.all(nxt[~same] == obs[~same], axis=1))  # a reset starts anew


def test_td_targets_and_target_updates_match_numpy():
    """One update at a time with a linear Q-network and SGD, against a NumPy transcription
    of the sampled batch's TD targets, the SGD step and the periodic target copy."""
    env, env_params = gymnax.make("CartPole-v1")
    period, lr, gamma = 3, 0.05, 0.9
    config = rl.DQNConfig(
        num_envs=2, buffer_size=64, batch_size=16, gamma=gamma, learning_starts=40,
        target_period=period, epsilon_decay_updates=5,
    )  # fmt: skip

    def q_fn(w, s):
        return s @ w

    tx = optax.sgd(lr)
    w0 = jnp.asarray(np.random.default_rng(0).standard_normal((4, 2)) * 0.1)
    state = jax.jit(lambda k: rl.dqn_init(k, env, env_params, w0, tx, config))(jax.random.key(1))
    step = jax.jit(lambda s: rl.dqn_train(s, env, env_params, q_fn, tx, config, num_updates=1))
    target_ref = np.asarray(w0)
    for k in range(1, 8):
        before = state
        state, metrics = step(before)
        # replay the update's sampling with the same keys as dqn_train
        key = before.key
        for _ in range(config.env_steps_per_update):
            key, *_ = jax.random.split(key, 4)
        _, sample_key = jax.random.split(key)
        batch = jax.tree.map(
            np.asarray, rl.replay_sample(state.buffer, sample_key, config.batch_size)
        )
        w, w_target = np.asarray(before.params), np.asarray(before.target_params)
        y = batch["reward"] + gamma * (1 - batch["terminated"]) * np.max(
            batch["next_obs"] @ w_target, axis=1
        )
        q = (batch["obs"] @ w)[np.arange(16), batch["action"]]
        np.testing.assert_allclose(metrics.loss[0], 0.5 * np.mean((q - y) ** 2), rtol=1e-10)
        grad = np.zeros_like(w)
        for i in range(16):
            grad[:, batch["action"][i]] += (q[i] - y[i]) * batch["obs"][i] / 16
        np.testing.assert_allclose(state.params, w - lr * grad, rtol=1e-10, atol=1e-12)
        if k % period == 0:
            target_ref = np.asarray(state.params)
        np.testing.assert_array_equal(state.target_params, target_ref)
        assert int(state.updates) == k


def test_egn_dqn_runs_vmapped_over_seeds():
    env, env_params = gymnax.make("CartPole-v1")
    config = rl.DQNConfig(num_envs=2, buffer_size=128, batch_size=8, learning_starts=16)

    def q_fn(w, s):
        return jnp.tanh(s @ w["a"]) @ w["b"]

    predict_fn = rl.chosen_action_value(q_fn, (4,), 2)
    tx = inna_jax.egn(predict_fn, "mse", learning_rate=0.3, regularizer=1.0)
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.standard_normal((3, 4, 8))),
              "b": jnp.asarray(rng.standard_normal((3, 8, 2)))}  # fmt: skip

    def one(key, p):
        state = rl.dqn_init(key, env, env_params, p, tx, config)
        return rl.dqn_train(state, env, env_params, q_fn, tx, config, num_updates=5)

    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    state, metrics = jax.jit(jax.vmap(one))(keys, params)
    assert metrics.loss.shape == (3, 5) and np.all(np.isfinite(metrics.loss))
    assert np.asarray(state.updates).tolist() == [5, 5, 5]
    # the seeds differ: different weights after training
    assert not np.allclose(state.params["a"][0], state.params["a"][1])


def test_chosen_action_value_matches_indexing():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((5, 3)))
    obs = jnp.asarray(rng.standard_normal((6, 5)))
    actions = jnp.array([0, 2, 1, 1, 0, 2])
    f = rl.chosen_action_value(lambda p, s: s @ p, (5,), 3)
    np.testing.assert_allclose(
        f(w, rl.dqn_inputs(obs, actions, 3)), np.asarray(obs @ w)[np.arange(6), actions]
    )


def test_bad_config_is_rejected():
    env, env_params = gymnax.make("CartPole-v1")
    with pytest.raises(ValueError, match="batch_size"):
        rl.dqn_init(jax.random.key(0), env, env_params, jnp.zeros((4, 2)), optax.sgd(0.1),
                    rl.DQNConfig(batch_size=0))  # fmt: skip
