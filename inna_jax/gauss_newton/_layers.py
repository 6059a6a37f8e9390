r"""A placed layer: the views of a parameter leaf and the canonical layouts of a layer.

:func:`inna_jax.gauss_newton._find_layers.find_layers` follows each parameter leaf through
*views* (reshapes, transposes, broadcasts: a :class:`View`) and the ``lax.scan`` loops it
enters (a :class:`Loop`), and places each of its uses as a :class:`Layer`. A layer brings its
input, its output cotangent and its weight to one canonical layout per example (positions,
groups, features), which is all that the layer-wise Jacobian
(:mod:`inna_jax.gauss_newton._layerwise_jacobian`) needs: the per-example gradient of the
weight is :math:`\sum_s a_s \otimes \delta_s` per group.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex


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
        return replay_numpy(self.chain, np.arange(math.prod(shape)).reshape(shape))


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


def replay_numpy(chain: tuple[Any, ...], x: np.ndarray) -> np.ndarray:
    for j, eqn in enumerate(chain):
        if isinstance(eqn, Loop):
            if eqn.stacked:
                return np.stack([replay_numpy(chain[j + 1 :], xi) for xi in x])
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


def is_permutation(idx: np.ndarray, size: int) -> bool:
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

    Inside a ``lax.cond``, a layer used the same way by every branch is hooked in each
    (``sites``) and records the input of the branch taken; a layer of one branch only records
    zeros when another branch is taken (where its cotangent is zero too).

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
    alternates: tuple[tuple[int, ...], ...] = ()  # the same eqn in the other branches of conds

    @property
    def sites(self) -> tuple[tuple[int, ...], ...]:
        """Where the layer is hooked: its eqn, and its twins in the other branches of the
        ``cond`` eqns around it that use the weight the same way."""
        return (self.path, *self.alternates)

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
        x = View(bias.leaf, outer_chain(bias.chain)).apply(leaf)  # (T_stacked..., slice)
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


def outer_chain(chain: tuple[Any, ...]) -> tuple[Any, ...]:
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


def dense_shape(eqn: jex.JaxprEqn, weight_arg: int) -> tuple[int, int, int, int]:
    xc, _, xb, _, xf, wf, *_ = _dense_dims(eqn, weight_arg)
    xs = eqn.invars[1 - weight_arg].aval.shape
    ws = eqn.invars[weight_arg].aval.shape
    prod = lambda shape, dims: math.prod(shape[d] for d in dims)  # noqa: E731
    return prod(xs, xf), prod(xs, xb), prod(xs, xc), prod(ws, wf)


def _dense_activation(eqn, weight_arg, x):
    xc, _, xb, _, xf, *_ = _dense_dims(eqn, weight_arg)
    s, g, d, _ = dense_shape(eqn, weight_arg)
    return x.transpose(xf + xb + xc).reshape(s, g, d)


def _dense_delta(eqn, weight_arg, y):
    *_, b_out, xf_out, wf_out = _dense_dims(eqn, weight_arg)
    s, g, _, f = dense_shape(eqn, weight_arg)
    return y.transpose(xf_out + b_out + wf_out).reshape(s, g, f)


def _dense_weight(eqn, weight_arg, w):
    _, wc, _, wb, _, wf, *_ = _dense_dims(eqn, weight_arg)
    _, g, d, f = dense_shape(eqn, weight_arg)
    return w.transpose(wb + wc + wf).reshape(g, d, f)


def dense_delta_indices(eqn, weight_arg, idx: np.ndarray) -> np.ndarray:
    *_, b_out, xf_out, wf_out = _dense_dims(eqn, weight_arg)
    s, g, _, f = dense_shape(eqn, weight_arg)
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


def conv_shape(eqn: jex.JaxprEqn) -> tuple[int, int, int, int]:
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
    s, _, d, _ = conv_shape(eqn)
    return patches.transpose(perm).reshape(s, g, d)


def _conv_delta(eqn: jex.JaxprEqn, y: jax.Array) -> jax.Array:
    out_spec = eqn.params["dimension_numbers"].out_spec
    s, g, _, f = conv_shape(eqn)
    return y.transpose(out_spec[0], *out_spec[2:], out_spec[1]).reshape(s, g, f)


def conv_delta_indices(eqn: jex.JaxprEqn, idx: np.ndarray) -> np.ndarray:
    out_spec = eqn.params["dimension_numbers"].out_spec
    s, g, _, f = conv_shape(eqn)
    return idx.transpose(out_spec[0], *out_spec[2:], out_spec[1]).reshape(s, g, f)


def _conv_weight(eqn: jex.JaxprEqn, w: jax.Array) -> jax.Array:
    _, rhs_spec, _, g, _, _, _, d_order = _conv_dims(eqn)
    kernel_axes = list(rhs_spec[2:]) + [rhs_spec[1]]
    d_axes = [kernel_axes[j] for j in d_order]
    _, _, d, f = conv_shape(eqn)
    if g == 1:
        return w.transpose(*d_axes, rhs_spec[0]).reshape(1, d, f)
    w = w.transpose(rhs_spec[0], *d_axes).reshape(g, f, d)
    return w.transpose(0, 2, 1)
