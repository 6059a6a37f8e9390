"""Discrete methods against their ODEs: NumPy transcriptions, the order of the gap, vmap, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax
from inna_jax.dynamics import (
    compare,
    convergence_order,
    discrete_path,
    nesterov_scan,
    solve_din,
)

A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
A_JAX = jnp.asarray(A)
THETA0 = np.array([1.0, -2.0, 0.5])


def smooth_loss(theta):
    """A smooth nonquadratic loss: 0.5 theta^T A theta + sum(sin(theta))."""
    return 0.5 * theta @ A_JAX @ theta + jnp.sum(jnp.sin(theta))


def np_grad(theta):
    return A @ theta + np.cos(theta)


def figure1_loss(theta):
    return 100.0 * (theta[1] - jnp.abs(theta[0])) ** 2 + jnp.abs(1.0 - theta[0])


STEPS = 40


def test_inna_discrete_is_reference_update_and_close_to_din():
    alpha, beta, speed, lr = 0.5, 0.2, 1.0, 0.01
    res = compare("inna", smooth_loss, jnp.asarray(THETA0), steps=STEPS, learning_rate=lr,
                  alpha=alpha, beta=beta, initial_speed=speed)  # fmt: skip
    # Castera et al. (JMLR 2021), Algorithm 1, transcribed: psi0, then phi, theta and psi
    # updates from the old values
    theta = THETA0.copy()
    g0 = np_grad(theta)
    psi = (1 - alpha * beta) * theta - beta**2 * g0 + beta * speed * g0
    path = [theta]
    for _ in range(STEPS):
        phi = (1 / beta - alpha) * theta - psi / beta
        theta, psi = theta + lr * (phi - beta * np_grad(theta)), psi + lr * phi
        path.append(theta)
    np.testing.assert_allclose(res.discrete, np.stack(path), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.ts, lr * np.arange(STEPS + 1), rtol=1e-12)
    # the ODE starts where the iterates start, and the gap is Euler-sized (O(gamma t))
    np.testing.assert_allclose(res.continuous[0], THETA0)
    assert 0 < float(res.gap) < 0.05


def test_gd_with_schedule_uses_optax_sgd_and_sum_of_steps():
    schedule = inna_jax.power_decay(0.02, power=0.5)
    res = compare("gd", smooth_loss, jnp.asarray(THETA0), steps=STEPS, learning_rate=schedule)
    gammas = 0.02 / np.sqrt(np.arange(STEPS) + 1)
    theta, path = THETA0.copy(), [THETA0]
    for gamma in gammas:
        theta = theta - gamma * np_grad(theta)
        path.append(theta)
    np.testing.assert_allclose(res.discrete, np.stack(path), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.ts, np.concatenate([[0.0], np.cumsum(gammas)]), rtol=1e-12)
    assert 0 < float(res.gap) < 0.05


def test_heavy_ball_optax_is_polyak_on_k_sqrt_eta():
    eta, a = 1e-3, 1.5
    b = 1 - a * np.sqrt(eta)
    res = compare("heavy_ball", smooth_loss, jnp.asarray(THETA0), steps=STEPS,
                  learning_rate=eta, friction=a)  # fmt: skip
    prev, theta, path = THETA0.copy(), THETA0.copy(), [THETA0]
    for _ in range(STEPS):
        theta, prev = theta - eta * np_grad(theta) + b * (theta - prev), theta
        path.append(theta)
    np.testing.assert_allclose(res.discrete, np.stack(path), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.ts, np.sqrt(eta) * np.arange(STEPS + 1), rtol=1e-12)
    assert 0 < float(res.gap) < 0.1


def _np_nesterov(s, r):
    """Su, Boyd, Candès (JMLR 2016), equation (1), with momentum (k - 1)/(k + r - 1)."""
    x_prev, y, path = THETA0.copy(), THETA0.copy(), [THETA0]
    for k in range(1, STEPS + 1):
        x = y - s * np_grad(y)
        y = x + (k - 1) / (k + r - 1) * (x - x_prev)
        x_prev = x
        path.append(x)
    return np.stack(path)


def test_nesterov_scan_is_su_boyd_candes():
    s = 1e-3
    res = compare("nesterov", smooth_loss, jnp.asarray(THETA0), steps=STEPS, learning_rate=s)
    np.testing.assert_allclose(res.discrete, _np_nesterov(s, 3.0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.ts, np.sqrt(s) * np.arange(STEPS + 1), rtol=1e-12)
    assert 0 < float(res.gap) < 0.1
    # damping is Nesterov's r (it used to be ignored by compare("nesterov", ...))
    res8 = compare("nesterov", smooth_loss, jnp.asarray(THETA0), steps=STEPS, learning_rate=s,
                   damping=8.0)  # fmt: skip
    np.testing.assert_allclose(res8.discrete, _np_nesterov(s, 8.0), rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(np.asarray(res8.discrete) - np.asarray(res.discrete))) > 1e-4
    scan = nesterov_scan(jax.grad(smooth_loss), jnp.asarray(THETA0), learning_rate=s,
                         damping=8.0, steps=STEPS)  # fmt: skip
    np.testing.assert_allclose(scan, _np_nesterov(s, 8.0), rtol=1e-12, atol=1e-12)


def test_inna_gap_to_din_has_order_one():
    fit = convergence_order("inna", smooth_loss, jnp.asarray(THETA0), t1=1.0, time_step=0.05,
                            halvings=4, alpha=0.5, beta=0.2, initial_speed=1.0)  # fmt: skip
    assert np.all(np.diff(fit.gaps) < 0)
    assert abs(fit.order - 1.0) < 0.2, fit


def test_solve_din_vmaps_over_grid_and_points_without_recompiling():
    traces = []

    def counted_loss(theta):
        traces.append(1)
        return figure1_loss(theta)

    def solve(alpha, beta, theta0):
        return solve_din(counted_loss, theta0, alpha=alpha, beta=beta, t1=2.0,
                         ts=jnp.array([2.0])).theta[-1]  # fmt: skip

    first = solve(0.5, 0.1, jnp.array([-1.0, 1.5]))
    n_traces = len(traces)
    assert n_traces > 0
    # other hyperparameters and another start: no new trace of the loss, hence no recompile
    second = solve(1.3, 0.05, jnp.array([-0.5, 1.0]))
    assert len(traces) == n_traces
    grid = jax.vmap(solve)(jnp.array([0.5, 1.3]), jnp.array([0.1, 0.05]),
                           jnp.array([[-1.0, 1.5], [-0.5, 1.0]]))  # fmt: skip
    np.testing.assert_allclose(grid, np.stack([first, second]), rtol=1e-6, atol=1e-8)


def test_compare_refuses_bad_input():
    with pytest.raises(ValueError, match="method"):
        compare("adam", smooth_loss, jnp.asarray(THETA0), steps=3, learning_rate=0.1)
    with pytest.raises(ValueError, match="schedule"):
        compare("nesterov", smooth_loss, jnp.asarray(THETA0), steps=3,
                learning_rate=inna_jax.power_decay(0.1))  # fmt: skip
    with pytest.raises(ValueError, match="learning_rate"):
        compare("gd", smooth_loss, jnp.asarray(THETA0), steps=3, learning_rate=-0.1)
    with pytest.raises(ValueError, match="whole number"):
        convergence_order("gd", smooth_loss, jnp.asarray(THETA0), t1=1.0, time_step=0.3)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        compare("gd", smooth_loss, jnp.asarray(THETA0), steps=0, learning_rate=0.1)
    with pytest.raises(
        ValueError, match="learning_rate must be a finite number > 0, got learning_rate='0.1'"
    ):
        compare("gd", smooth_loss, jnp.asarray(THETA0), steps=3, learning_rate="0.1")


def test_discrete_path_is_compares_discrete_method_and_records():
    theta0 = jnp.asarray(THETA0)
    kwargs = {"steps": STEPS, "learning_rate": 1e-3, "friction": 1.5}
    res = compare("heavy_ball", smooth_loss, theta0, **kwargs)
    path = discrete_path("heavy_ball", smooth_loss, theta0, **kwargs)
    np.testing.assert_array_equal(path.values, res.discrete)
    np.testing.assert_array_equal(path.ts, res.ts)
    np.testing.assert_array_equal(path.final, res.discrete[-1])
    losses = discrete_path("heavy_ball", smooth_loss, theta0, record=smooth_loss, **kwargs)
    np.testing.assert_allclose(losses.values, jax.vmap(smooth_loss)(res.discrete), rtol=1e-13)
    np.testing.assert_array_equal(losses.final, res.discrete[-1])


def test_compare_and_discrete_path_compile_once_per_method():
    traces = []

    def counted_loss(theta):
        traces.append(1)
        return smooth_loss(theta)

    theta0 = jnp.asarray(THETA0)
    kwargs = {"steps": 5, "learning_rate": 1e-3}
    first = compare("heavy_ball", counted_loss, theta0, friction=1.0, **kwargs)
    path = discrete_path("nesterov", counted_loss, theta0, damping=3.0, **kwargs)
    n_traces = len(traces)
    # other hyperparameters and learning rates: data, not constants, so no new trace
    second = compare("heavy_ball", counted_loss, theta0, friction=2.0, steps=5, learning_rate=4e-3)
    other = discrete_path("nesterov", counted_loss, theta0, damping=8.0, **kwargs)
    assert len(traces) == n_traces
    assert not np.allclose(first.discrete, second.discrete)
    assert not np.allclose(path.values, other.values)
