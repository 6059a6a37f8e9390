r"""Finds the layers of a traced model, and re-runs it with hooks.

:func:`find_layers` traces ``predict_fn`` on **one** example with :func:`jax.make_jaxpr` and
walks the program. A parameter leaf is followed through *views* (``reshape``, ``transpose``,
``squeeze``, ``convert_element_type``, ``copy``, ``broadcast_in_dim``), into nested
``jit``/``closed_call``/``remat`` sub-programs, and into ``lax.scan`` bodies (as written by
``jax.lax.scan``, ``nnx.scan``, ``flax.linen.scan``, ``eqx.nn.MLP(scan=True)``, ``nnx.RNN``):
a loop constant reaches every iteration whole, a scanned-over input one slice per iteration.
Each of its uses is classified:

* a *weight use*: the leaf (an isometric view of it: a permutation of its entries) is one
  operand of a ``dot_general``, or the kernel of a ``conv_general_dilated``, or the table
  of a row ``gather`` (an embedding), and the other operand does not come straight from a
  parameter;
* a *bias use*: an ``add`` of a view of the leaf to the output of a weight use (the only
  consumer of that output), broadcast over every axis that is not an output feature of the
  layer;
* an *element-wise use*: a ``mul``, ``add`` or ``sub`` of a (broadcast) view of the leaf and
  a value that does not come from a parameter (normalisation scales and biases, a bias added
  after a sum);
* anything else (the leaf is used in another way, inside ``cond``/``while``/custom
  derivative rules, carried by a loop, or returned as is).

A leaf whose uses are all weight uses is *placed*: each use becomes a layer. A bias use merges
into the layer it follows (inside loops too, when it enters them like the weight). A leaf whose
uses are all element-wise is placed as element-wise layers. Every other leaf is a *fallback*
leaf, whose exact per-example Jacobian is computed by reverse-mode differentiation restricted
to it (see :mod:`inna_jax.gauss_newton._layerwise_jacobian`).

:func:`run_with_hooks` re-evaluates the program eqn by eqn with
``eqn.primitive.bind(...)`` (the custom-interpreter pattern of the JAX documentation): it
adds a perturbation :math:`\varepsilon_l` to each layer's output and records the layer's input
operand. Sub-programs that receive parameters are interpreted recursively, a ``scan`` as a new
``lax.scan`` whose body is interpreted and which scans over the layers' perturbations and
stacks their inputs; every other eqn, ``custom_jvp_call`` (``jax.nn.relu``) included, is
re-bound untouched, so custom derivative rules are kept.
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
# The hooked interpreter unrolls a scan of at most this many iterations (its own program, not
# the model's): XLA:CPU does not fuse across the iterations of a while loop, and the layer pass
# of the residual MLP of benchmarks/egn_zoo.py (4 stacked blocks) took 1.4x its unrolled
# twin's time rolled and 1.3x unrolled (EGN step, b = 64, minimum of 15 interleaved calls on a
# 2-core AMD EPYC). Longer loops (long sequences) keep the model's own unroll setting.
UNROLL_LIMIT = 32
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


@dataclasses.dataclass(frozen=True)
class Loop:
    """A ``lax.scan`` that a parameter enters: sliced along its leading axis (``stacked``,
    one slice per iteration) or passed whole to every iteration (a constant of the loop)."""

    length: int
    stacked: bool


@dataclasses.dataclass(frozen=True, eq=False)
class View:
    """A parameter leaf seen through a chain of view eqns and of the loops it entered."""

    leaf: int
    chain: tuple[Any, ...]  # JaxprEqn or Loop

    def then(self, eqn: Any) -> View:
        return View(self.leaf, (*self.chain, eqn))

    @property
    def loops(self) -> tuple[Loop, ...]:
        return tuple(e for e in self.chain if isinstance(e, Loop))

    def apply(self, x: Any, *, broadcast: bool = False) -> Any:
        """Replays the chain on a JAX value (the leaf or a tangent of it).

        A stacked loop maps the rest of the chain over the slices (a leading axis per stacked
        loop). With ``broadcast``, a loop constant is repeated along a new leading axis too,
        so the result has one leading axis per enclosing loop, outermost first.
        """
        return _replay(self.chain, x, broadcast)

    def indices(self, shape: tuple[int, ...]) -> np.ndarray:
        """The chain applied to ``arange(size).reshape(shape)`` in NumPy: where each entry
        of the viewed array comes from in the leaf (a leading axis per stacked loop)."""
        return _replay_numpy(self.chain, np.arange(math.prod(shape)).reshape(shape))


def _replay(chain: tuple[Any, ...], x: Any, broadcast: bool) -> Any:
    for j, eqn in enumerate(chain):
        if isinstance(eqn, Loop):
            rest = chain[j + 1 :]
            if eqn.stacked:
                return jax.vmap(lambda xi, r=rest: _replay(r, xi, broadcast))(x)
            if broadcast:
                y = _replay(rest, x, broadcast)
                return jnp.broadcast_to(y, (eqn.length, *y.shape))
            continue
        (x,) = bind(eqn, [x])
    return x


def _replay_numpy(chain: tuple[Any, ...], x: np.ndarray) -> np.ndarray:
    for j, eqn in enumerate(chain):
        if isinstance(eqn, Loop):
            if eqn.stacked:
                return np.stack([_replay_numpy(chain[j + 1 :], xi) for xi in x])
            continue
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


ELEMENTWISE = ("scale", "shift")


@dataclasses.dataclass(eq=False)
class Layer:
    r"""One placed parameter use: a dense (``dot_general``) or convolution layer, or an
    element-wise scale (``mul``) or shift (``add``/``sub``).

    The arrays of a dense or convolution layer are brought to a canonical layout, per example:

    * input ``A``: ``(S, G, D)`` (positions, groups, input features),
    * output cotangent ``Delta``: ``(S, G, F)`` (positions, groups, output features),
    * weight: ``(G, D, F)``,

    so that the per-example gradient of the weight is :math:`\sum_s a_s \otimes \delta_s`
    (per group). ``S`` counts every axis of the input that the weight does not contract:
    tokens of a sequence, pixels of a convolution's output. A merged bias appends a
    constant 1 to ``A`` (``D + 1`` features).

    Inside ``lax.scan`` loops (``loops``, outermost first), a weight passed whole to every
    iteration is applied at every iteration: the iterations join the positions
    (:math:`S = T S_{body}`, the position-summed form). A stacked weight, sliced per
    iteration, is one weight per iteration: the iterations join the groups
    (:math:`G = T G_{body}`, the weight ``(T G, D, F)``).

    An embedding (a ``gather`` of table rows) is a dense layer whose input is the one-hot
    row of each token (:math:`D = V`); it records the token indices, and the input Gram
    :math:`a_{is} \cdot a_{jt}` is the token-equality pattern :math:`[v_{is} = v_{jt}]`.

    An element-wise use records the other operand ``x`` of ``y = x * p`` (or nothing for
    ``y = x ± p``); the per-example gradient of the leaf is the transpose of the view
    (a sum over the broadcast axes and the loop iterations) applied to
    :math:`x \odot \delta` (or :math:`\pm\delta`).
    """

    name: str
    kind: str  # "dense", "conv", "embed", "scale" or "shift"
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
    sign: float = 1.0  # of a shift: -1 for the subtrahend of a sub

    @property
    def columns_in(self) -> int:
        return self.features_in + (self.bias is not None)

    @property
    def loops(self) -> tuple[Loop, ...]:
        return self.weight.loops

    @property
    def elementwise(self) -> bool:
        return self.kind in ELEMENTWISE

    @property
    def eps_shape(self) -> tuple[int, ...]:
        """The shape of the layer's output over all iterations of its loops."""
        inner = tuple(self.eqn.outvars[0].aval.shape)
        return (*(loop.length for loop in self.loops), *inner)

    # canonical layouts -------------------------------------------------------------------

    def activation(self, invals: Sequence[jax.Array]) -> jax.Array:
        """The recorded layer input of one iteration: ``(S, G, D[+1])``, the other operand
        of a scale, an empty array for a shift."""
        if self.kind == "shift":
            return jnp.zeros((0,), self.eqn.outvars[0].aval.dtype)
        x = invals[1 - self.weight_arg]
        if self.kind == "scale":
            return x
        if self.kind == "embed":  # the row indices, (S, 1, 1); see the one-hot in A
            return x.reshape(-1, 1, 1)
        if self.kind == "dense":
            a = _dense_activation(self.eqn, self.weight_arg, x)
        else:
            a = _conv_patches(self.eqn, x)
        if self.bias is not None:
            a = jnp.concatenate([a, jnp.ones((*a.shape[:-1], 1), a.dtype)], axis=-1)
        return a

    def canonical_activation(self, a: jax.Array) -> jax.Array:
        """Recorded inputs of every iteration, ``(T..., S, G, D)``, to ``(S, G, D)``."""
        return a if self.elementwise else self._merge_loops(a)

    def delta(self, y: jax.Array) -> jax.Array:
        """A cotangent of the layer output (every iteration) in the canonical layout."""
        if self.elementwise:
            return y

        def one(z):
            if self.kind == "dense":
                return _dense_delta(self.eqn, self.weight_arg, z)
            if self.kind == "embed":
                return z.reshape(-1, 1, self.features_out)
            return _conv_delta(self.eqn, z)

        for _ in self.loops:
            one = jax.vmap(one)
        return self._merge_loops(one(y))

    def _merge_loops(self, x: jax.Array) -> jax.Array:
        """``(T_1, ..., T_k, S, G, X)`` to ``(S', G', X)``: constants' iterations join the
        positions, stacked iterations the groups (outermost first, then the body's)."""
        loops = self.loops
        if not loops:
            return x
        k = len(loops)
        shared = [j for j, loop in enumerate(loops) if not loop.stacked]
        stacked = [j for j, loop in enumerate(loops) if loop.stacked]
        x = x.transpose(*shared, k, *stacked, k + 1, k + 2)
        return x.reshape(self.positions, self.groups, x.shape[-1])

    def weight_to_canonical(self, leaf: jax.Array) -> jax.Array:
        """The ``(G, D, F)`` matrix of a leaf-shaped array (the weight or a tangent of it)."""
        w = self.weight.apply(leaf)  # a leading axis per stacked loop

        def one(wi):
            if self.kind == "dense":
                return _dense_weight(self.eqn, self.weight_arg, wi)
            if self.kind == "embed":
                return wi[None]
            return _conv_weight(self.eqn, wi)

        for loop in self.loops:
            if loop.stacked:
                one = jax.vmap(one)
        out = one(w)
        return out.reshape(self.groups, *out.shape[-2:])

    def elementwise_rows(self, a: jax.Array, d: jax.Array, leaf_aval: Any) -> jax.Array:
        """Per-example gradients of the leaf, ``(m, leaf size)``, from the recorded operand
        ``a`` and the cotangents ``d`` (``(m, T..., out)``) of one example."""
        prod = d * a[None] if self.kind == "scale" else self.sign * d
        shape = self.eps_shape  # lax's add and mul broadcast axes of size 1

        def apply(leaf):
            return jnp.broadcast_to(self.weight.apply(leaf, broadcast=True), shape)

        aval = jax.ShapeDtypeStruct(leaf_aval.shape, prod.dtype)
        transpose = jax.linear_transpose(apply, aval)
        return jax.vmap(lambda x: transpose(x)[0].reshape(-1))(prod)

    def weight_from_canonical(self, dw: jax.Array, leaf_aval: Any) -> jax.Array:
        """The transpose of :meth:`weight_to_canonical`: a ``(G, D, F)`` array to leaf shape."""
        out_dtype = jax.eval_shape(self.weight_to_canonical, leaf_aval).dtype
        (out,) = jax.linear_transpose(self.weight_to_canonical, leaf_aval)(dw.astype(out_dtype))
        return out

    def bias_to_row(self, leaf: jax.Array) -> jax.Array:
        """The ``(G, F)`` row of a bias-shaped array (inside loops: the slices' rows of a
        stacked bias joined like the weight's groups)."""
        bias = cast(View, self.bias)
        x = View(bias.leaf, _outer_chain(bias.chain)).apply(leaf)  # (T_stacked..., slice)
        stacked = [loop.length for loop in self.loops if loop.stacked]
        g_inner = self.groups // math.prod(stacked)

        def one(xs):
            flat = xs.reshape(-1)
            if self.bias_order is None:
                return flat.reshape(g_inner, self.features_out)
            return flat[self.bias_order]

        for _ in stacked:
            one = jax.vmap(one)
        return one(x).reshape(self.groups, self.features_out)

    def bias_from_row(self, row: jax.Array, leaf_shape: tuple[int, ...]) -> jax.Array:
        """The transpose of :meth:`bias_to_row`."""
        aval = jax.ShapeDtypeStruct(tuple(leaf_shape), row.dtype)
        (out,) = jax.linear_transpose(self.bias_to_row, aval)(row)
        return out


