"""The layer finder inside ``cond``, ``custom_jvp``/``custom_vjp`` calls, carried parameters and
static loops: each model's Gram against the dense ``vmap(jacrev)`` Gram in float64 (1e-10;
measured about 1e-16), and its plan without a per-leaf fallback. A ``while_loop`` stays a
fallback (JAX has no reverse mode for it), and says so with JAX's own error.
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from test_ntk_structured import _reference_gram, _rel

import inna_jax
from inna_jax.gauss_newton._find_layers import find_layers

TOL = 1e-10


def _params(shapes, seed):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        name: jax.random.normal(k, shape, jnp.float64) / 2
        for (name, shape), k in zip(shapes.items(), keys, strict=True)
    }


def _x(shape, seed=100):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


# ---------------------------------------------------------------------------------------------
# models


def _cond_same(p, x):
    """Both branches use w and b the same way (one layer hooked in both), the predicate
    depends on the example (under vmap, both branches run and a select picks)."""
    h = jnp.tanh(x @ p["win"])

    def smooth(h):
        return jnp.tanh(h @ p["w"] + p["b"])

    def rough(h):
        return jnp.sin(h @ p["w"] + p["b"]) * 2.0

    h = jax.lax.cond(x[0, 0] > 0, smooth, rough, h)
    return h @ p["wout"]


def cond_same():
    shapes = {"win": (3, 4), "w": (4, 4), "b": (4,), "wout": (4, 2)}
    return _cond_same, _params(shapes, 0), _x((4, 3))


def _switch_apart(p, x):
    """Three branches that use the weights differently: w in two ways (a shared weight), c
    after the second (element-wise: a shared weight takes no bias), v in the third only."""
    h = jnp.tanh(x @ p["win"])
    index = jnp.clip(jnp.floor(x[0, 1] * 2 + 1), 0, 2).astype(jnp.int32)
    branches = [
        lambda h: jnp.tanh(h @ p["w"]),
        lambda h: jnp.tanh(h @ p["w"].T + p["c"]),
        lambda h: jnp.sin(h) @ p["v"],
    ]
    h = jax.lax.switch(index, branches, h)
    return h @ p["wout"]


def switch_apart():
    shapes = {"win": (3, 4), "w": (4, 4), "c": (4,), "v": (4, 4), "wout": (4, 2)}
    x = _x((6, 3), 101).at[:, 1].set(jnp.array([-1.0, -0.2, 0.2, 0.6, 1.5, 0.3]))
    return _switch_apart, _params(shapes, 1), x  # branches 0, 0, 1, 2, 2, 1


def _cond_in_scan(p, x):
    """A cond in the body of a scan over stacked blocks: per block, per example."""

    def block(h, w):
        z = h @ w["w"] + w["b"]
        return h + jax.lax.cond(h[0, 0] > 0, jnp.tanh, jnp.sin, z), None

    h, _ = jax.lax.scan(block, jnp.tanh(x @ p["win"]), p["blocks"])
    return h @ p["wout"]


def cond_in_scan():
    p = _params({"win": (3, 4), "wout": (4, 2)}, 2)
    p["blocks"] = _params({"w": (3, 4, 4), "b": (3, 4)}, 3)
    return _cond_in_scan, p, _x((4, 3), 102)


@jax.custom_jvp
def _scaled_tanh(a, z):
    return jnp.tanh(a * z)


@_scaled_tanh.defjvp
def _scaled_tanh_jvp(primals, tangents):
    a, z = primals
    da, dz = tangents
    y = jnp.tanh(a * z)
    return y, (1 - y**2) * (da * z + a * dz)


@jax.custom_vjp
def _linear(w, h):
    return h @ w


def _linear_fwd(w, h):
    return h @ w, (w, h)


def _linear_bwd(res, g):
    w, h = res
    return h.T @ g, g @ w.T


_linear.defvjp(_linear_fwd, _linear_bwd)


def _custom_rules(p, x):
    """A custom-VJP dense layer, and a custom-JVP activation with a learnable scale."""
    h = _scaled_tanh(p["a"], _linear(p["w1"], x) + p["b1"])
    return _linear(p["w2"], h)


def custom_rules():
    shapes = {"w1": (3, 4), "b1": (4,), "a": (4,), "w2": (4, 2)}
    return _custom_rules, _params(shapes, 4), _x((4, 3), 103)


def _carried(p, x):
    """A weight carried by a scan whose body is a remat (JAX's own forwarding of unchanged
    carries does not look into it), then used once more after the loop."""

    @jax.checkpoint
    def body(carry, xt):
        h, w = carry
        return (jnp.tanh(h @ w + xt @ p["wx"]), w), None

    (h, w), _ = jax.lax.scan(body, (jnp.zeros((x.shape[0], 4)), p["w"]), x.transpose(1, 0, 2))
    return jnp.tanh(h @ w) @ p["wout"]


def carried():
    shapes = {"w": (4, 4), "wx": (3, 4), "wout": (4, 2)}
    return _carried, _params(shapes, 5), _x((4, 5, 3), 104)


def _fori(p, x):
    """``fori_loop`` with concrete bounds: a scan (the weight shared by the iterations)."""
    h = jax.lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ p["w"] + p["b"]), x @ p["win"])
    return h @ p["wout"]


def fori():
    shapes = {"win": (3, 4), "w": (4, 4), "b": (4,), "wout": (4, 2)}
    return _fori, _params(shapes, 6), _x((4, 3), 105)


MODELS = {
    "cond_same": cond_same,
    "switch_apart": switch_apart,
    "cond_in_scan": cond_in_scan,
    "custom_rules": custom_rules,
    "carried": carried,
    "fori": fori,
}


# ---------------------------------------------------------------------------------------------
# tests


@functools.cache
def _case(name):
    """A model, its batch and its dense Gram (computed once per model)."""
    fn, params, x = MODELS[name]()
    return fn, params, x, _reference_gram(fn, params, x)


@pytest.mark.parametrize("name", list(MODELS))
def test_gram_matches_dense_jacobian_without_fallback(name):
    fn, params, x, ref = _case(name)
    model = find_layers(fn, params, x)
    assert model.fallback == [], [model.leaf_names[i] for i in model.fallback]
    kinds = {row.kind for row in inna_jax.ntk_plan(fn, params, x).rows}
    assert "per-leaf Jacobian" not in kinds, name
    # "auto" and the structured form forced on every layer, in one compiled program
    implementations = ("auto", "structured")
    grams = jax.jit(
        lambda p, xx: [inna_jax.ntk_gram(fn, p, xx, implementation=i) for i in implementations]
    )(params, x)
    for implementation, gram in zip(implementations, grams, strict=True):
        assert _rel(gram.reshape(ref.shape), ref) < TOL, implementation


def test_cond_same_is_one_layer_hooked_in_both_branches():
    fn, params, x, _ = _case("cond_same")
    layers = {layer.name: layer for layer in find_layers(fn, params, x).layers}
    assert set(layers) == {"win", "w + b", "wout"}
    assert len(layers["w + b"].sites) == 2 and not layers["w + b"].shared


def test_switch_apart_keeps_the_uses_of_each_branch():
    fn, params, x, _ = _case("switch_apart")
    assert len({int(jnp.clip(jnp.floor(v * 2 + 1), 0, 2)) for v in x[:, 1]}) == 3
    layers = find_layers(fn, params, x).layers
    found = {(layer.name, layer.kind, len(layer.sites), layer.shared) for layer in layers}
    assert ("w[use 1]", "dense", 1, True) in found and ("w[use 2]", "dense", 1, True) in found
    assert ("c", "shift", 1, False) in found
    assert ("v", "dense", 1, False) in found  # hooked in the third branch, zeros elsewhere


def test_custom_rules_place_their_layers_and_keep_relu_rules():
    fn, params, x, _ = _case("custom_rules")
    model = find_layers(fn, params, x)
    assert [layer.name for layer in model.layers] == ["w1 + b1", "a", "w2"]
    assert [layer.kind for layer in model.layers] == ["dense", "scale", "dense"]

    def relu_model(p, xx):  # jax.nn.relu is a custom_jvp that receives no parameter
        return jax.nn.relu(xx @ p["w1"]) @ p["w2"]

    relu = find_layers(relu_model, params, x)
    customs = [e for e in relu.jaxpr.eqns if e.primitive.name == "custom_jvp_call"]
    assert customs and not relu.inline


def test_carried_weight_is_a_loop_constant():
    fn, params, x, _ = _case("carried")
    layers = find_layers(fn, params, x).layers
    uses = [layer for layer in layers if layer.weight.leaf == 0]  # "w", the first leaf
    assert [layer.positions for layer in uses] == [5, 1]  # the 5 steps, then once more


def test_while_loop_stays_a_fallback_with_jaxs_error():
    def fn(p, x):
        body = lambda c: (c[0] + 1, jnp.tanh(c[1] @ p["w"]))  # noqa: E731
        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x))[1]

    params, x = {"w": jnp.eye(3)}, _x((2, 3))
    assert find_layers(fn, params, x).fallback == [0]
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work"):
        inna_jax.ntk_gram(fn, params, x)


def test_the_fallback_model_of_the_other_tests_keeps_its_fallback():
    """tests/test_ntk_structured.py's fallback_mix exercises the per-leaf path: its custom_jvp
    parameter is now a scale inside the rule's body, the one behind a cosine stays."""
    from test_ntk_structured import fallback_mix

    model = find_layers(*fallback_mix())
    assert [model.leaf_names[i] for i in model.fallback] == ["t"]
    assert [layer.kind for layer in model.layers if layer.name == "a"] == ["scale"]
