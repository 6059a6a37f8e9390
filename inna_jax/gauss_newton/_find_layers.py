r"""Finds the dense and convolution layers of a traced model, and re-runs it with hooks.

:func:`find_layers` traces ``predict_fn`` on **one** example with :func:`jax.make_jaxpr` and
walks the program. A parameter leaf is followed through *views* (``reshape``, ``transpose``,
``squeeze``, ``convert_element_type``, ``copy``, ``broadcast_in_dim``) and into nested
``jit``/``closed_call``/``remat`` sub-programs. Each of its uses is classified:

* a *weight use*: the leaf (an isometric view of it: a permutation of its entries) is one
  operand of a ``dot_general``, or the kernel of a ``conv_general_dilated``, and the other
  operand does not come straight from a parameter;
* a *bias use*: an ``add`` of a view of the leaf to the output of a weight use (the only
  consumer of that output), broadcast over every axis that is not an output feature of the
  layer;
* anything else (the leaf is used in an elementwise product, a gather, a custom derivative
  rule, a loop, or returned as is).

A leaf whose uses are all weight uses is *placed*: each use becomes a layer. A bias use merges
into the layer it follows. Every other leaf is a *fallback* leaf, whose exact per-example
Jacobian is computed by reverse-mode differentiation restricted to it (see
:mod:`inna_jax.gauss_newton._layerwise_jacobian`).

:func:`run_with_hooks` re-evaluates the program eqn by eqn with
``eqn.primitive.bind(...)`` (the custom-interpreter pattern of the JAX documentation): it
adds a perturbation :math:`\varepsilon_l` to each layer's output and records the layer's input
operand. Sub-programs that receive parameters are interpreted recursively; every other eqn,
``custom_jvp_call`` (``jax.nn.relu``) included, is re-bound untouched, so custom derivative
rules are kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex

VIEW_PRIMITIVES = frozenset(
    {"reshape", "transpose", "squeeze", "convert_element_type", "copy", "broadcast_in_dim"}
)
# primitives whose sub-program is interpreted eqn by eqn when it receives parameters
CALL_PRIMITIVES = frozenset({"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint"})


def _sub_jaxpr(eqn: jex.JaxprEqn) -> tuple[jex.Jaxpr, Sequence[Any]]:
    """The sub-program of a call-like eqn and its constants."""
    for key in ("jaxpr", "call_jaxpr"):
        if key in eqn.params:
            sub = eqn.params[key]
            if isinstance(sub, jex.ClosedJaxpr):
                return sub.jaxpr, sub.consts
            return sub, ()
    raise KeyError(f"no sub-program in eqn {eqn.primitive.name}")


def bind(eqn: jex.JaxprEqn, invals: Sequence[Any]) -> list[Any]:
    """Applies an eqn's primitive to new inputs (a list of outputs)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: Sequence[Any] = ()
    if isinstance(params, tuple):  # jax < 0.9 returns (subfuns, params)
        subfuns, params = params
    ans = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(ans) if eqn.primitive.multiple_results else [ans]


# --------------------------------------------------------------------------------------------
# views of a parameter leaf, replayed on index arrays


@dataclasses.dataclass(frozen=True, eq=False)
class View:
    """A parameter leaf seen through a chain of view eqns."""

    leaf: int
    chain: tuple[jex.JaxprEqn, ...]

    def then(self, eqn: jex.JaxprEqn) -> View:
        return View(self.leaf, (*self.chain, eqn))

    def apply(self, x: Any) -> Any:
        """Replays the chain on a JAX value (the leaf or a tangent of it)."""
        for eqn in self.chain:
            (x,) = bind(eqn, [x])
        return x

    def indices(self, shape: tuple[int, ...]) -> np.ndarray:
        """The chain applied to ``arange(size).reshape(shape)`` in NumPy: where each entry
        of the viewed array comes from in the leaf."""
        x = np.arange(math.prod(shape)).reshape(shape)
        for eqn in self.chain:
            x = _numpy_view(eqn, x)
        return x


