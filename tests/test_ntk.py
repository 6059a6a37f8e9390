"""ntk_gram against a dense Jacobian and against the analytic wide two-layer ReLU kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import inna_jax


def _mlp(key, d, h, c):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (d, h)) / np.sqrt(d),
        "b1": 0.1 * jax.random.normal(k2, (h,)),
        "w2": jax.random.normal(k3, (h, c)) / np.sqrt(h),
    }


def _predict(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _predict_scalar(p, x):
    return _predict(p, x)[:, 0]


def _dense_gram(predict_fn, params, x):
    flat, unravel = ravel_pytree(params)
    jac = jax.jacfwd(lambda f: predict_fn(unravel(f), x).reshape(-1))(flat)
    return np.asarray(jac @ jac.T)


@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("implementation", ["jacobian", "matrix_free"])
def test_matches_dense_jacobian(outputs, implementation):
    params = _mlp(jax.random.key(0), 4, 7, outputs)
    x = jax.random.normal(jax.random.key(1), (6, 4))
    fn = _predict_scalar if outputs == 1 else _predict
    gram = inna_jax.ntk_gram(fn, params, x, implementation=implementation, chunk_size=4)
    expected = _dense_gram(fn, params, x)
    assert gram.shape == (6 * outputs, 6 * outputs)
    np.testing.assert_allclose(gram, expected, rtol=1e-12, atol=1e-12)


def test_chunk_sizes_agree():
    params = _mlp(jax.random.key(2), 3, 5, 2)
    x = jax.random.normal(jax.random.key(3), (5, 3))
    full = inna_jax.ntk_gram(_predict, params, x, implementation="matrix_free")
    for chunk in (1, 3, 100):
        part = inna_jax.ntk_gram(
            _predict, params, x, implementation="matrix_free", chunk_size=chunk
        )
        np.testing.assert_allclose(part, full, rtol=1e-13, atol=1e-13)


def test_wide_relu_network_matches_analytic_kernel():
    # f(x) = m^{-1/2} sum_r a_r relu(w_r . x), a_r = +-1 fixed, w_r ~ N(0, I), W trained.
    m, d, b = 20_000, 5, 4
    kw, ka, kx = jax.random.split(jax.random.key(4), 3)
    w = jax.random.normal(kw, (d, m))
    a = jnp.where(jax.random.bernoulli(ka, 0.5, (m,)), 1.0, -1.0)
    x = jax.random.normal(kx, (b, d))

    def predict(weights, inputs):
        return jax.nn.relu(inputs @ weights) @ a / np.sqrt(m)

    xn = np.asarray(x)
    dots = xn @ xn.T
    norms = np.linalg.norm(xn, axis=1)
    cos = np.clip(dots / np.outer(norms, norms), -1.0, 1.0)
    analytic = dots * (np.pi - np.arccos(cos)) / (2 * np.pi)
    # Monte Carlo over m neurons: each entry is a mean of m terms bounded by |x_i||x_j|,
    # so its error is about |x_i||x_j| / sqrt(m)
    tol = 4 * np.outer(norms, norms) / np.sqrt(m)
    for implementation in ("jacobian", "matrix_free"):
        gram = np.asarray(
            inna_jax.ntk_gram(predict, w, x, implementation=implementation, chunk_size=2)
        )
        assert np.all(np.abs(gram - analytic) <= tol), (gram, analytic)
    # and a narrow network is visibly off, so the comparison has teeth
    narrow = np.asarray(inna_jax.ntk_gram(lambda ww, xx: jax.nn.relu(xx @ ww) @ a[:3], w[:, :3], x))
    assert np.max(np.abs(narrow / 3 - analytic)) > np.max(tol)


def test_bad_arguments():
    params = _mlp(jax.random.key(5), 3, 4, 2)
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="implementation"):
        inna_jax.ntk_gram(_predict, params, x, implementation="dense")
    with pytest.raises(ValueError, match="chunk_size"):
        inna_jax.ntk_gram(_predict, params, x, implementation="matrix_free", chunk_size=0)
    with pytest.raises(ValueError, match=r"\(b,\) or \(b, C\)"):
        inna_jax.ntk_gram(lambda p, x: _predict(p, x)[:, :, None], params, x)
