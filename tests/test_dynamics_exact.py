"""Exactness of the ODE solves: linear ODEs against scipy.linalg.expm, Nesterov against Bessel.

On J(theta) = 0.5 theta^T A theta (A symmetric positive definite), DIN, heavy ball and the
gradient flow are linear ODEs z' = M z, solved exactly by expm(M t) z0. The Nesterov ODE
X'' + (3/t) X' + A X = 0, X(0) = x0, X'(0) = 0 has X(t) = 2 J1(sqrt(l) t)/(sqrt(l) t) x0 in
each eigendirection. All in float64, with a tight controller passed in (any diffrax
controller is accepted).
"""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from inna_jax.dynamics import (
    solve_din,
    solve_gradient_flow,
    solve_heavy_ball,
    solve_nesterov,
)

DIM = 4
RNG = np.random.default_rng(0)
_Q, _ = np.linalg.qr(RNG.normal(size=(DIM, DIM)))
EIGS = np.array([0.3, 1.0, 2.5, 6.0])
A = _Q @ np.diag(EIGS) @ _Q.T
THETA0 = RNG.normal(size=DIM)
TS = np.linspace(0.0, 5.0, 11)
TIGHT = diffrax.PIDController(rtol=1e-11, atol=1e-13)
A_JAX = jnp.asarray(A)


def quadratic(theta):
    return 0.5 * theta @ A_JAX @ theta


def expm_path(m, z0):
    return np.stack([scipy.linalg.expm(m * t) @ z0 for t in TS])


def max_relative_error(path, reference):
    errors = np.linalg.norm(np.asarray(path) - reference, axis=-1)
    return float(np.max(errors / np.linalg.norm(reference, axis=-1)))


def test_gradient_flow_is_expm():
    sol = solve_gradient_flow(quadratic, jnp.asarray(THETA0), t1=TS[-1], ts=TS,
                              stepsize_controller=TIGHT)  # fmt: skip
    reference = expm_path(-A, THETA0)
    assert max_relative_error(sol.theta, reference) < 1e-6


def test_heavy_ball_is_expm():
    a = 0.7
    v0 = RNG.normal(size=DIM)
    sol = solve_heavy_ball(quadratic, jnp.asarray(THETA0), friction=a, t1=TS[-1], ts=TS,
                           velocity0=jnp.asarray(v0), stepsize_controller=TIGHT)  # fmt: skip
    eye, zero = np.eye(DIM), np.zeros((DIM, DIM))
    m = np.block([[zero, eye], [-A, -a * eye]])
    reference = expm_path(m, np.concatenate([THETA0, v0]))
    path = np.concatenate([sol.theta, sol.velocity], axis=1)
    assert max_relative_error(path, reference) < 1e-6


@pytest.mark.parametrize("alpha, beta, speed", [(0.5, 0.1, 1.0), (1.3, 0.5, 0.0)])
def test_din_is_expm(alpha, beta, speed):
    sol = solve_din(quadratic, jnp.asarray(THETA0), alpha=alpha, beta=beta, t1=TS[-1],
                    initial_speed=speed, ts=TS, stepsize_controller=TIGHT)  # fmt: skip
    # DIN with grad J = A theta, written out as a block matrix (JMLR 2021, Section 2)
    eye = np.eye(DIM)
    c = alpha - 1 / beta
    m = np.block([[-beta * A - c * eye, -eye / beta], [-c * eye, -eye / beta]])
    # psi0 from the change of variable, with theta'(0) = -s A theta0 (JMLR 2021, Section 2)
    g0 = A @ THETA0
    psi0 = -beta * (-speed * g0) - beta**2 * g0 - (alpha * beta - 1) * THETA0
    reference = expm_path(m, np.concatenate([THETA0, psi0]))
    path = np.concatenate([sol.theta, sol.psi], axis=1)
    assert max_relative_error(path, reference) < 1e-6
    # and theta(t) alone solves theta'' + alpha theta' + beta A theta' + A theta = 0
    m2 = np.block([[np.zeros((DIM, DIM)), eye], [-A, -alpha * eye - beta * A]])
    reference2 = expm_path(m2, np.concatenate([THETA0, -speed * g0]))[:, :DIM]
    assert max_relative_error(sol.theta, reference2) < 1e-6


def test_nesterov_is_bessel():
    ts = np.linspace(0.0, 8.0, 17)
    sol = solve_nesterov(quadratic, jnp.asarray(THETA0), t1=ts[-1], ts=ts,
                         stepsize_controller=TIGHT)  # fmt: skip
    coords = _Q.T @ THETA0
    root = np.sqrt(EIGS)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(
            ts[:, None] > 0, 2 * scipy.special.j1(root * ts[:, None]) / (root * ts[:, None]), 1.0
        )
    reference = (factor * coords) @ _Q.T
    # the Bessel solution passes through 0, so the error is relative to |x0|
    error = np.max(np.linalg.norm(np.asarray(sol.theta) - reference, axis=1))
    assert error / np.linalg.norm(THETA0) < 1e-6
    assert np.allclose(sol.theta[0], THETA0)
