"""Cross-kernels K(x1, x2) and the reductions over outputs, against a dense Jacobian.

For every model of tests/test_ntk_structured.py, every implementation and every reduction,
``ntk_gram(fn, params, x1, x2, reduction=...)`` is compared in float64 with the textbook
kernel J1 J2^T of the per-example Jacobians (``vmap(jacrev)``), traced or cut to its
per-example blocks in NumPy. Measured errors are about 1e-15 relative; the tolerance is 1e-12.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_ntk_structured import MODELS, _per_example_jacobian  # noqa: E402

IMPLEMENTATIONS = ("auto", "structured", "jacobian", "matrix_free")
REDUCTIONS = ("full", "trace", "diagonal")


def _second_batch(x, size, seed):
    """Another batch with the per-example shapes of x (a pytree)."""
    leaves, tree = jax.tree.flatten(x)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [
        jax.random.normal(k, (size, *leaf.shape[1:]), leaf.dtype)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
        else jnp.resize(leaf, (size, *leaf.shape[1:]))
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, new)


#: the dense per-example Jacobian, compiled once per model and batch shape
_JACOBIAN = jax.jit(_per_example_jacobian, static_argnums=0)


def _reference(fn, params, x1, x2, reduction):
    """The dense kernel, reduced in NumPy."""
    j1 = np.asarray(_JACOBIAN(fn, params, x1))
    j2 = np.asarray(_JACOBIAN(fn, params, x2))
    out = jax.eval_shape(fn, params, x1)
    c = int(np.prod(out.shape[1:]))
    b1, b2 = j1.shape[0] // c, j2.shape[0] // c
    full = j1 @ j2.T  # rows (i, c), columns (j, d)
    blocks = full.reshape(b1, c, b2, c)
    if reduction == "full":
        return full
    if reduction == "trace":
        return np.einsum("icjc->ij", blocks)
    diag = np.stack([blocks[i, :, i, :] for i in range(b1)])  # (b, C, C)
    return diag.reshape(b1) if out.ndim == 1 else diag


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


# dense and convolution layers (1-D and 2-D), a weight used twice, several heads and
# positions, and parameters with their own Jacobian: every path of the cross-Gram
CROSS_MODELS = ("mlp_c3", "mlp_scalar", "small_cnn_2d", "shared_weights", "fallback_mix")


def _implementations(fn, params, x):
    """All four, less ``"auto"`` where its plan is one form throughout: then it runs the same
    program as ``"structured"`` or ``"jacobian"``."""
    forms = {row.choice for row in inna_jax.ntk_plan(fn, params, x).rows}
    mixed = len(forms - {"per-leaf Jacobian"}) > 1
    return IMPLEMENTATIONS if mixed else tuple(i for i in IMPLEMENTATIONS if i != "auto")


@pytest.mark.parametrize("name", CROSS_MODELS)
def test_cross_kernel_and_reductions_equal_the_dense_kernel(name):
    fn, params, x1 = MODELS[name]()
    implementations = _implementations(fn, params, x1)
    b1 = jax.tree.leaves(x1)[0].shape[0]
    x2 = _second_batch(x1, b1 + 2, seed=7)
    x2_same = _second_batch(x1, b1, seed=8)
    cases = [(None, r) for r in REDUCTIONS] + [(x2, "full"), (x2, "trace"), (x2_same, "diagonal")]

    @jax.jit
    def every(p, a, others):
        return [
            [
                inna_jax.ntk_gram(fn, p, a, o, implementation=i, reduction=r)
                for (_, r), o in zip(cases, others, strict=True)
            ]
            for i in implementations
        ]

    results = every(params, x1, [o for o, _ in cases])
    for (other, reduction), *kernels in zip(cases, *results, strict=True):
        expected = _reference(fn, params, x1, x1 if other is None else other, reduction)
        for implementation, kernel in zip(implementations, kernels, strict=True):
            where = (implementation, reduction, "gram" if other is None else "cross")
            assert kernel.shape == expected.shape, (*where, kernel.shape, expected.shape)
            assert _rel(kernel, expected) < 1e-12, (*where, _rel(kernel, expected))


def test_cross_kernel_of_a_batch_with_itself_is_the_gram():
    fn, params, x = MODELS["heads_and_positions"]()

    @jax.jit
    def both(p, a):
        return [
            (
                inna_jax.ntk_gram(fn, p, a, implementation=i),
                inna_jax.ntk_gram(fn, p, a, a, implementation=i),
            )
            for i in IMPLEMENTATIONS
        ]

    for gram, cross in both(params, x):
        np.testing.assert_allclose(cross, gram, rtol=1e-13, atol=1e-13 * float(gram.max()))


def test_matrix_free_chunks_agree_for_every_reduction():
    fn, params, x1 = MODELS["mlp_c3"]()
    x2 = _second_batch(x1, 7, seed=3)
    cases = (("full", x2), ("trace", x2), ("diagonal", None))

    # chunk_size 4: 4 columns at a time for "full", one example (C = 3 columns) for the
    # others, the last chunk shorter; None: all columns at once
    @jax.jit
    def every(p, a, b):
        return [
            [
                inna_jax.ntk_gram(
                    fn,
                    p,
                    a,
                    None if other is None else b,
                    implementation="matrix_free",
                    reduction=reduction,
                    chunk_size=chunk,
                )
                for chunk in (None, 4)
            ]
            for reduction, other in cases
        ]

    for whole, part in every(params, x1, x2):
        np.testing.assert_allclose(part, whole, rtol=1e-13, atol=1e-13)


def test_bad_second_batch_and_reduction():
    fn, params, x = MODELS["mlp_c3"]()
    with pytest.raises(ValueError, match="reduction 'sum'"):
        inna_jax.ntk_gram(fn, params, x, reduction="sum")
    with pytest.raises(ValueError, match="inputs2 must have"):
        inna_jax.ntk_gram(fn, params, x, jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="one batch size"):
        inna_jax.ntk_gram(fn, params, x, jnp.zeros((3, 4)), reduction="diagonal")