def _outer_chain(chain: tuple[Any, ...]) -> tuple[Any, ...]:
    """A view chain up to its last loop (the views of the whole leaf and the loops)."""
    last = max((j for j, e in enumerate(chain) if isinstance(e, Loop)), default=-1)
    return chain[: last + 1]


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
    kind: str  # "dense", "conv", "bias", "scale", "shift", "negative shift", "other"
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
        elif name == "scan":
            inline.add(p)
            _analyse_scan(eqn, ins, p, uses, inline)
        elif name == "gather" and ins[0] is not None and ins[1] is None and _is_lookup(eqn):
            uses[ins[0].leaf].append(_Use("embed", p, eqn, 0, ins[0]))
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
        elif name in ("mul", "sub") and sum(x is not None for x in ins) == 1:
            arg = 0 if ins[0] is not None else 1
            kind = "scale" if name == "mul" else ("shift" if arg == 0 else "negative shift")
            uses[ins[arg].leaf].append(_Use(kind, p, eqn, arg, ins[arg]))
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


def _is_lookup(eqn: jex.JaxprEqn) -> bool:
    """A ``gather`` of whole rows of a ``(V, E)`` table (``table[tokens]``, ``jnp.take``)."""
    table = eqn.invars[0].aval.shape
    idx = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    return (
        len(table) == 2
        and len(idx) >= 1
        and idx[-1] == 1
        and tuple(dn.offset_dims) == (len(out) - 1,)
        and tuple(dn.collapsed_slice_dims) == (0,)
        and tuple(dn.start_index_map) == (0,)
        and not tuple(getattr(dn, "operand_batching_dims", ()))
        and tuple(eqn.params["slice_sizes"]) == (1, table[1])
    )


