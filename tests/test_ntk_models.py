"""The layer-wise Gram on the models people train today, against a dense Jacobian in float64.

Scan over stacked layers (plain ``lax.scan``, ``eqx.nn.MLP(scan=True)``, ``nnx.scan``,
``flax.linen.scan``), recurrences (a GRU over ``lax.scan``, ``nnx.RNN``), ``remat`` and
``jit`` inside the model, a transformer classifier (embedding, positional table, LayerNorm,
RMSNorm, attention projections). Each Gram matrix is compared with the textbook
``vmap(jacrev)`` Gram over every floating-point leaf (tests/test_ntk_structured.py); the
measured relative errors are about 1e-15, the tolerance is 1e-10. The plans are checked too:
no parameter is left to a per-leaf Jacobian, and a scan costs what its unrolled twin costs.
"""

import functools

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_ntk_structured import _f64, _nnx, _per_example_jacobian, _rel

import inna_jax
from inna_jax.gauss_newton._find_layers import find_layers
from inna_jax.gauss_newton._layerwise_jacobian import layerwise_jacobian

F64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}
TOL = 1e-10


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------------------------------------
# models


def _blocks(depth=3, width=4, seed=0):
    k = _keys(4, seed)
    return {
        "win": jax.random.normal(k[0], (3, width), jnp.float64),
        "blocks": {
            "w": jax.random.normal(k[1], (depth, width, width), jnp.float64) / 2,
            "b": jax.random.normal(k[2], (depth, width), jnp.float64),
        },
        "wout": jax.random.normal(k[3], (width, 2), jnp.float64),
    }


def _scan_residual(p, x):
    def block(h, w):
        return h + jnp.tanh(h @ w["w"] + w["b"]), None

    h, _ = jax.lax.scan(block, x @ p["win"], p["blocks"])
    return h @ p["wout"]


def _unrolled_residual(p, x):
    h = x @ p["win"]
    for w in p["blocks"]:
        h = h + jnp.tanh(h @ w["w"] + w["b"])
    return h @ p["wout"]


def _unstack(p):
    depth = p["blocks"]["w"].shape[0]
    blocks = [jax.tree.map(lambda a, t=t: a[t], p["blocks"]) for t in range(depth)]
    return {**p, "blocks": blocks}


def scan_residual():
    return _scan_residual, _blocks(), jax.random.normal(_keys(1, 1)[0], (5, 3))


def unrolled_residual():
    return _unrolled_residual, _unstack(_blocks()), jax.random.normal(_keys(1, 1)[0], (5, 3))


def eqx_mlp_scan():
    mlp = eqx.nn.MLP(3, 2, 4, 3, activation=jnp.tanh, scan=True, key=_keys(1, 2)[0])
    params, static = eqx.partition(mlp, eqx.is_inexact_array)
    params = _f64(params)
    fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731
    return fn, params, jax.random.normal(_keys(1, 3)[0], (5, 3))


class _NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.ln = nnx.LayerNorm(4, rngs=rngs, **F64)
        self.lin = nnx.Linear(4, 4, rngs=rngs, **F64)

    def __call__(self, x):
        return x + jnp.tanh(self.lin(self.ln(x)))


class _NnxScan(nnx.Module):
    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return _NnxBlock(rngs)

        self.blocks = make(rngs)
        self.inp = nnx.Linear(3, 4, rngs=rngs, **F64)
        self.out = nnx.Linear(4, 2, rngs=rngs, **F64)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(h, block):
            return block(h)

        return self.out(run(self.inp(x), self.blocks))


def nnx_scan():
    fn, params = _nnx(_NnxScan(nnx.Rngs(4)), rest=True)
    return fn, params, jax.random.normal(_keys(1, 5)[0], (5, 3))


class _LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return h + jnp.tanh(nn.Dense(4, param_dtype=jnp.float64)(h)), None


class _LinenScan(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, param_dtype=jnp.float64)(x)
        stack = nn.scan(
            _LinenBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=3
        )
        h, _ = stack()(h, None)
        return nn.Dense(2, param_dtype=jnp.float64)(h)


