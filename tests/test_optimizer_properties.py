"""Property-based tests (hypothesis) of the shared optimizer suite, beside tests/test_optimizers.py.

Each optimizer of the project (inna, transform, innaprop, egn, sgn) gets random parameter
pytrees: nested dicts, tuples and lists whose leaves are scalars, zero-size and odd shapes,
in float32, bfloat16 and float64 (x64 is on, tests/conftest.py), and Python floats. For each:

* ``init`` and ``update`` run, under strict dtype promotion;
* the state after ``update`` has the structure and dtypes of the state from ``init``, and
  the updates have the structure of the parameters and each parameter's dtype
  (``jnp.asarray(p).dtype`` for a Python float, as ``optax.apply_updates`` returns it);
* ``jax.jit(update)`` gives the eager ``update`` to a stated tolerance (see ``_tolerance``:
  XLA:CPU fuses multiply-adds in compiled code);
* the update is finite where the gradient is (the INNA family works element by element, so
  the gradient gets NaN and infinite entries too); for EGN and SGN, which form their own
  gradient, the update is finite for a finite batch.

EGN and SGN get ``predict_fn(params, x) = sum_j x[:, block_j] @ ravel(leaf_j)``: every leaf
enters the outputs through its own block of input columns, so the Jacobian has a column per
parameter. Examples are derandomized (the same every run) and few, so the file stays under
a minute on one core.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inna_jax

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SHAPES = [(), (0,), (1,), (3,), (2, 3), (0, 2), (5, 1), (1, 1, 2)]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float64, float]  # float: a Python-float leaf


# --------------------------------------------------------------------------------------
# Random pytrees: a tree of (shape, dtype) leaf specs, filled from a seeded NumPy generator.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Leaf:
    """A leaf's shape and dtype (an object, so a leaf of the spec tree for jax.tree)."""

    shape: tuple[int, ...]
    dtype: Any


leaf_specs = st.builds(
    lambda shape, dtype: Leaf(() if dtype is float else shape, dtype),  # a Python float: ()
    st.sampled_from(SHAPES),
    st.sampled_from(DTYPES),
)
keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
trees = st.recursive(
    leaf_specs,
    lambda children: st.one_of(
        st.dictionaries(keys, children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
    ),
    max_leaves=6,
)


def _fill(spec_tree: Any, rng: np.random.Generator, scale: float = 1.0) -> Any:
    """Arrays (or Python floats) of the specs' shapes and dtypes, normal values."""

    def leaf(spec):
        values = scale * rng.normal(size=spec.shape)
        return float(values) if spec.dtype is float else jnp.asarray(values, spec.dtype)

    return jax.tree.map(leaf, spec_tree)


def _with_non_finite(grads: Any, rng: np.random.Generator) -> Any:
    """``grads`` with some entries NaN, +inf or -inf (each with probability 1/8)."""

    def leaf(g):
        if isinstance(g, float):
            return [g, math.nan, math.inf][rng.integers(3)] if rng.random() < 0.3 else g
        pick = rng.random(g.shape)
        bad = np.where(pick < 1 / 24, np.nan, np.where(pick < 2 / 24, np.inf, -np.inf))
        return jnp.where(jnp.asarray(pick < 3 / 24), jnp.asarray(bad, g.dtype), g)

    return jax.tree.map(leaf, grads)


def _dtypes(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x).dtype, tree)


# jit against eager, in units of the largest finite magnitude S of the example (parameters,
# gradients, state, updates). XLA:CPU contracts a * b + c into one fused multiply-add in
# compiled code (rounded once) where eager runs two rounded operations, so the two differ by
# a few roundings of the terms summed, whatever the optimizer (optax.adam and optax.sgd with
# momentum differ too). The INNA family: 8 eps of the compute dtype (float32 for bfloat16
# leaves), plus one bfloat16 rounding of the result (2^-8 relative) for bfloat16 buffers.
# EGN and SGN: the differences go through a Cholesky or CG solve; 2^10 eps.
def _tolerance(dtype: Any, family: str) -> float:
    dtype = jnp.dtype(dtype)
    compute = jnp.dtype(jnp.float32) if dtype == jnp.bfloat16 else dtype
    eps = float(jnp.finfo(compute).eps)
    tol = 8 * eps if family == "inna" else 2**10 * eps
    return tol + (2.0**-8 if dtype == jnp.bfloat16 else 0.0)


def _scale(*trees: Any) -> float:
    values = [np.asarray(x, np.float64).ravel() for t in trees for x in jax.tree.leaves(t)]
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.zeros(1)])
    return 1.0 + float(np.max(np.abs(finite)))


def _close(jitted: Any, eager: Any, scale: float, family: str) -> None:
    """Same non-finite entries, and finite entries within the tolerance above."""
    if not jnp.issubdtype(jnp.asarray(jitted).dtype, jnp.floating):
        np.testing.assert_array_equal(jitted, eager)  # the step count
        return
    a, b = np.asarray(jitted, np.float64), np.asarray(eager, np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.where(np.isinf(a), a, 0), np.where(np.isinf(b), b, 0))
    finite = np.isfinite(a) & np.isfinite(b)
    error = np.abs(a[finite] - b[finite])
    bound = _tolerance(jnp.asarray(jitted).dtype, family) * scale
    assert np.all(error <= bound), (np.max(error), bound)