def _analyse_scan(
    eqn: jex.JaxprEqn,
    ins: Sequence[View | None],
    path: tuple[int, ...],
    uses: dict[int, list[_Use]],
    inline: set,
) -> None:
    """Follows parameters into a ``lax.scan`` body: a constant of the loop is passed whole to
    every iteration, a scanned-over input is sliced; a parameter carried or returned by the
    loop is an "other" use."""
    p = eqn.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    body: list[View | None] = []
    for j, view in enumerate(ins):
        if view is None or n_consts <= j < n_consts + n_carry:
            if view is not None:
                uses[view.leaf].append(_Use("other", path))
            body.append(None)
        else:
            body.append(view.then(Loop(length, stacked=j >= n_consts + n_carry)))
    outs = _analyse(p["jaxpr"].jaxpr, body, path, uses, inline)
    for view in outs:
        if view is not None:
            uses[view.leaf].append(_Use("other", path))


def _weight_is_isometric(use: _Use, aval) -> bool:
    shape = cast(jex.JaxprEqn, use.eqn).invars[use.arg].aval.shape
    stacked = [loop.length for loop in cast(View, use.view).loops if loop.stacked]
    shape = (*stacked, *shape)
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


def _weight_layer(u: _Use, name: str, *, shared: bool) -> Layer:
    eqn = cast(jex.JaxprEqn, u.eqn)  # dense and conv uses have theirs
    view = cast(View, u.view)
    if u.kind == "dense":
        s, g, d, f = _dense_shape(eqn, u.arg)
    elif u.kind == "embed":
        table = eqn.invars[0].aval.shape
        s, g, d, f = math.prod(eqn.invars[1].aval.shape[:-1]), 1, table[0], table[1]
    else:
        s, g, d, f = _conv_shape(eqn)
    for loop in view.loops:
        if loop.stacked:
            g *= loop.length
        else:
            s *= loop.length
    return Layer(
        name=name,
        kind=u.kind,
        path=u.path,
        eqn=eqn,
        weight=view,
        weight_arg=u.arg,
        positions=s,
        groups=g,
        features_in=d,
        features_out=f,
        shared=shared,
    )