def _numpy_view(eqn: jex.JaxprEqn, x: np.ndarray) -> np.ndarray:
    name, p = eqn.primitive.name, eqn.params
    if name == "reshape":
        if p.get("dimensions") is not None:
            x = x.transpose(p["dimensions"])
        return x.reshape(p["new_sizes"])
    if name == "transpose":
        return x.transpose(p["permutation"])
    if name == "squeeze":
        return np.squeeze(x, axis=tuple(p["dimensions"]))
    if name == "broadcast_in_dim":
        shape, dims = tuple(p["shape"]), tuple(p["broadcast_dimensions"])
        expanded = [1] * len(shape)
        for src, dst in enumerate(dims):
            expanded[dst] = x.shape[src]
        return np.broadcast_to(x.reshape(expanded), shape)
    return x  # convert_element_type, copy


def _is_permutation(idx: np.ndarray, size: int) -> bool:
    return idx.size == size and np.array_equal(np.sort(idx.ravel()), np.arange(size))


# --------------------------------------------------------------------------------------------
# layers


@dataclasses.dataclass(eq=False)
class Layer:
    r"""One placed weight use: a dense (``dot_general``) or a convolution layer.

    The layer's arrays are brought to a canonical layout, per example:

    * input ``A``: ``(S, G, D)`` (positions, groups, input features),
    * output cotangent ``Delta``: ``(S, G, F)`` (positions, groups, output features),
    * weight: ``(G, D, F)``,

    so that the per-example gradient of the weight is :math:`\sum_s a_s \otimes \delta_s`
    (per group). ``S`` counts every axis of the input that the weight does not contract:
    tokens of a sequence, pixels of a convolution's output. A merged bias appends a
    constant 1 to ``A`` (``D + 1`` features).
    """

    name: str
    kind: str  # "dense" or "conv"
    path: tuple[int, ...]
    eqn: jex.JaxprEqn
    weight: View
    weight_arg: int
    positions: int
    groups: int
    features_in: int
    features_out: int
    shared: bool = False  # the leaf has several weight uses (no bias merged)
    bias: View | None = None
    bias_order: np.ndarray | None = None  # (G, F) leaf index of each bias entry, or None

    @property
    def columns_in(self) -> int:
        return self.features_in + (self.bias is not None)

    # canonical layouts -------------------------------------------------------------------

    def activation(self, invals: Sequence[jax.Array]) -> jax.Array:
        """The recorded layer input, ``(S, G, D[+1])`` for one example."""
        x = invals[1 - self.weight_arg]
        if self.kind == "dense":
            a = _dense_activation(self.eqn, self.weight_arg, x)
        else:
            a = _conv_patches(self.eqn, x)
        if self.bias is not None:
            a = jnp.concatenate([a, jnp.ones((*a.shape[:-1], 1), a.dtype)], axis=-1)
        return a

    def delta(self, y: jax.Array) -> jax.Array:
        """A cotangent of the layer output in the canonical ``(S, G, F)`` layout."""
        if self.kind == "dense":
            return _dense_delta(self.eqn, self.weight_arg, y)
        return _conv_delta(self.eqn, y)

    def weight_to_canonical(self, leaf: jax.Array) -> jax.Array:
        """The ``(G, D, F)`` matrix of a leaf-shaped array (the weight or a tangent of it)."""
        w = self.weight.apply(leaf)
        if self.kind == "dense":
            return _dense_weight(self.eqn, self.weight_arg, w)
        return _conv_weight(self.eqn, w)

    def weight_from_canonical(self, dw: jax.Array, leaf_aval: Any) -> jax.Array:
        """The transpose of :meth:`weight_to_canonical`: a ``(G, D, F)`` array to leaf shape."""
        out_dtype = jax.eval_shape(self.weight_to_canonical, leaf_aval).dtype
        (out,) = jax.linear_transpose(self.weight_to_canonical, leaf_aval)(dw.astype(out_dtype))
        return out

    def bias_to_row(self, leaf: jax.Array) -> jax.Array:
        """The ``(G, F)`` row of a bias-shaped array."""
        flat = leaf.reshape(-1)
        if self.bias_order is None:
            return flat.reshape(self.groups, self.features_out)
        return flat[self.bias_order]

    def bias_from_row(self, row: jax.Array, leaf_shape: tuple[int, ...]) -> jax.Array:
        if self.bias_order is None:
            return row.reshape(leaf_shape)
        inverse = np.argsort(self.bias_order.ravel())
        return row.reshape(-1)[inverse].reshape(leaf_shape)