def _check_update(tx, params, grads, extra, *, family: str):
    state0 = tx.init(params)
    updates, state = tx.update(grads, state0, params, **extra)
    jit_updates, jit_state = jax.jit(tx.update)(grads, state0, params, **extra)
    # structure and dtypes
    assert jax.tree.structure(state) == jax.tree.structure(state0)
    assert _dtypes(state) == _dtypes(state0)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    assert _dtypes(updates) == _dtypes(params)
    assert _dtypes(jit_state) == _dtypes(state0)
    # jitted equals eager, to the tolerance above
    scale = _scale(params, grads if family == "inna" else (), state, updates)
    for a, b in zip(jax.tree.leaves(jit_updates), jax.tree.leaves(updates), strict=True):
        _close(a, b, scale, family)
    for a, b in zip(jax.tree.leaves(jit_state), jax.tree.leaves(state), strict=True):
        _close(a, b, scale, family)
    # finite where the gradient is (the INNA family: element by element; EGN and SGN form
    # their own gradient from the finite batch)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        u = np.asarray(u, np.float64)
        finite_g = np.isfinite(np.asarray(g, np.float64)) if family == "inna" else True
        assert np.all(np.isfinite(u) | ~finite_g), (u, g)
    # and the parameters take the updates
    new = optax.apply_updates(params, updates)
    assert _dtypes(new) == _dtypes(params)
    return updates


# --------------------------------------------------------------------------------------
# The INNA family: element-wise, so the gradient may hold NaN and infinities.
# --------------------------------------------------------------------------------------
INNA_FAMILY = {
    "inna": lambda: inna_jax.inna(0.1, alpha=0.5, beta=0.1),
    "inna_s1_decays": lambda: inna_jax.inna(
        0.1,
        alpha=0.5,
        beta=0.1,
        initial_speed=1.0,
        weight_decay=1e-2,
        decoupled_weight_decay=1e-3,
    ),
    "transform": lambda: inna_jax.transform(0.5, 0.1, learning_rate=inna_jax.power_decay(0.1)),
    "innaprop": lambda: inna_jax.innaprop(1e-2, alpha=0.1, beta=0.9),
    "innaprop_f32_state": lambda: inna_jax.innaprop(1e-2, psi_dtype=jnp.float32),
}


@pytest.mark.parametrize("name", INNA_FAMILY)
@settings(max_examples=12, **SETTINGS)
@given(
    spec_tree=trees,
    seed=st.integers(0, 2**32 - 1),
    grad_scale=st.sampled_from([1.0, 1e-20, 1e20]),  # 1e20: g * g overflows in float32
    non_finite=st.booleans(),
)
def test_inna_family_properties(name, spec_tree, seed, grad_scale, non_finite):
    rng = np.random.default_rng(seed)
    params = _fill(spec_tree, rng)
    grads = _fill(spec_tree, rng, scale=grad_scale)
    if non_finite:
        grads = _with_non_finite(grads, rng)
    _check_update(INNA_FAMILY[name](), params, grads, {}, family="inna")


# --------------------------------------------------------------------------------------
# EGN and SGN: a model whose outputs depend on every leaf.
# --------------------------------------------------------------------------------------
def _linear_model(params: Any):
    """``predict(params, x) = sum_j x[:, block_j] @ ravel(leaf_j)`` in the promoted float
    dtype of the leaves (at least float32), and the number of input columns."""
    leaves = jax.tree.leaves(params)
    sizes = [int(np.size(x)) for x in leaves]
    with jax.numpy_dtype_promotion("standard"):
        dtype = jnp.result_type(*(jnp.asarray(x).dtype for x in leaves), jnp.float32)

    def predict(p, x):
        out = jnp.zeros(x.shape[0], dtype)
        start = 0
        for leaf, size in zip(jax.tree.leaves(p), sizes, strict=True):
            if size:
                w = jnp.ravel(jnp.asarray(leaf)).astype(dtype)
                out = out + x[:, start : start + size] @ w
            start += size
        return out

    return predict, sum(sizes), dtype


GAUSS_NEWTON = {
    "egn": lambda predict: inna_jax.egn(predict, "mse", learning_rate=0.5, regularizer=1e-2),
    "egn_line_search_lm": lambda predict: inna_jax.egn(
        predict,
        "mse",
        regularizer=1e-2,
        line_search=True,
        adaptive_regularization=True,
        momentum=0.5,
    ),
    "sgn": lambda predict: inna_jax.sgn(predict, "mse", regularizer=1e-2, cg_iterations=3),
    "sgn_matrix_free": lambda predict: inna_jax.sgn(
        predict, "mse", regularizer=1e-2, cg_iterations=3, implementation="matrix_free"
    ),
}


@pytest.mark.parametrize("name", GAUSS_NEWTON)
@settings(max_examples=4, **SETTINGS)
@given(spec_tree=trees, seed=st.integers(0, 2**32 - 1))
def test_gauss_newton_properties(name, spec_tree, seed):
    rng = np.random.default_rng(seed)
    params = _fill(spec_tree, rng, scale=0.5)
    predict, columns, dtype = _linear_model(params)
    b = 3
    inputs = jnp.asarray(rng.normal(size=(b, columns)) / max(columns, 1), dtype)
    targets = jnp.asarray(rng.normal(size=b) / 4, dtype)
    grads = jax.tree.map(jnp.zeros_like, params)  # not used by EGN and SGN
    extra = dict(inputs=inputs, targets=targets)
    _check_update(GAUSS_NEWTON[name](predict), params, grads, extra, family="gauss_newton")