def _elementwise_layer(u: _Use, name: str, aval: Any) -> Layer:
    eqn = cast(jex.JaxprEqn, u.eqn)
    view = cast(View, u.view)
    size = math.prod(aval.shape)
    out = math.prod(eqn.outvars[0].aval.shape) * math.prod(loop.length for loop in view.loops)
    return Layer(
        name=name,
        kind="scale" if u.kind == "scale" else "shift",
        path=u.path,
        eqn=eqn,
        weight=view,
        weight_arg=u.arg,
        positions=max(out // max(size, 1), 1),
        groups=1,
        features_in=1,
        features_out=size,
        sign=-1.0 if u.kind == "negative shift" else 1.0,
    )


def _bias_order_in_loops(layer: Layer, u: _Use, aval) -> np.ndarray | None | bool:
    """:func:`_bias_order` of one loop iteration: the bias must enter the layer's loops the
    same way as its weight, its slices whole parts of the leaf."""
    view = cast(View, u.view)
    if not view.loops:
        return _bias_order(layer, u, aval)
    if view.loops != layer.loops:
        return False
    outer = _outer_chain(view.chain)
    idx = _replay_numpy(outer, np.arange(math.prod(aval.shape)).reshape(aval.shape))
    if not _is_permutation(idx, math.prod(aval.shape)):
        return False
    n_stacked = sum(loop.stacked for loop in view.loops)
    inner = dataclasses.replace(u, view=View(view.leaf, view.chain[len(outer) :]))
    return _bias_order(layer, inner, jax.ShapeDtypeStruct(idx.shape[n_stacked:], aval.dtype))


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
        if not all(u.kind in ("dense", "conv", "embed") for u in leaf_uses):
            continue
        if not all(_weight_is_isometric(u, aval) for u in leaf_uses):
            continue
        placed.add(leaf)
        for k, u in enumerate(leaf_uses):
            suffix = f"[use {k + 1}]" if len(leaf_uses) > 1 else ""
            layer = _weight_layer(u, names[leaf] + suffix, shared=len(leaf_uses) > 1)
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
        order = _bias_order_in_loops(layer, u, aval)
        if order is False:
            continue
        layer.bias = u.view
        layer.bias_order = order
        layer.name = f"{layer.name} + {names[leaf]}"
        placed.add(leaf)

    # element-wise scales and shifts: every use multiplies or adds a broadcast view of the leaf
    for leaf, leaf_uses in uses.items():
        aval = param_avals[leaf]
        if leaf in placed or not leaf_uses or not jnp.issubdtype(aval.dtype, jnp.inexact):
            continue
        if not all(u.kind in ("bias", "scale", "shift", "negative shift") for u in leaf_uses):
            continue
        placed.add(leaf)
        for k, u in enumerate(leaf_uses):
            suffix = f"[use {k + 1}]" if len(leaf_uses) > 1 else ""
            layers.append(_elementwise_layer(u, names[leaf] + suffix, aval))

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

    ``eps[l]`` has :attr:`Layer.eps_shape`: one slice per iteration of the layer's loops.
    Returns the output (of one example, batch axis dropped) and each layer's recorded input
    (see :meth:`Layer.activation`), stacked over the iterations of its loops.
    """
    acts: dict[int, Any] = {}
    (out,) = _interpret(
        model.jaxpr,
        model.consts,
        [*param_leaves, *input_leaves],
        model,
        dict(enumerate(eps)),
        acts,
        (),
    )
    return out[0], [acts[k] for k in range(len(model.layers))]


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
        if p in model.inline and eqn.primitive.name == "scan":
            outvals = _interpret_scan(eqn, invals, model, eps, acts, p)
        elif p in model.inline:
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


def _interpret_scan(eqn, invals, model, eps, acts, path):
    """A ``lax.scan`` whose body is interpreted with hooks: the perturbations of the layers
    inside it are scanned over with the inputs, their recorded inputs stacked with the
    outputs."""
    p = eqn.params
    n_consts, n_carry = int(p["num_consts"]), int(p["num_carry"])
    closed = p["jaxpr"]
    consts, init, xs = (
        invals[:n_consts],
        invals[n_consts : n_consts + n_carry],
        invals[n_consts + n_carry :],
    )
    inside = [k for k, layer in enumerate(model.layers) if layer.path[: len(path)] == path]

    def body(carry, x):
        xs_t, eps_t = x
        acts_t: dict[int, Any] = {}
        outs = _interpret(
            closed.jaxpr,
            closed.consts,
            [*consts, *carry, *xs_t],
            model,
            dict(zip(inside, eps_t, strict=True)),
            acts_t,
            path,
        )
        return outs[:n_carry], (outs[n_carry:], [acts_t[k] for k in inside])

    carry, (ys, stacked) = lax.scan(
        body,
        list(init),
        (list(xs), [eps[k] for k in inside]),
        length=int(p["length"]),
        reverse=bool(p["reverse"]),
        unroll=True if int(p["length"]) <= UNROLL_LIMIT else p["unroll"],
    )
    acts.update(zip(inside, stacked, strict=True))
    return [*carry, *ys]