def _dense_dims(eqn: jex.JaxprEqn, weight_arg: int):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    x_arg = 1 - weight_arg
    xc, wc = (lc, rc) if x_arg == 0 else (rc, lc)
    xb, wb = (lb, rb) if x_arg == 0 else (rb, lb)
    x_nd = len(eqn.invars[x_arg].aval.shape)
    w_nd = len(eqn.invars[weight_arg].aval.shape)
    xf = [d for d in range(x_nd) if d not in xc and d not in xb]
    wf = [d for d in range(w_nd) if d not in wc and d not in wb]
    nb = len(xb)
    if x_arg == 0:  # output: (batch dims, lhs free, rhs free)
        xf_out = list(range(nb, nb + len(xf)))
        wf_out = list(range(nb + len(xf), nb + len(xf) + len(wf)))
    else:
        wf_out = list(range(nb, nb + len(wf)))
        xf_out = list(range(nb + len(wf), nb + len(wf) + len(xf)))
    return list(xc), list(wc), list(xb), list(wb), xf, wf, list(range(nb)), xf_out, wf_out


def _dense_shape(eqn: jex.JaxprEqn, weight_arg: int) -> tuple[int, int, int, int]:
    xc, _, xb, _, xf, wf, *_ = _dense_dims(eqn, weight_arg)
    xs = eqn.invars[1 - weight_arg].aval.shape
    ws = eqn.invars[weight_arg].aval.shape
    prod = lambda shape, dims: math.prod(shape[d] for d in dims)  # noqa: E731
    return prod(xs, xf), prod(xs, xb), prod(xs, xc), prod(ws, wf)


def _dense_activation(eqn, weight_arg, x):
    xc, _, xb, _, xf, *_ = _dense_dims(eqn, weight_arg)
    s, g, d, _ = _dense_shape(eqn, weight_arg)
    return x.transpose(xf + xb + xc).reshape(s, g, d)


def _dense_delta(eqn, weight_arg, y):
    *_, b_out, xf_out, wf_out = _dense_dims(eqn, weight_arg)
    s, g, _, f = _dense_shape(eqn, weight_arg)
    return y.transpose(xf_out + b_out + wf_out).reshape(s, g, f)


def _dense_weight(eqn, weight_arg, w):
    _, wc, _, wb, _, wf, *_ = _dense_dims(eqn, weight_arg)
    _, g, d, f = _dense_shape(eqn, weight_arg)
    return w.transpose(wb + wc + wf).reshape(g, d, f)


def _dense_delta_indices(eqn, weight_arg, idx: np.ndarray) -> np.ndarray:
    *_, b_out, xf_out, wf_out = _dense_dims(eqn, weight_arg)
    s, g, _, f = _dense_shape(eqn, weight_arg)
    return idx.transpose(xf_out + b_out + wf_out).reshape(s, g, f)


# convolutions -------------------------------------------------------------------------------


def _conv_dims(eqn: jex.JaxprEqn):
    dn = eqn.params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    groups = int(eqn.params["feature_group_count"])
    lhs_shape = eqn.invars[0].aval.shape
    rhs_shape = eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    kernel_axes = list(rhs_spec[2:]) + [rhs_spec[1]]  # spatial kernel axes, then I
    d_order = sorted(range(len(kernel_axes)), key=lambda j: kernel_axes[j])
    return lhs_spec, rhs_spec, out_spec, groups, lhs_shape, rhs_shape, out_shape, d_order


