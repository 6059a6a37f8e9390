"""The layer-wise NTK: layers found in the traced program, checked against a dense Jacobian.

Every model is compared in float64 with the textbook Gram matrix of the per-example Jacobian
(``vmap(jacrev)`` over every floating-point leaf, concatenated), for the four
implementations. Measured relative errors are about 1e-15; the tolerance is 1e-10.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import inna_jax
from inna_jax.gauss_newton._find_layers import find_layers
from inna_jax.gauss_newton._layerwise_jacobian import layerwise_jacobian
from inna_jax.models import MLP, NiN, SmallCNN

IMPLEMENTATIONS = ("auto", "structured", "jacobian", "matrix_free")


def _f64(tree):
    return jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _per_example_jacobian(fn, params, x):
    """(b*C, P_float): rows d f_c(x_i) / d theta, every inexact leaf, example-major."""
    leaves, tree = jax.tree.flatten(params)
    floats = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.inexact)]

    def one(xi):
        xi = jax.tree.map(lambda a: a[None], xi)

        def f(values):
            full = list(leaves)
            for i, v in zip(floats, values, strict=True):
                full[i] = v
            return jnp.reshape(fn(jax.tree.unflatten(tree, full), xi)[0], (-1,))

        jac = jax.jacrev(f)([leaves[i] for i in floats])
        return jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)

    jac = jax.vmap(one)(x)  # (b, C, P)
    return jac.reshape(-1, jac.shape[-1])


@jax.jit
def _gram_of(jac):
    return jac @ jac.T


def _reference_gram(fn, params, x):
    return np.asarray(_gram_of(jax.jit(lambda p, xx: _per_example_jacobian(fn, p, xx))(params, x)))


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def _nnx(module, *, rest=False):
    if rest:
        graphdef, params, other = nnx.split(module, nnx.Param, ...)
        return (lambda p, x: nnx.merge(graphdef, p, other)(x)), _f64(params)
    graphdef, params = nnx.split(module, nnx.Param)
    return (lambda p, x: nnx.merge(graphdef, p)(x)), _f64(params)


# ---------------------------------------------------------------------------------------------
# models


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def mlp_c3():
    fn, p = _nnx(MLP(4, (5, 6), 3, rngs=nnx.Rngs(0)))
    return fn, p, jax.random.normal(_keys(1)[0], (5, 4))


def mlp_scalar():
    fn, p = _nnx(MLP(4, (5,), 1, rngs=nnx.Rngs(1)))
    return (lambda q, x: fn(q, x)[:, 0]), p, jax.random.normal(_keys(1)[0], (5, 4))


def small_cnn_2d():
    fn, p = _nnx(SmallCNN((6, 6, 2), 3, channels=(4, 6), rngs=nnx.Rngs(2)))
    return fn, p, jax.random.normal(_keys(1)[0], (3, 72))


def small_cnn_1d():
    fn, p = _nnx(SmallCNN((10, 2), 3, channels=(4, 5), rngs=nnx.Rngs(3)))
    return fn, p, jax.random.normal(_keys(1)[0], (3, 20))


class _NormNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 6, rngs=rngs)
        self.bn = nnx.BatchNorm(6, use_running_average=True, rngs=rngs)
        self.ln = nnx.LayerNorm(6, rngs=rngs)
        self.l2 = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.tanh(self.ln(self.bn(self.l1(x)))))


def batchnorm_eval():
    model = _NormNet(nnx.Rngs(4))
    k = _keys(5, 4)
    model.bn.mean.value = jax.random.normal(k[0], (6,))
    model.bn.var.value = jnp.exp(jax.random.normal(k[1], (6,)))
    model.bn.scale.value = 1 + 0.3 * jax.random.normal(k[2], (6,))
    model.bn.bias.value = 0.3 * jax.random.normal(k[3], (6,))
    fn, p = _nnx(model, rest=True)
    return fn, p, jax.random.normal(k[4], (5, 4))


def shared_weights():
    k = _keys(7, 5)
    p = {
        "w0": jax.random.normal(k[0], (3, 5)),
        "w": jax.random.normal(k[1], (5, 5)) / 2,
        "b": 0.1 * jax.random.normal(k[2], (5,)),
        "k": jax.random.normal(k[3], (3, 3, 1, 1)) / 3,  # a conv kernel used twice
        "out": jax.random.normal(k[4], (5, 2)),
    }

    def fn(q, x):
        h = jnp.tanh(jnp.tanh(x @ q["w0"]) @ q["w"] + q["b"])
        h = jnp.tanh(h @ q["w"])  # the same weight again
        img = h[:, :4].reshape(-1, 2, 2, 1)
        dn = ("NHWC", "HWIO", "NHWC")
        img = jnp.tanh(lax.conv_general_dilated(img, q["k"], (1, 1), "SAME", dimension_numbers=dn))
        img = lax.conv_general_dilated(img, q["k"], (1, 1), "SAME", dimension_numbers=dn)
        return h @ q["out"] + jnp.sum(img, axis=(1, 2))

    return fn, _f64(p), jax.random.normal(k[5], (4, 3))


def plain_dict():
    k = _keys(5, 6)
    p = {
        "W1": jax.random.normal(k[0], (3, 7)),
        "b1": jax.random.normal(k[1], (7,)),
        "W2": jax.random.normal(k[2], (7, 2)),
        "b2": jax.random.normal(k[3], (2,)),
    }
    return (
        lambda q, x: jnp.tanh(x @ q["W1"] + q["b1"]) @ q["W2"] + q["b2"],
        _f64(p),
        jax.random.normal(k[4], (6, 3)),
    )


def plain_dict_transposed():
    fn, p, x = plain_dict()
    return (
        lambda q, x: (q["W2"].T @ jnp.tanh(q["W1"].T @ x.T + q["b1"][:, None])).T + q["b2"],
        p,
        x,
    )


def conv_variants():
    k = _keys(6, 7)
    p = {
        "k1": jax.random.normal(k[0], (4, 2, 3, 2)),  # OIHW, strides, dilation, padding
        "c1": jax.random.normal(k[1], (4,)),
        "k2": jax.random.normal(k[2], (6, 2, 3, 3)),  # 2 feature groups
        "c2": jax.random.normal(k[3], (6,)),
        "k3": 0.3 * jax.random.normal(k[4], (2, 2, 6, 3)),  # HWIO, lhs dilation
    }

    def fn(q, x):
        y = lax.conv_general_dilated(
            x,
            q["k1"],
            (1, 2),
            ((1, 0), (2, 1)),
            rhs_dilation=(2, 1),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        y = jnp.tanh(y + q["c1"][None, :, None, None])
        y = lax.conv_general_dilated(
            y,
            q["k2"],
            (1, 1),
            "SAME",
            feature_group_count=2,
            dimension_numbers=("NCHW", "OIHW", "NHWC"),
        )
        y = jnp.tanh(y + q["c2"])
        y = lax.conv_general_dilated(
            y,
            q["k3"],
            (2, 1),
            ((0, 1), (1, 1)),
            lhs_dilation=(2, 1),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return jnp.mean(y, axis=(1, 2))

    return fn, _f64(p), jax.random.normal(k[5], (3, 2, 7, 6))


def heads_and_positions():
    k = _keys(6, 8)
    p = {
        "wq": jax.random.normal(k[0], (4, 2, 3)),
        "wo": jax.random.normal(k[1], (2, 3, 5)),
        "bo": jax.random.normal(k[2], (5,)),
        "wg": jax.random.normal(k[3], (2, 4, 3)),
    }

    def fn(q, x):  # x: (b, T, 4); a dense layer over T positions, per-head weights
        h = jnp.tanh(jnp.einsum("btd,dhe->bthe", x, q["wq"]))
        y = jnp.einsum("bthe,heo->bto", h, q["wo"]) + q["bo"]
        g = jnp.tanh(lax.dot_general(x[:, :2], q["wg"], (((2,), (1,)), ((1,), (0,)))))
        return jnp.mean(y, axis=1) + jnp.sum(g, axis=(0, 2))[:, None]

    return fn, _f64(p), jax.random.normal(k[4], (3, 6, 4))


@jax.custom_jvp
def _softplus_a(x, a):
    return jnp.logaddexp(a * x, 0.0)


@_softplus_a.defjvp
def _softplus_a_jvp(primals, tangents):
    x, a = primals
    dx, da = tangents
    s = jax.nn.sigmoid(a * x)
    return _softplus_a(x, a), s * (a * dx + x * da)


def fallback_mix():
    """An embedding, a parameter inside a custom_jvp rule (a scale in its body), a parameter
    behind a nonlinearity (a per-leaf fallback), a scan over weights, an int leaf and a dict
    input."""
    k = _keys(6, 9)
    p = {
        "emb": jax.random.normal(k[0], (10, 4)),
        "a": jnp.array(1.3),
        "t": jnp.array(0.4),
        "ws": jax.random.normal(k[1], (3, 4, 4)) * 0.5,
        "w": jax.random.normal(k[2], (4, 2)),
        "count": jnp.array(3),
    }

    def fn(q, x):
        h = q["emb"][x["tok"]].sum(1) + x["feat"]
        h = _softplus_a(h, q["a"]) * jnp.cos(q["t"])
        h, _ = lax.scan(lambda c, w: (jnp.tanh(c @ w), None), h, q["ws"])
        return h @ q["w"]

    x = {"tok": jax.random.randint(k[3], (4, 3), 0, 10), "feat": jax.random.normal(k[4], (4, 4))}
    return fn, _f64(p), x


MODELS = {
    "mlp_c3": mlp_c3,
    "mlp_scalar": mlp_scalar,
    "small_cnn_2d": small_cnn_2d,
    "small_cnn_1d": small_cnn_1d,
    "batchnorm_eval": batchnorm_eval,
    "shared_weights": shared_weights,
    "plain_dict": plain_dict,
    "plain_dict_transposed": plain_dict_transposed,
    "conv_variants": conv_variants,
    "heads_and_positions": heads_and_positions,
    "fallback_mix": fallback_mix,
}


def _all_grams(fn, implementations=IMPLEMENTATIONS):
    """The Gram matrix of every implementation, compiled as one program."""
    return jax.jit(
        lambda p, xx: [inna_jax.ntk_gram(fn, p, xx, implementation=i) for i in implementations]
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gram_equals_dense_jacobian_gram(name):
    fn, params, x = MODELS[name]()
    expected = _reference_gram(fn, params, x)
    grams = _all_grams(fn)(params, x)
    for implementation, gram in zip(IMPLEMENTATIONS, grams, strict=True):
        assert gram.shape == expected.shape
        assert _rel(gram, expected) < 1e-10, (implementation, _rel(gram, expected))


def test_nin_small_input():
    fn, params = _nnx(NiN(10, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    expected = _reference_gram(fn, params, x)
    implementations = ("auto", "structured", "jacobian")
    grams = _all_grams(fn, implementations)(params, x)
    for implementation, gram in zip(implementations, grams, strict=True):
        assert _rel(gram, expected) < 1e-10, (implementation, _rel(gram, expected))
    plan = inna_jax.ntk_plan(fn, params, x)
    assert [r.kind for r in plan.rows] == ["conv"] * 9  # every convolution placed, with bias
    assert all("bias" in r.name for r in plan.rows)


def test_layers_found_in_flax_models():
    fn, params, x = small_cnn_2d()
    plan = inna_jax.ntk_plan(fn, params, x)
    assert [(r.name, r.kind, r.positions) for r in plan.rows] == [
        ("conv1.kernel + conv1.bias", "conv", 36),
        ("conv2.kernel + conv2.bias", "conv", 9),
        ("head.kernel + head.bias", "dense", 1),
    ]
    assert [r.features_in for r in plan.rows] == [3 * 3 * 2 + 1, 3 * 3 * 4 + 1, 9 * 6 + 1]
    assert "conv1.kernel + conv1.bias" in str(plan)
    # normalisation scales and biases are element-wise rows; the two Linear layers are placed
    fn, params, x = batchnorm_eval()
    rows = inna_jax.ntk_plan(fn, params, x).rows
    assert [(r.name, r.kind) for r in rows] == [
        ("l1.kernel + l1.bias", "dense"),
        ("bn.scale", "scale"),
        ("bn.bias", "shift"),
        ("ln.scale", "scale"),
        ("ln.bias", "shift"),
        ("l2.kernel + l2.bias", "dense"),
    ]
    assert {r.choice for r in rows[1:5]} == {"elementwise"}
    # a weight used twice: one row per use, its Jacobian summed; its bias is not merged
    fn, params, x = shared_weights()
    rows = inna_jax.ntk_plan(fn, params, x).rows
    shared = [r for r in rows if r.name.startswith(("w[", "k["))]
    assert len(shared) == 4 and {r.choice for r in shared} == {"jacobian"}
    assert "b" in {r.name for r in rows if r.kind == "shift"}
    # the forced choices
    fn, params, x = mlp_c3()
    for implementation in ("structured", "jacobian"):
        plan = inna_jax.ntk_plan(fn, params, x, implementation=implementation)
        assert {r.choice for r in plan.rows} == {implementation}


def test_auto_picks_the_cheaper_way():
    # conv1 of the small CNN has 64 positions and 448 parameters: its Jacobian is cheaper;
    # the dense layers are always cheaper in the layer-wise form
    fn, params = _nnx(SmallCNN((8, 8, 3), 10, rngs=nnx.Rngs(0)))
    plan = inna_jax.ntk_plan(fn, params, jnp.zeros((64, 192)), columns=9)
    for row in plan.rows:
        cheaper = min(row.costs, key=row.costs.get)
        assert row.choice == cheaper, row
    assert plan.rows[0].choice == "jacobian" and plan.rows[-1].choice == "structured"
    assert plan.columns == 9 and plan.batch == 64


@pytest.mark.parametrize("name", ["small_cnn_2d", "shared_weights", "fallback_mix"])
def test_gram_diagonal_is_the_diagonal_of_the_gram(name):
    fn, params, x = MODELS[name]()

    @jax.jit
    def both(p, xx):
        lj = layerwise_jacobian(fn, p, xx)
        return lj.gram_diagonal(), jnp.diagonal(lj.gram())

    diagonal, of_gram = both(params, x)
    np.testing.assert_allclose(diagonal, of_gram, rtol=1e-12)


@pytest.mark.parametrize("name", ["small_cnn_2d", "shared_weights", "fallback_mix"])
def test_vjp_and_jvp_match_autodiff(name):
    fn, params, x = MODELS[name]()
    b = jax.tree.leaves(x)[0].shape[0]
    c = int(np.prod(jax.eval_shape(fn, params, x).shape[1:]))
    m = c + 1
    cols = jax.random.normal(jax.random.key(3), (c, m))  # the same S for every example
    u = jax.random.normal(jax.random.key(4), (2, b, m))
    leaves, tree = jax.tree.flatten(params)
    floats = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    tangent = [
        jax.random.normal(jax.random.key(5 + i), leaf.shape)
        if i in floats
        else jnp.zeros_like(leaf)
        for i, leaf in enumerate(leaves)
    ]

    def f(values, p):
        full = jax.tree.leaves(p)
        for i, v in zip(floats, values, strict=True):
            full[i] = v
        return fn(jax.tree.unflatten(tree, full), x).reshape(b, c)

    @jax.jit
    def both(p, u, tangent):
        lj = layerwise_jacobian(fn, p, x, lambda out: cols)
        primals = [jax.tree.leaves(p)[i] for i in floats]
        _, vjp_fn = jax.vjp(lambda v: f(v, p), primals)
        expected = [vjp_fn(u[r] @ cols.T)[0] for r in range(2)]
        _, jv = jax.jvp(lambda v: f(v, p), (primals,), ([tangent[i] for i in floats],))
        return lj.vjp(u), expected, lj.jvp(tangent), jv @ cols

    got, expected, jvp, expected_jvp = both(params, u, tangent)
    for r in range(2):
        for i, e in zip(floats, expected[r], strict=True):
            np.testing.assert_allclose(got[r][i], e, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jvp, expected_jvp, rtol=1e-10, atol=1e-12)


def test_chunks_and_abstract_params():
    fn, params, x = small_cnn_2d()
    full, chunked = jax.jit(
        lambda p, xx: (inna_jax.ntk_gram(fn, p, xx), inna_jax.ntk_gram(fn, p, xx, chunk_size=2))
    )(params, x)
    np.testing.assert_allclose(chunked, full, rtol=1e-12, atol=1e-12)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    plan = inna_jax.ntk_plan(fn, abstract, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert len(plan.rows) == 3
    assert len(find_layers(fn, abstract, x).layers) == 3


def test_bad_arguments():
    fn, params, x = plain_dict()
    with pytest.raises(ValueError, match="unknown implementation 'dense'"):
        inna_jax.ntk_gram(fn, params, x, implementation="dense")
    with pytest.raises(ValueError, match="chunk_size"):
        inna_jax.ntk_gram(fn, params, x, chunk_size=0)
    with pytest.raises(ValueError, match="matrix_free"):
        inna_jax.ntk_plan(fn, params, x, implementation="matrix_free")
    with pytest.raises(ValueError, match=r"\(b,\) or \(b, C\)"):
        inna_jax.ntk_gram(lambda p, xx: fn(p, xx)[:, :, None], params, x)
