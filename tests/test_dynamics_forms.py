"""The two forms of DIN agree, the vector fields work on pytrees, and bad input is refused."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax
from inna_jax.dynamics import (
    din_hessian_form,
    din_vector_field,
    heavy_ball_ode,
    nesterov_ode,
    solve_din,
)

KEY = jax.random.PRNGKey(0)
_k1, _k2, _k3 = jax.random.split(KEY, 3)
X = jax.random.normal(_k1, (16, 3))
Y = jnp.sin(X.sum(axis=1))
PARAMS0 = {
    "w1": 0.5 * jax.random.normal(_k2, (3, 5)),
    "b1": jnp.zeros(5),
    "w2": 0.5 * jax.random.normal(_k3, (5,)),
}
TS = jnp.linspace(0.0, 3.0, 7)
TIGHT = diffrax.PIDController(rtol=1e-10, atol=1e-12)


def mlp_loss(params):
    """A small tanh MLP, smooth and nonquadratic, with pytree parameters."""
    hidden = jnp.tanh(X @ params["w1"] + params["b1"])
    return 0.5 * jnp.mean((hidden @ params["w2"] - Y) ** 2)


def flat(tree):
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in jax.tree.leaves(tree)], 1)


def test_first_order_din_matches_hessian_form_on_mlp():
    alpha, beta, speed = 0.5, 0.3, 1.0
    first = solve_din(mlp_loss, PARAMS0, alpha=alpha, beta=beta, t1=TS[-1],
                      initial_speed=speed, ts=TS, stepsize_controller=TIGHT)  # fmt: skip
    grad_fn = jax.grad(mlp_loss)
    g0 = grad_fn(PARAMS0)
    v0 = jax.tree.map(lambda g: -speed * g, g0)
    second = diffrax.diffeqsolve(
        diffrax.ODETerm(din_hessian_form(grad_fn, alpha, beta)),
        diffrax.Tsit5(),
        0.0,
        TS[-1],
        None,
        (PARAMS0, v0),
        saveat=diffrax.SaveAt(ts=TS),
        stepsize_controller=TIGHT,
    )
    theta_first, theta_second = flat(first.theta), flat(second.ys[0])
    scale = np.linalg.norm(theta_second, axis=1)
    assert np.max(np.linalg.norm(theta_first - theta_second, axis=1) / scale) < 1e-6
    # the change of variable psi = -beta theta' - beta^2 grad J - (alpha beta - 1) theta
    velocity = second.ys[1]
    grads = jax.vmap(grad_fn)(second.ys[0])
    psi = jax.tree.map(
        lambda v, g, t: -beta * v - beta**2 * g - (alpha * beta - 1) * t,
        velocity,
        grads,
        second.ys[0],
    )
    assert np.max(np.abs(flat(first.psi) - flat(psi))) < 1e-6 * np.max(np.abs(flat(psi)))
    # and the movement is real: theta changes by much more than the tolerance
    assert np.linalg.norm(theta_first[-1] - theta_first[0]) > 1e-2


def test_din_start_uses_inna_psi0():
    sol = solve_din(mlp_loss, PARAMS0, alpha=0.5, beta=0.1, t1=1.0, initial_speed=0.1,
                    ts=jnp.array([0.0, 1.0]))  # fmt: skip
    psi0 = inna_jax.inna_psi0(
        PARAMS0, jax.grad(mlp_loss)(PARAMS0), alpha=0.5, beta=0.1, initial_speed=0.1
    )
    for got, want in zip(jax.tree.leaves(sol.psi), jax.tree.leaves(psi0), strict=True):
        np.testing.assert_array_equal(got[0], want)


def test_inna_step_is_euler_step_of_din_field():
    grad_fn = jax.grad(mlp_loss)
    psi = jax.tree.map(lambda x: 0.7 * x + 0.1, PARAMS0)
    d_theta, d_psi = din_vector_field(grad_fn, 0.5, 0.2)(0.0, (PARAMS0, psi), None)
    theta1, psi1 = inna_jax.inna_step(
        PARAMS0, psi, grad_fn(PARAMS0), learning_rate=0.01, alpha=0.5, beta=0.2
    )
    euler_theta = jax.tree.map(lambda t, d: t + 0.01 * d, PARAMS0, d_theta)
    euler_psi = jax.tree.map(lambda p, d: p + 0.01 * d, psi, d_psi)
    one = lambda tree: flat(jax.tree.map(lambda x: x[None], tree))
    np.testing.assert_allclose(one(theta1), one(euler_theta), rtol=1e-12)
    np.testing.assert_allclose(one(psi1), one(euler_psi), rtol=1e-12)


def test_second_order_fields_on_pytrees():
    grad_fn = jax.grad(mlp_loss)
    v = jax.tree.map(jnp.ones_like, PARAMS0)
    g = grad_fn(PARAMS0)
    _, acc = heavy_ball_ode(grad_fn, 2.0)(0.0, (PARAMS0, v), None)
    np.testing.assert_allclose(acc["w1"], -2.0 - g["w1"], rtol=1e-12)
    _, acc = nesterov_ode(grad_fn, damping=3.0)(0.5, (PARAMS0, v), None)
    np.testing.assert_allclose(acc["b1"], -6.0 - g["b1"], rtol=1e-12)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: din_vector_field(jax.grad(mlp_loss), 0.0, 0.1), "alpha"),
        (lambda: din_vector_field(jax.grad(mlp_loss), 0.5, -1.0), "beta"),
        (lambda: heavy_ball_ode(jax.grad(mlp_loss), -1.0), "friction"),
        (lambda: nesterov_ode(jax.grad(mlp_loss), 0.0), "damping"),
        (
            lambda: solve_din(mlp_loss, PARAMS0, alpha=0.5, beta=0.1, t1=-1.0, initial_speed=0.0),
            "t1",
        ),
        (
            lambda: solve_din(
                mlp_loss,
                PARAMS0,
                alpha=0.5,
                beta=0.1,
                t1=1.0,
                initial_speed=0.0,
                stepsize_controller=diffrax.ConstantStepSize(),
            ),  # fmt: skip
            "dt0",
        ),
    ],
)
def test_bad_input_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()