def linen_scan():
    model = _LinenScan()
    x = jax.random.normal(_keys(1, 6)[0], (5, 3))
    return (lambda p, xx: model.apply(p, xx)), model.init(_keys(1, 7)[0], x), x


def _gru(p, x):  # x: (b, T, d); the same weights at every time step
    def cell(h, xt):
        z = jax.nn.sigmoid(xt @ p["wz"] + h @ p["uz"] + p["bz"])
        r = jax.nn.sigmoid(xt @ p["wr"] + h @ p["ur"])
        n = jnp.tanh(xt @ p["wn"] + (r * h) @ p["un"])
        return (1 - z) * n + z * h, None

    h, _ = jax.lax.scan(cell, jnp.zeros((x.shape[0], 4)), x.transpose(1, 0, 2))
    return h @ p["wo"]


def gru_scan():
    names = ["wz", "uz", "bz", "wr", "ur", "wn", "un", "wo"]
    shapes = [(3, 4), (4, 4), (4,), (3, 4), (4, 4), (3, 4), (4, 4), (4, 2)]
    keys = _keys(len(names), 8)
    params = {
        n: jax.random.normal(k, s, jnp.float64) / 2
        for n, k, s in zip(names, keys, shapes, strict=True)
    }
    return _gru, params, jax.random.normal(_keys(1, 9)[0], (4, 6, 3))


class _NnxGru(nnx.Module):
    def __init__(self, rngs):
        self.rnn = nnx.RNN(nnx.GRUCell(3, 4, rngs=rngs, **F64))
        self.head = nnx.Linear(4, 2, rngs=rngs, **F64)

    def __call__(self, x):
        return self.head(self.rnn(x, initial_carry=jnp.zeros((x.shape[0], 4)))[:, -1])


def nnx_rnn():
    fn, params = _nnx(_NnxGru(nnx.Rngs(10)), rest=True)
    return fn, params, jax.random.normal(_keys(1, 11)[0], (4, 5, 3))


def _remat_shared(p, x):
    @jax.checkpoint
    def body(h, _):
        return jnp.tanh(h @ p["w"] + p["b"]), None

    h, _ = jax.lax.scan(body, jax.jit(lambda a: a @ p["win"])(x), None, length=4)
    return h @ p["wo"]


def remat_shared():
    k = _keys(4, 12)
    params = {
        "w": jax.random.normal(k[0], (4, 4), jnp.float64) / 2,
        "b": jax.random.normal(k[1], (4,), jnp.float64),
        "win": jax.random.normal(k[2], (3, 4), jnp.float64),
        "wo": jax.random.normal(k[3], (4, 2), jnp.float64),
    }
    return _remat_shared, params, jax.random.normal(_keys(1, 13)[0], (5, 3))


