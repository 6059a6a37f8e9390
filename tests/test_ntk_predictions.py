"""ntk_predictions against independent references, and against wide networks trained in steps.

References, in float64, from a dense vmap(jacrev) kernel (not ntk_gram): gradient flow and
heavy ball as the matrix exponential of the linear ODE of (train error, test change) with
scipy.linalg.expm; Nesterov with scipy's solve_ivp (DOP853, rtol 1e-12); t = inf as a dense
linear solve. Then two-layer networks of growing width trained by gradient descent, heavy ball
and Nesterov with small steps follow the predictions more closely as the width grows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
from jax.flatten_util import ravel_pytree

from inna_jax.dynamics import ntk_predictions


def _mlp(key, d=3, h=8, c=2):
    k = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k[0], (d, h)) / np.sqrt(d),
        "b1": 0.1 * jax.random.normal(k[1], (h,)),
        "w2": jax.random.normal(k[2], (h, c)) / np.sqrt(h),
    }


def _predict(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _jac(params, x):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jacrev(lambda f: _predict(unravel(f), x).reshape(-1))(flat))


PARAMS = _mlp(jax.random.key(0))
X = jax.random.normal(jax.random.key(1), (6, 3))
Y = jax.random.normal(jax.random.key(2), (6, 2))
XT = jax.random.normal(jax.random.key(3), (4, 3))
TS = np.array([0.0, 0.5, 2.0, 7.0, np.inf])


def _reference(method, hyper):
    """(train, test) at TS from the dense kernels, without eigenvectors."""
    j, jt = _jac(PARAMS, X), _jac(PARAMS, XT)
    n = X.shape[0]
    a = j @ j.T / n  # Theta / n
    b = jt @ j.T / n  # K(x*, X) / n
    e0 = (np.asarray(_predict(PARAMS, X)) - np.asarray(Y)).reshape(-1)
    f0t = np.asarray(_predict(PARAMS, XT)).reshape(-1)
    p, m = a.shape[0], b.shape[0]
    train, test = [], []
    for t in TS:
        if np.isinf(t):
            w = -np.linalg.solve(j @ j.T, e0)
            e, g = np.zeros(p), (jt @ j.T) @ w
        elif method == "gd":  # d/dt (e, g) = (-A e, -B e)
            big = np.zeros((p + m, p + m))
            big[:p, :p], big[p:, :p] = -a, -b
            z = scipy.linalg.expm(big * t) @ np.concatenate([e0, np.zeros(m)])
            e, g = z[:p], z[p:]
        elif method == "heavy_ball":  # (e, e', g, g'): e'' = -a e' - A e, g'' = -a g' - B e
            big = np.zeros((2 * p + 2 * m,) * 2)
            big[:p, p : 2 * p] = np.eye(p)
            big[p : 2 * p, :p], big[p : 2 * p, p : 2 * p] = -a, -hyper * np.eye(p)
            o = 2 * p
            big[o : o + m, o + m :] = np.eye(m)
            big[o + m :, :p], big[o + m :, o + m :] = -b, -hyper * np.eye(m)
            z0 = np.concatenate([e0, np.zeros(p + 2 * m)])
            z = scipy.linalg.expm(big * t) @ z0
            e, g = z[:p], z[o : o + m]
        else:  # Nesterov: e'' = -(r/t) e' - A e, from the series at t0
            r, t0 = hyper, 1e-7
            if t == 0:
                e, g = e0, np.zeros(m)
            else:

                def rhs(s, z, r=r):
                    e, v, u = z[:p], z[p : 2 * p], z[2 * p + m :]
                    return np.concatenate([v, -(r / s) * v - a @ e, u, -(r / s) * u - b @ e])

                z0 = np.concatenate(
                    [
                        e0 - a @ e0 * t0**2 / (2 * (r + 1)),
                        -a @ e0 * t0 / (r + 1),
                        -b @ e0 * t0**2 / (2 * (r + 1)),
                        -b @ e0 * t0 / (r + 1),
                    ]
                )
                sol = scipy.integrate.solve_ivp(
                    rhs, (t0, t), z0, method="DOP853", rtol=1e-12, atol=1e-14
                )
                z = sol.y[:, -1]
                e, g = z[:p], z[2 * p : 2 * p + m]
        train.append(e + np.asarray(Y).reshape(-1))
        test.append(f0t + g)
    return np.array(train).reshape(len(TS), 6, 2), np.array(test).reshape(len(TS), 4, 2)


@pytest.mark.parametrize(
    ("method", "hyper"), [("gd", {}), ("heavy_ball", {"friction": 1.3}), ("nesterov", {})]
)
def test_predictions_equal_independent_references(method, hyper):
    out = ntk_predictions(_predict, PARAMS, X, Y, TS, XT, method=method, **hyper)
    train, test = _reference(method, hyper.get("friction", 3.0))
    assert out.train.shape == (5, 6, 2) and out.test.shape == (5, 4, 2)
    print(
        method, "max abs error", np.max(np.abs(out.train - train)), np.max(np.abs(out.test - test))
    )
    np.testing.assert_allclose(out.train, train, rtol=0, atol=1e-11)
    np.testing.assert_allclose(out.test, test, rtol=0, atol=1e-11)
    np.testing.assert_allclose(out.train[-1], Y, atol=1e-9)  # t = inf interpolates
    j = _jac(PARAMS, X)
    np.testing.assert_allclose(out.kernel_train, j @ j.T, rtol=1e-12, atol=1e-12)


def _two_layer(key, width, d=3):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (d, width)), "a": jax.random.normal(k2, (width,))}


def _net(p, x):  # NTK parameterisation: outputs and kernel stay O(1) as the width grows
    width = p["a"].shape[0]
    return jnp.tanh(x @ p["w"] / np.sqrt(x.shape[1])) @ p["a"] / np.sqrt(width)


def _train(method, params, x, y, eta, steps, hyper):
    """Full-batch training on L = 1/(2n) sum (f - y)^2; returns the parameters after `steps`."""
    grad = jax.grad(lambda p: 0.5 * jnp.mean((_net(p, x) - y) ** 2))

    def step(carry, k):
        p, prev = carry
        if method == "gd":
            new = jax.tree.map(lambda q, g: q - eta * g, p, grad(p))
            return (new, p), None
        if method == "heavy_ball":
            beta = 1 - hyper * np.sqrt(eta)
            look = p
        else:  # Nesterov: gradient at y_k = x_k + (k-1)/(k+2) (x_k - x_{k-1})
            beta = (k - 1.0) / (k + 2.0)
            look = jax.tree.map(lambda q, r: q + beta * (q - r), p, prev)
        g = grad(look)
        new = jax.tree.map(lambda q, r, gg: q + beta * (q - r) - eta * gg, p, prev, g)
        if method == "nesterov":
            new = jax.tree.map(lambda lk, gg: lk - eta * gg, look, g)
        return (new, p), None

    (p, _), _ = jax.lax.scan(step, (params, params), jnp.arange(1, steps + 1, dtype=x.dtype))
    return p


@pytest.mark.parametrize(
    ("method", "hyper", "eta", "steps"),
    [("gd", None, 0.05, 200), ("heavy_ball", 1.0, 2.5e-3, 200), ("nesterov", 3.0, 2.5e-3, 200)],
)
def test_wide_networks_trained_in_steps_follow_the_predictions(method, hyper, eta, steps):
    x = jax.random.normal(jax.random.key(5), (8, 3))
    y = jnp.sin(x[:, 0]) + 0.5 * x[:, 1]
    xt = jax.random.normal(jax.random.key(6), (5, 3))
    t = steps * (eta if method == "gd" else np.sqrt(eta))
    kw = {} if hyper is None else {"friction" if method == "heavy_ball" else "damping": hyper}
    gaps = []
    for width in (16, 256, 2048):
        params = _two_layer(jax.random.key(width), width)
        out = ntk_predictions(_net, params, x, y, [t], xt, method=method, **kw)
        trained = _train(method, params, x, y, eta, steps, hyper)
        net = np.concatenate([_net(trained, x), _net(trained, xt)])
        lin = np.concatenate([out.train[0], out.test[0]])
        moved = np.concatenate([out.train[0] - _net(params, x), out.test[0] - _net(params, xt)])
        gaps.append(float(np.max(np.abs(net - lin)) / np.max(np.abs(moved))))
    print(method, "relative gaps at widths 16, 256, 2048:", gaps)
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.02, gaps


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        ntk_predictions(_predict, PARAMS, X, Y, [1.0], method="adam")
    with pytest.raises(ValueError, match="y_train"):
        ntk_predictions(_predict, PARAMS, X, Y[:, 0], [1.0])
    with pytest.raises(ValueError, match="ts"):
        ntk_predictions(_predict, PARAMS, X, Y, [-1.0])
    with pytest.raises(ValueError, match="friction > 0"):
        ntk_predictions(_predict, PARAMS, X, Y, [np.inf], method="heavy_ball", friction=0.0)
    with pytest.raises(ValueError, match="damping"):
        ntk_predictions(_predict, PARAMS, X, Y, [1.0], method="gd", damping=3.0)