def _conv_shape(eqn: jex.JaxprEqn) -> tuple[int, int, int, int]:
    lhs_spec, rhs_spec, out_spec, g, lhs_shape, rhs_shape, out_shape, _ = _conv_dims(eqn)
    s = lhs_shape[lhs_spec[0]] * math.prod(out_shape[d] for d in out_spec[2:])
    d = math.prod(rhs_shape[a] for a in rhs_spec[1:])
    f = rhs_shape[rhs_spec[0]] // g
    return s, g, d, f


def _conv_patches(eqn: jex.JaxprEqn, x: jax.Array) -> jax.Array:
    """The input patches of a convolution, ``(S, G, D)``, D ordered like the kernel's axes."""
    lhs_spec, rhs_spec, out_spec, g, _, rhs_shape, out_shape, d_order = _conv_dims(eqn)
    p = eqn.params
    rank = len(lhs_spec) - 2
    x = x.transpose(lhs_spec[0], *lhs_spec[2:], lhs_spec[1])  # (N, spatial..., C)
    pads = [(0, 0, 0)]
    for (lo, hi), dil in zip(p["padding"], p["lhs_dilation"], strict=True):
        pads.append((int(lo), int(hi), int(dil) - 1))
    pads.append((0, 0, 0))
    x = lax.pad(x, jnp.zeros((), x.dtype), pads)
    kernel = [rhs_shape[a] for a in rhs_spec[2:]]
    out_sp = [out_shape[a] for a in out_spec[2:]]
    strides, rdil = p["window_strides"], p["rhs_dilation"]
    slices = []
    for offset in np.ndindex(*kernel):
        start = [0] + [o * r for o, r in zip(offset, rdil, strict=True)] + [0]
        limit = (
            [x.shape[0]]
            + [st + (n - 1) * s + 1 for st, n, s in zip(start[1:-1], out_sp, strides, strict=True)]
            + [x.shape[-1]]
        )
        slices.append(lax.slice(x, start, limit, [1, *strides, 1]))
    n = x.shape[0]
    c_in = x.shape[-1]
    patches = jnp.stack(slices, axis=-2)  # (N, out..., K, C)
    patches = patches.reshape(n, *out_sp, *kernel, g, c_in // g)
    base = 1 + rank
    # canonical D axes: kernel spatial axes then the input channel, sorted like the kernel
    d_axes = [base + j for j in range(rank)] + [base + rank + 1]
    perm = list(range(base)) + [base + rank] + [d_axes[j] for j in d_order]
    s, _, d, _ = _conv_shape(eqn)
    return patches.transpose(perm).reshape(s, g, d)


def _conv_delta(eqn: jex.JaxprEqn, y: jax.Array) -> jax.Array:
    out_spec = eqn.params["dimension_numbers"].out_spec
    s, g, _, f = _conv_shape(eqn)
    return y.transpose(out_spec[0], *out_spec[2:], out_spec[1]).reshape(s, g, f)


def _conv_delta_indices(eqn: jex.JaxprEqn, idx: np.ndarray) -> np.ndarray:
    out_spec = eqn.params["dimension_numbers"].out_spec
    s, g, _, f = _conv_shape(eqn)
    return idx.transpose(out_spec[0], *out_spec[2:], out_spec[1]).reshape(s, g, f)


def _conv_weight(eqn: jex.JaxprEqn, w: jax.Array) -> jax.Array:
    _, rhs_spec, _, g, _, _, _, d_order = _conv_dims(eqn)
    kernel_axes = list(rhs_spec[2:]) + [rhs_spec[1]]
    d_axes = [kernel_axes[j] for j in d_order]
    _, _, d, f = _conv_shape(eqn)
    if g == 1:
        return w.transpose(*d_axes, rhs_spec[0]).reshape(1, d, f)
    w = w.transpose(rhs_spec[0], *d_axes).reshape(g, f, d)
    return w.transpose(0, 2, 1)


# --------------------------------------------------------------------------------------------
# the analysis


@dataclasses.dataclass(eq=False)
class _Use:
    kind: str  # "dense", "conv", "bias", "other"
    path: tuple[int, ...]
    eqn: jex.JaxprEqn | None = None
    arg: int = 0
    view: View | None = None
    producer: tuple[int, ...] | None = None  # bias: the layer eqn behind the other operand
    through: tuple[jex.JaxprEqn, ...] = ()  # bias: views from that layer's output to the add
    single_consumer: bool = False  # bias: the other operand has no other consumer


@dataclasses.dataclass(eq=False)
class ModelLayers:
    """The traced single-example program and where its parameters are used."""

    jaxpr: jex.Jaxpr
    consts: Sequence[Any]
    param_tree: Any
    param_avals: list[Any]
    leaf_names: list[str]
    input_tree: Any
    output_shape: tuple[int, ...]  # of one example, () or (C,)
    output_dtype: Any
    layers: list[Layer]
    fallback: list[int]  # leaf indices with an exact per-leaf Jacobian
    inline: frozenset[tuple[int, ...]]
    sites: dict[tuple[int, ...], int]  # eqn path -> layer index

    @property
    def num_outputs(self) -> int:
        return int(math.prod(self.output_shape))


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":
                parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return ".".join(parts) if parts else "params"


def _analyse(
    jaxpr: jex.Jaxpr,
    in_views: Sequence[View | None],
    path: tuple[int, ...],
    uses: dict[int, list[_Use]],
    inline: set,
) -> list[View | None]:
    views: dict[Any, View] = {}
    for v, view in zip(jaxpr.invars, in_views, strict=True):
        if view is not None:
            views[v] = view
    consumers: Counter = Counter()
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, jex.Var):
                consumers[v] += 1
    for v in jaxpr.outvars:
        if isinstance(v, jex.Var):
            consumers[v] += 1
    # outputs of dot/conv eqns, possibly seen through single-consumer views: (path, views)
    derived: dict[Any, tuple[tuple[int, ...], tuple[jex.JaxprEqn, ...]]] = {}

    def view_of(v):
        return views.get(v) if isinstance(v, jex.Var) else None

    for idx, eqn in enumerate(jaxpr.eqns):
        p = (*path, idx)
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            derived[eqn.outvars[0]] = (p, ())
        elif name in VIEW_PRIMITIVES and name != "broadcast_in_dim" and len(eqn.invars) == 1:
            src = eqn.invars[0]
            if isinstance(src, jex.Var) and src in derived and consumers[src] == 1:
                layer_path, chain = derived[src]
                derived[eqn.outvars[0]] = (layer_path, (*chain, eqn))
        ins: list[Any] = [view_of(v) for v in eqn.invars]  # View | None, checked below
        if not any(ins):
            continue
        if name in VIEW_PRIMITIVES and len(eqn.invars) == 1:
            views[eqn.outvars[0]] = ins[0].then(eqn)
        elif name in CALL_PRIMITIVES:
            sub, _ = _sub_jaxpr(eqn)
            inline.add(p)
            outs = _analyse(sub, ins, p, uses, inline)
            for v, view in zip(eqn.outvars, outs, strict=True):
                if view is not None:
                    views[v] = view
        elif name == "dot_general" and sum(x is not None for x in ins) == 1:
            arg = 0 if ins[0] is not None else 1
            uses[ins[arg].leaf].append(_Use("dense", p, eqn, arg, ins[arg]))
        elif (
            name == "conv_general_dilated"
            and ins[0] is None
            and ins[1] is not None
            and int(eqn.params["batch_group_count"]) == 1
        ):
            uses[ins[1].leaf].append(_Use("conv", p, eqn, 1, ins[1]))
        elif name == "add" and sum(x is not None for x in ins) == 1:
            arg = 0 if ins[0] is not None else 1
            other = eqn.invars[1 - arg]
            use = _Use("bias", p, eqn, arg, ins[arg])
            if isinstance(other, jex.Var) and other in derived:
                use.producer, use.through = derived[other]
                use.single_consumer = consumers[other] == 1 and (
                    other.aval.shape == eqn.outvars[0].aval.shape
                )
            uses[ins[arg].leaf].append(use)
        else:
            for view in ins:
                if view is not None:
                    uses[view.leaf].append(_Use("other", p))
    return [view_of(v) for v in jaxpr.outvars]