class _Attention(nnx.Module):
    def __init__(self, d, heads, rngs):
        self.q = nnx.Linear(d, d, rngs=rngs, **F64)
        self.k = nnx.Linear(d, d, rngs=rngs, **F64)
        self.v = nnx.Linear(d, d, rngs=rngs, **F64)
        self.o = nnx.Linear(d, d, rngs=rngs, **F64)
        self.heads = heads

    def __call__(self, x):
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        w = jax.nn.softmax(jnp.einsum("bthe,bshe->bhts", q, k) / np.sqrt(d // self.heads))
        return self.o(jnp.einsum("bhts,bshe->bthe", w, v).reshape(b, t, d))


class _Block(nnx.Module):
    def __init__(self, d, rngs):
        self.ln1 = nnx.LayerNorm(d, rngs=rngs, **F64)
        self.att = _Attention(d, 2, rngs)
        self.ln2 = nnx.LayerNorm(d, rngs=rngs, **F64)
        self.ff1 = nnx.Linear(d, 2 * d, rngs=rngs, **F64)
        self.ff2 = nnx.Linear(2 * d, d, rngs=rngs, **F64)

    def __call__(self, x):
        x = x + self.att(self.ln1(x))
        return x + self.ff2(nnx.gelu(self.ff1(self.ln2(x))))


class _Transformer(nnx.Module):
    def __init__(self, rngs, vocab=11, seq=5, d=8, classes=3):
        self.embed = nnx.Embed(vocab, d, rngs=rngs, **F64)
        self.pos = nnx.Param(0.1 * jax.random.normal(rngs.params(), (seq, d), jnp.float64))
        self.blocks = nnx.List([_Block(d, rngs) for _ in range(2)])
        self.norm = nnx.RMSNorm(d, rngs=rngs, **F64)
        self.head = nnx.Linear(d, classes, rngs=rngs, **F64)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(axis=1))


def transformer():
    fn, params = _nnx(_Transformer(nnx.Rngs(14)))
    return fn, params, jax.random.randint(_keys(1, 15)[0], (4, 5), 0, 11)


MODELS = {
    "scan_residual": scan_residual,
    "unrolled_residual": unrolled_residual,
    "eqx_mlp_scan": eqx_mlp_scan,
    "nnx_scan": nnx_scan,
    "linen_scan": linen_scan,
    "gru_scan": gru_scan,
    "nnx_rnn": nnx_rnn,
    "remat_shared": remat_shared,
    "transformer": transformer,
}


# ---------------------------------------------------------------------------------------------
# tests


# every implementation on a stacked scan and a recurrence, the default "auto" on the others
# (the transformer's other paths: the reductions, Jv and J^T u below)
IMPLEMENTATIONS = {
    name: ("auto", "structured", "jacobian") if name in ("scan_residual", "gru_scan") else ("auto",)
    for name in MODELS
}


@functools.cache
def _case(name):
    """A model, its batch, its jitted dense per-example Jacobian (one compilation per model,
    shared by the tests below) and that Jacobian on the batch."""
    fn, params, x = MODELS[name]()
    jacobian = jax.jit(lambda p, xx: _per_example_jacobian(fn, p, xx))
    return fn, params, x, jacobian, np.asarray(jacobian(params, x))


@pytest.mark.parametrize("name", list(MODELS))
def test_gram_matches_dense_jacobian(name):
    fn, params, x, _, jac = _case(name)
    ref = jac @ jac.T
    model = find_layers(fn, params, x)
    assert model.fallback == [], [model.leaf_names[i] for i in model.fallback]
    implementations = IMPLEMENTATIONS[name]
    grams = jax.jit(
        lambda p, xx: [inna_jax.ntk_gram(fn, p, xx, implementation=i) for i in implementations]
    )(params, x)
    for implementation, gram in zip(implementations, grams, strict=True):
        assert _rel(gram.reshape(ref.shape), ref) < TOL, implementation


def test_plan_places_every_transformer_parameter():
    fn, params, x, _, _ = _case("transformer")
    kinds = {row.name.split(" + ")[0]: row.kind for row in inna_jax.ntk_plan(fn, params, x).rows}
    assert kinds["embed.embedding"] == "embed"
    assert kinds["pos"] == "shift"
    assert kinds["blocks.0.ln1.scale"] == "scale"
    assert kinds["norm.scale"] == "scale"
    assert kinds["blocks.1.att.q.kernel"] == "dense"
    assert "per-leaf Jacobian" not in kinds.values()


def test_scan_plan_is_the_unrolled_plan():
    """Stacked weights: one layer with G = depth groups, the cost of depth unrolled layers."""
    fn, params, x = scan_residual()
    ufn, uparams, _ = unrolled_residual()
    scan_rows = inna_jax.ntk_plan(fn, params, x).rows
    unrolled_rows = inna_jax.ntk_plan(ufn, uparams, x).rows
    assert [(r.groups, r.features_in) for r in scan_rows] == [(1, 3), (3, 5), (1, 4)]
    assert [r.groups for r in unrolled_rows] == [1, 1, 1, 1, 1]
    assert sum(r.costs["structured"] for r in scan_rows) == sum(
        r.costs["structured"] for r in unrolled_rows
    )
    # a weight shared by every time step: the steps are positions of one layer
    gfn, gparams, gx = gru_scan()
    rows = {r.name: r for r in inna_jax.ntk_plan(gfn, gparams, gx).rows}
    assert rows["uz"].positions == 6 and rows["uz"].groups == 1


def test_reductions_and_cross_gram():
    fn, params, x, jacobian, jac = _case("transformer")
    x2 = jax.random.randint(_keys(1, 16)[0], (4, 5), 0, 11)
    full = (jac @ np.asarray(jacobian(params, x2)).T).reshape(4, 3, 4, 3)
    refs = {
        "full": full.reshape(12, 12),
        "trace": np.einsum("icjc->ij", full),
        "diagonal": np.stack([full[i, :, i] for i in range(4)]),
    }
    got = jax.jit(lambda p, a, b: {r: inna_jax.ntk_gram(fn, p, a, b, reduction=r) for r in refs})(
        params, x, x2
    )
    for reduction, ref in refs.items():
        assert _rel(got[reduction].reshape(ref.shape), ref) < TOL, reduction


@pytest.mark.parametrize("name", ["gru_scan", "transformer"])
def test_jvp_and_vjp_match_dense_jacobian(name):
    """J v and J^T u of the layer pass (EGN's direction uses both)."""
    fn, params, x, _, jac = _case(name)
    leaves = jax.tree.leaves(params)
    floats = [i for i, a in enumerate(leaves) if jnp.issubdtype(a.dtype, jnp.inexact)]
    sizes = [leaves[i].size for i in floats]
    b = x.shape[0]
    c = jac.shape[0] // b
    v = np.asarray(jax.random.normal(_keys(1, 17)[0], (sum(sizes),), jnp.float64))
    u = np.asarray(jax.random.normal(_keys(1, 18)[0], (1, b, c), jnp.float64))
    tangents = list(leaves)
    for i, part in zip(floats, np.split(v, np.cumsum(sizes)[:-1]), strict=True):
        tangents[i] = jnp.asarray(part.reshape(leaves[i].shape))

    widths = []

    @jax.jit
    def both(p, t, uu):
        lj = layerwise_jacobian(fn, p, x)
        widths.append((lj.batch, lj.width))
        (grads,) = lj.vjp(uu)
        return lj.jvp(t), grads

    jv, grads = both(params, tangents, jnp.asarray(u))
    assert widths == [(b, c)]
    assert _rel(jv.reshape(-1), jac @ v) < TOL
    got = np.concatenate([np.asarray(grads[i]).reshape(-1) for i in floats])
    assert _rel(got, jac.T @ u.reshape(-1)) < TOL


@pytest.mark.parametrize("name", ["scan_residual"])
def test_egn_cross_entropy_direction_matches_dense(name):
    """d = -(J^T Q J / b + lam I)^{-1} g with Q = diag(p) - p p^T, dense in parameter space."""
    fn, params, x, _, jac = _case(name)
    out = np.asarray(fn(params, x))
    b, c = out.shape
    labels = jnp.arange(b) % c
    lam = 0.1
    probs = np.exp(out - out.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    q = np.zeros((b * c, b * c))
    for i in range(b):
        q[i * c : (i + 1) * c, i * c : (i + 1) * c] = np.diag(probs[i]) - np.outer(
            probs[i], probs[i]
        )
    residual = (probs - np.eye(c)[np.asarray(labels)]).reshape(-1)
    grad = jac.T @ residual / b
    ref = -np.linalg.solve(jac.T @ q @ jac / b + lam * np.eye(jac.shape[1]), grad)
    direction = jax.jit(
        lambda p: inna_jax.egn_direction(fn, p, x, labels, loss="cross_entropy", regularizer=lam)
    )(params)
    leaves = jax.tree.leaves(direction)
    got = np.concatenate(
        [np.asarray(a).reshape(-1) for a in leaves if jnp.issubdtype(a.dtype, jnp.inexact)]
    )
    assert _rel(got, ref) < TOL
