"""The Gram of Jacobian rows built from its lower half (n >= SYMMETRIC_MIN_ROWS), in float64.

``cross_gram`` builds :math:`\\sum_l R_lR_l^\\top` of a batch with itself as
:math:`[R_0; R_1]R_0^\\top` and :math:`R_1R_1^\\top`, the upper right block mirrored. Here a small
model whose dense layer acts at several positions (so its rows are Jacobian rows) and whose
``exp``-ed scale is a per-leaf Jacobian, at ``b C`` (or ``b (C - 1)`` for EGN) at and above the
threshold, against the textbook ``vmap(jacrev)`` Gram and the dense Gauss-Newton solve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_ntk_structured import _per_example_jacobian, _reference_gram, _rel

import inna_jax
from inna_jax.gauss_newton._layerwise_jacobian import SYMMETRIC_MIN_ROWS

TOL = 1e-10


def _model(classes):
    k = jax.random.split(jax.random.key(0), 4)
    params = {
        "w": jax.random.normal(k[0], (3, 5), jnp.float64),
        "b": jax.random.normal(k[1], (5,), jnp.float64),
        "s": jax.random.normal(k[2], (5,), jnp.float64) / 4,
        "head": jax.random.normal(k[3], (5, classes), jnp.float64),
    }

    def fn(p, x):  # x: (b, 4 positions, 3)
        h = jnp.tanh(x @ p["w"] + p["b"]).sum(axis=1)
        return (h * jnp.exp(p["s"])) @ p["head"]

    return fn, params


def _inputs(b):
    return jax.random.normal(jax.random.key(1), (b, 4, 3), jnp.float64)


@pytest.mark.parametrize("b", [64, 65])
@pytest.mark.parametrize("implementation", ["auto", "jacobian"])
def test_half_gram_matches_dense(b, implementation):
    fn, params = _model(8)
    x = _inputs(b)
    assert b * 8 >= SYMMETRIC_MIN_ROWS
    plan = inna_jax.ntk_plan(fn, params, x, implementation=implementation)
    assert [r.choice for r in plan.rows] == (
        ["jacobian", "structured" if implementation == "auto" else "jacobian", "per-leaf Jacobian"]
    )
    got = np.asarray(
        jax.jit(lambda p, xx: inna_jax.ntk_gram(fn, p, xx, implementation=implementation))(
            params, x
        )
    )
    ref = _reference_gram(fn, params, x)
    assert _rel(got, ref) < TOL
    # the mirrored block is the transpose of the computed one
    h = got.shape[0] // 2
    np.testing.assert_array_equal(got[:h, h:], got[h:, :h].T)


def test_egn_direction_with_half_gram_matches_dense():
    """m = C - 1 = 8 loss-root columns, n = 64 * 8 = 512 rows."""
    fn, params = _model(9)
    x = _inputs(64)
    out = np.asarray(fn(params, x))
    b, c = out.shape
    assert b * (c - 1) >= SYMMETRIC_MIN_ROWS
    labels = jnp.arange(b) % c
    lam = 0.1
    jac = np.asarray(jax.jit(lambda p, xx: _per_example_jacobian(fn, p, xx))(params, x))
    probs = np.exp(out - out.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    q = np.zeros((b * c, b * c))
    for i in range(b):
        block = np.diag(probs[i]) - np.outer(probs[i], probs[i])
        q[i * c : (i + 1) * c, i * c : (i + 1) * c] = block
    grad = jac.T @ (probs - np.eye(c)[np.asarray(labels)]).reshape(-1) / b
    ref = -np.linalg.solve(jac.T @ q @ jac / b + lam * np.eye(jac.shape[1]), grad)
    direction = jax.jit(
        lambda p, xx, yy: inna_jax.egn_direction(
            fn, p, xx, yy, loss="cross_entropy", regularizer=lam
        )
    )(params, x, labels)
    got = np.concatenate([np.asarray(direction[k]).reshape(-1) for k in sorted(direction)])
    assert _rel(got, ref) < TOL