def _weight_is_isometric(use: _Use, aval) -> bool:
    shape = cast(jex.JaxprEqn, use.eqn).invars[use.arg].aval.shape
    idx = cast(View, use.view).indices(aval.shape)
    return idx.shape == tuple(shape) and _is_permutation(idx, math.prod(aval.shape))


def _bias_order(layer: Layer, bias: _Use, aval) -> np.ndarray | None | bool:
    """The (G, F) leaf index of each bias entry if the bias broadcasts over the positions
    (``None`` when it is the identity order), ``False`` when it does not fit the layer."""
    add_shape = cast(jex.JaxprEqn, bias.eqn).outvars[0].aval.shape
    try:
        idx = np.broadcast_to(cast(View, bias.view).indices(aval.shape), add_shape)
    except ValueError:
        return False
    for eqn in reversed(bias.through):  # back to the layer's output layout
        if eqn.primitive.name == "transpose":
            idx = idx.transpose(np.argsort(eqn.params["permutation"]))
        elif eqn.primitive.name in ("reshape", "squeeze"):
            if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
                return False
            idx = idx.reshape(eqn.invars[0].aval.shape)
    if layer.kind == "dense":
        canon = _dense_delta_indices(layer.eqn, layer.weight_arg, idx)
    else:
        canon = _conv_delta_indices(layer.eqn, idx)
    row = canon[0]
    if not np.all(canon == row[None]):
        return False
    size = math.prod(aval.shape)
    if not _is_permutation(row, size):
        return False
    if np.array_equal(row.ravel(), np.arange(size)):
        return None
    return np.asarray(row)


