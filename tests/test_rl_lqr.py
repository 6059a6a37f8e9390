"""LQR policy evaluation: the closed form against Monte Carlo, and fitted TD recovering P."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax
from inna_jax import rl


def _discounted_costs(problem, x0, *, trajectories, horizon, seed):
    """Monte-Carlo discounted costs from ``x0``, a plain NumPy float64 simulation."""
    a, b, k, q, r, w, gamma = (np.asarray(v, np.float64) for v in problem)
    rng = np.random.default_rng(seed)
    noise_root = np.linalg.cholesky(w) if np.any(w) else np.zeros_like(w)
    x = np.tile(x0, (trajectories, 1))
    total = np.zeros(trajectories)
    for t in range(horizon):
        u = x @ k.T
        total += float(gamma) ** t * (np.sum((x @ q) * x, 1) + np.sum((u @ r) * u, 1))
        x = x @ a.T + u @ b.T + rng.standard_normal(x.shape) @ noise_root.T
    return total


def test_closed_form_matches_monte_carlo_discounted_cost():
    problem = rl.make_lqr(0, noise=0.3)
    p, c = rl.lqr_value(problem)
    horizon = 250  # gamma^250 = 0.9^250 < 4e-12: the truncation is far below the MC error
    for x0 in (np.zeros(4), np.array([1.0, -0.5, 0.3, 2.0])):
        costs = _discounted_costs(problem, x0, trajectories=20_000, horizon=horizon, seed=1)
        exact = x0 @ p @ x0 + c
        standard_error = costs.std() / np.sqrt(costs.size)
        assert abs(costs.mean() - exact) < 4 * standard_error, (costs.mean(), exact)
        assert standard_error < 0.01 * exact  # the check above has teeth


def test_closed_form_is_exact_without_noise():
    problem = rl.make_lqr(3, state_dim=3, action_dim=1, gamma=0.95, noise=0.0)
    p, c = rl.lqr_value(problem)
    x0 = np.array([0.7, -1.2, 0.4])
    cost = _discounted_costs(problem, x0, trajectories=1, horizon=800, seed=0)[0]
    assert c == 0.0
    np.testing.assert_allclose(cost, x0 @ p @ x0, rtol=1e-10)


def test_lyapunov_convention_and_constant():
    problem = rl.make_lqr(1, gamma=0.8, noise=0.2)
    p, c = rl.lqr_value(problem)
    a, b, k, q, r, w, gamma = (np.asarray(v, np.float64) for v in problem)
    a_k, q_k = a + b @ k, q + k.T @ r @ k
    np.testing.assert_allclose(p, q_k + gamma * a_k.T @ p @ a_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, gamma * np.trace(p @ w) / (1 - gamma), rtol=1e-10)


def test_unstable_policy_is_rejected():
    problem = rl.make_lqr(0)._replace(K=jnp.zeros((2, 4)))  # open loop, radius 1.1
    with pytest.raises(ValueError, match="spectral radius"):
        rl.lqr_value(problem)


def test_quadratic_features_round_trip():
    rng = np.random.default_rng(0)
    theta = jnp.asarray(rng.standard_normal(11))
    x = jnp.asarray(rng.standard_normal((7, 4)))
    p, c = rl.quadratic_matrix(theta, 4)
    np.testing.assert_allclose(
        rl.quadratic_features(x) @ theta, jnp.einsum("bi,ij,bj->b", x, p, x) + c, rtol=1e-12
    )


def test_sampled_transitions_follow_the_policy():
    problem = rl.make_lqr(0, noise=0.0)
    x, cost, x_next = rl.sample_lqr_transitions(problem, jax.random.key(0), 16)
    a, b, k, q, r = (np.asarray(v) for v in problem[:5])
    u = np.asarray(x) @ k.T
    np.testing.assert_allclose(x_next, np.asarray(x) @ (a + b @ k).T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        cost, np.sum((x @ q) * x, 1) + np.sum((u @ r) * u, 1), rtol=1e-12, atol=1e-12
    )


def _egn_fitted_td(problem, *, learning_rate, steps, seeds):
    def value_fn(theta, x):
        return rl.quadratic_features(x) @ theta

    tx = inna_jax.egn(value_fn, "mse", learning_rate=learning_rate, regularizer=1e-8)

    def one(key):
        state = rl.td_init(jnp.zeros(11), tx, key)
        state, _ = rl.td_policy_evaluation(
            state, value_fn, tx, problem, steps=steps, batch_size=64, target_period=10
        )
        return rl.quadratic_matrix(state.params, 4)

    return jax.jit(jax.vmap(one))(jax.vmap(jax.random.key)(jnp.arange(seeds)))


def test_egn_fitted_td_recovers_p_exactly_without_noise():
    # Noise-free transitions: each EGN step (lr 1, lambda 1e-8) solves the batch regression,
    # so fitted TD is exact value iteration; measured max error over 3 seeds: 3e-16.
    problem = rl.make_lqr(0, noise=0.0)
    p, _ = rl.lqr_value(problem)
    p_hat, c_hat = _egn_fitted_td(problem, learning_rate=1.0, steps=300, seeds=3)
    errors = np.linalg.norm(np.asarray(p_hat) - p, axis=(1, 2)) / np.linalg.norm(p)
    assert np.max(errors) < 1e-10, errors
    assert np.max(np.abs(np.asarray(c_hat))) < 1e-10


def test_egn_fitted_td_recovers_p_with_noise():
    # Noise 0.1, lr 0.1, 500 steps of 64 transitions: measured over 20 seeds, the largest
    # relative error of P was 0.015 (mean 0.009) and of c 0.08 (c = 0.60); tolerances are 2x.
    problem = rl.make_lqr(0, noise=0.1)
    p, c = rl.lqr_value(problem)
    p_hat, c_hat = _egn_fitted_td(problem, learning_rate=0.1, steps=500, seeds=5)
    errors = np.linalg.norm(np.asarray(p_hat) - p, axis=(1, 2)) / np.linalg.norm(p)
    assert np.max(errors) < 0.03, errors
    assert np.max(np.abs(np.asarray(c_hat) - c)) < 0.16


def test_td_arguments_are_checked():
    with pytest.raises(ValueError, match="target_period"):
        rl.td_policy_evaluation(None, None, None, None, steps=1, batch_size=1, target_period=0)
    with pytest.raises(ValueError, match="gamma"):
        rl.make_lqr(0, gamma=1.0)