def _aval(x: Any) -> jax.ShapeDtypeStruct:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def find_layers(predict_fn: Callable, params: Any, inputs: Any) -> ModelLayers:
    """Traces ``predict_fn`` on one example and places its dense and convolution layers.

    Args:
        predict_fn: ``predict_fn(params, x)`` with a batch ``x``.
        params: a pytree of arrays (may be abstract: ``jax.ShapeDtypeStruct``).
        inputs: the batch (a pytree of arrays with a leading batch axis).

    Returns:
        A :class:`ModelLayers`.
    """
    leaves_with_path, param_tree = jax.tree_util.tree_flatten_with_path(params)
    param_avals = [_aval(x) for _, x in leaves_with_path]
    names = [_leaf_name(path) for path, _ in leaves_with_path]
    x_leaves, input_tree = jax.tree.flatten(inputs)
    x_avals = []
    for x in x_leaves:
        aval = _aval(x)
        if not aval.shape:
            raise ValueError("inputs must have a leading batch axis, got a scalar input")
        x_avals.append(jax.ShapeDtypeStruct((1, *aval.shape[1:]), aval.dtype))

    def flat_fn(*args):
        p = jax.tree.unflatten(param_tree, args[: len(param_avals)])
        x = jax.tree.unflatten(input_tree, args[len(param_avals) :])
        return predict_fn(p, x)

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*param_avals, *x_avals)
    if isinstance(out_shape, (list, tuple)) or not hasattr(out_shape, "shape"):
        raise ValueError("predict_fn must return one array of shape (b,) or (b, C)")
    if len(out_shape.shape) not in (1, 2) or out_shape.shape[0] != 1:
        raise ValueError(
            "predict_fn must return outputs of shape (b,) or (b, C) (traced on one example: "
            f"shape {out_shape.shape})"
        )
    jaxpr = closed.jaxpr
    uses: dict[int, list[_Use]] = {i: [] for i in range(len(param_avals))}
    inline: set = set()
    in_views = [View(i, ()) for i in range(len(param_avals))] + [None] * len(x_avals)
    outs = _analyse(jaxpr, in_views, (), uses, inline)
    for view in outs:
        if view is not None:
            uses[view.leaf].append(_Use("other", ()))

    # weight leaves: every use is an isometric dense/conv use
    layers: list[Layer] = []
    by_path: dict[tuple[int, ...], Layer] = {}
    placed: set[int] = set()
    for leaf, leaf_uses in uses.items():
        aval = param_avals[leaf]
        if not leaf_uses or not jnp.issubdtype(aval.dtype, jnp.inexact):
            continue
        if not all(u.kind in ("dense", "conv") for u in leaf_uses):
            continue
        if not all(_weight_is_isometric(u, aval) for u in leaf_uses):
            continue
        placed.add(leaf)
        for k, u in enumerate(leaf_uses):
            eqn = cast(jex.JaxprEqn, u.eqn)  # dense and conv uses have theirs
            if u.kind == "dense":
                s, g, d, f = _dense_shape(eqn, u.arg)
            else:
                s, g, d, f = _conv_shape(eqn)
            suffix = f"[use {k + 1}]" if len(leaf_uses) > 1 else ""
            layer = Layer(
                name=names[leaf] + suffix,
                kind=u.kind,
                path=u.path,
                eqn=eqn,
                weight=cast(View, u.view),
                weight_arg=u.arg,
                positions=s,
                groups=g,
                features_in=d,
                features_out=f,
                shared=len(leaf_uses) > 1,
            )
            layers.append(layer)
            by_path[u.path] = layer

    # biases: the single use of the leaf adds it to the output of an unshared layer
    for leaf, leaf_uses in uses.items():
        aval = param_avals[leaf]
        if leaf in placed or len(leaf_uses) != 1 or leaf_uses[0].kind != "bias":
            continue
        if not jnp.issubdtype(aval.dtype, jnp.inexact):
            continue
        u = leaf_uses[0]
        layer = by_path.get(u.producer) if u.producer is not None else None
        if layer is None or layer.shared or layer.bias is not None or not u.single_consumer:
            continue
        order = _bias_order(layer, u, aval)
        if order is False:
            continue
        layer.bias = u.view
        layer.bias_order = order
        layer.name = f"{layer.name} + {names[leaf]}"
        placed.add(leaf)

    layers.sort(key=lambda layer: layer.path)  # program order
    fallback = [
        i
        for i, aval in enumerate(param_avals)
        if i not in placed and uses[i] and jnp.issubdtype(aval.dtype, jnp.inexact)
    ]
    return ModelLayers(
        jaxpr=jaxpr,
        consts=closed.consts,
        param_tree=param_tree,
        param_avals=param_avals,
        leaf_names=names,
        input_tree=input_tree,
        output_shape=tuple(out_shape.shape[1:]),
        output_dtype=out_shape.dtype,
        layers=layers,
        fallback=fallback,
        inline=frozenset(inline),
        sites={layer.path: k for k, layer in enumerate(layers)},
    )


# --------------------------------------------------------------------------------------------
# the interpreter


def run_with_hooks(
    model: ModelLayers,
    param_leaves: Sequence[Any],
    input_leaves: Sequence[Any],
    eps: Sequence[jax.Array],
) -> tuple[jax.Array, list[jax.Array]]:
    """Evaluates the single-example program with ``eps[l]`` added to layer ``l``'s output.

    Returns the output (of one example, batch axis dropped) and each layer's canonical
    input ``A`` (see :class:`Layer`).
    """
    acts: list[Any] = [None] * len(model.layers)
    (out,) = _interpret(
        model.jaxpr, model.consts, [*param_leaves, *input_leaves], model, eps, acts, ()
    )
    return out[0], acts


def _interpret(jaxpr, consts, args, model, eps, acts, path):
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for idx, eqn in enumerate(jaxpr.eqns):
        p = (*path, idx)
        invals = [read(v) for v in eqn.invars]
        if p in model.inline:
            sub, sub_consts = _sub_jaxpr(eqn)
            outvals = _interpret(sub, sub_consts, invals, model, eps, acts, p)
        else:
            outvals = bind(eqn, invals)
        site = model.sites.get(p)
        if site is not None:
            acts[site] = model.layers[site].activation(invals)
            outvals = [outvals[0] + eps[site]]
        for v, x in zip(eqn.outvars, outvals, strict=True):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]
