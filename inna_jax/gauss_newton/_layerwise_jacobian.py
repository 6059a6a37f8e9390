r"""Per-layer NTK pieces: one forward pass and one VJP give the Gram matrix, :math:`J^\top u`
and :math:`Jv`.

For a layer with per-example input :math:`a_{is}` (positions :math:`s`, e.g. the pixels of a
convolution's output) and output cotangent :math:`\delta_{iks} = \partial (S^\top f)_k(x_i) /
\partial y_{is}` (column :math:`k` of the cotangent matrix :math:`S_i`), the gradient of
:math:`(S_i^\top f(x_i))_k` with respect to the weight is
:math:`\sum_s a_{is} \otimes \delta_{iks}` (Goodfellow 2015; Novak et al. 2022, "structured
derivatives"). So the layer's share of :math:`S^\top K S = (S^\top J)(S^\top J)^\top`
(:math:`S` block-diagonal, :math:`S = I` for :func:`inna_jax.ntk_gram`) is

.. math::

    K^{(l)}_{(ik),(jl)} = \sum_{s,t} (a_{is}\cdot a_{jt})\,(\delta_{iks}\cdot\delta_{jlt}),

which is :math:`(AA^\top) \odot (\Delta\Delta^\top)` for a dense layer (one position). A bias
adds a constant 1 to :math:`a`. Two ways to evaluate it, chosen per layer by cost
(:func:`layer_costs`):

* ``"structured"``: the input Gram :math:`P = AA^\top` over (example, position) pairs, then
  :math:`\sum_s P \delta` and a contraction with :math:`\Delta`. Multiply-adds
  :math:`G(b^2S^2D + b\,n\,S^2F + n^2SF)` (:math:`G(b^2D + n^2F)` when :math:`S = 1`), with
  :math:`n = bm` rows, :math:`D` inputs, :math:`F` outputs, :math:`G` groups.
* ``"jacobian"``: the layer's Jacobian :math:`J_l = \sum_s a_{is}\otimes\delta_{iks}`
  (:math:`n \times GDF`), then :math:`J_lJ_l^\top`: :math:`G(nSDF + n^2DF)`.

Parameters that :func:`inna_jax.gauss_newton._find_layers.find_layers` cannot place get their exact
per-example Jacobian from the same VJP (reverse mode restricted to those leaves, inside the
per-example ``vmap``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inna_jax.gauss_newton._find_layers import Layer, ModelLayers, find_layers, run_with_hooks

CHOICES = ("structured", "jacobian")


# The two contractions of the structured form with several positions are batched products
# with a small inner (S) or outer (m) dimension: on XLA:CPU (jax 0.10, a 2-core AMD EPYC) they
# ran at 1/8 to 1/15 of the multiply-add rate of a large matrix product (4-7 against 56
# GMAC/s). Their multiply-adds are weighted by this factor when "auto" chooses.
SMALL_PRODUCT_PENALTY = 8.0


def layer_costs(layer: Layer, batch: int, columns: int) -> dict[str, float]:
    """Multiply-adds of the two ways to add a layer to the Gram matrix (see the module).

    With several positions, the two batched contractions of the structured form count
    :data:`SMALL_PRODUCT_PENALTY` times their multiply-adds.
    """
    b, m = batch, columns
    n = b * m
    s, g, d, f = layer.positions, layer.groups, layer.columns_in, layer.features_out
    if layer.elementwise:  # rows (n, F) from n S F products, then their Gram
        return {"elementwise": float(n * s * f + n * n * f)}
    # an embedding's input Gram is a token-equality test, not a product over D = V
    d_gram = 1 if layer.kind == "embed" else d
    if s == 1:
        structured = g * (b * b * d_gram + n * n * f)
    else:
        small = b * n * s * s * f + n * n * s * f
        structured = g * (b * b * s * s * d_gram + SMALL_PRODUCT_PENALTY * small)
    jacobian = g * (n * s * d * f + n * n * d * f)
    return {"structured": float(structured), "jacobian": float(jacobian)}


def layer_memory(layer: Layer, batch: int, columns: int) -> dict[str, float]:
    """Elements of the largest temporary of each way (the Jacobian, or the S > 1 products)."""
    b, m = batch, columns
    n = b * m
    s, g, d, f = layer.positions, layer.groups, layer.columns_in, layer.features_out
    if layer.elementwise:
        return {"elementwise": float(n * s * f)}
    structured = g * n * n if s == 1 else g * max((b * s) ** 2, n * b * s * f)
    return {"structured": float(structured), "jacobian": float(g * n * d * f)}


def choose(model: ModelLayers, batch: int, columns: int, implementation: str) -> list[str]:
    """The way each layer is evaluated. Shared weights always use their Jacobian, element-wise
    scales and shifts their per-example gradient rows."""
    out = []
    for layer in model.layers:
        if layer.elementwise:
            out.append("elementwise")
        elif layer.shared:
            out.append("jacobian")
        elif implementation in CHOICES:
            out.append(implementation)
        else:
            costs = layer_costs(layer, batch, columns)
            out.append(min(CHOICES, key=lambda c: (costs[c], c != "structured")))
    return out


@dataclasses.dataclass(eq=False)
class LayerwiseJacobian:
    r"""The forward pass, the per-layer inputs and cotangents of a batch, and what they give.

    Attributes:
        model: the placed layers.
        choices: ``"structured"`` or ``"jacobian"`` per layer.
        outputs: the model outputs, ``(b,)`` or ``(b, C)``.
        columns: the cotangent columns :math:`S_i`, ``(b, C, m)``.
        acts: per layer, ``(b, S, G, D)``.
        deltas: per layer, ``(b, m, S, G, F)``.
        fallback: per fallback leaf, its per-example Jacobian ``(b, m, *leaf_shape)``.
        params: the parameter leaves.
        dtype: the dtype of the Gram matrix and of the batch-space vectors.
    """

    model: ModelLayers
    choices: list[str]
    outputs: jax.Array
    columns: jax.Array
    acts: list[jax.Array]
    deltas: list[jax.Array]
    fallback: list[jax.Array]
    params: list[Any]
    dtype: Any

    @property
    def batch(self) -> int:
        return self.columns.shape[0]

    @property
    def width(self) -> int:
        return self.columns.shape[2]

    def _a(self, k: int) -> jax.Array:
        """Layer ``k``'s inputs ``(b, S, G, D)`` (one-hot rows for an embedding)."""
        layer = self.model.layers[k]
        if layer.kind == "embed":
            return jax.nn.one_hot(self.acts[k][..., 0], layer.features_in, dtype=self.dtype)
        return self.acts[k].astype(self.dtype)

    def _tokens(self, k: int) -> jax.Array:
        """An embedding's row indices, ``(b, S, G)``."""
        return self.acts[k][..., 0]

    def _d(self, k: int) -> jax.Array:
        return self.deltas[k].astype(self.dtype)

    def _layer_jacobian(self, k: int) -> jax.Array:
        """``(b, m, G, D, F)``: :math:`\\sum_s a_{is} \\otimes \\delta_{iks}`."""
        a, d = self._a(k), self._d(k)
        b, s, g, din = a.shape
        m, f = d.shape[1], d.shape[-1]
        lhs = a.transpose(0, 2, 1, 3)  # (b, G, S, D)
        rhs = d.transpose(0, 3, 2, 1, 4).reshape(b, g, s, m * f)  # (b, G, S, mF)
        jac = jax.lax.dot_general(lhs, rhs, (((2,), (2,)), ((0, 1), (0, 1))))  # (b,G,D,mF)
        return jac.reshape(b, g, din, m, f).transpose(0, 3, 1, 2, 4)

    def _jacobian_rows(self, k: int) -> jax.Array:
        """``(b m, G F D)``: the layer's Jacobian rows, columns in an order fit for Grams."""
        a, d = self._a(k), self._d(k)
        b, s, g, din = a.shape
        m, f = d.shape[1], d.shape[-1]
        lhs = d.transpose(0, 3, 1, 4, 2)  # (b, G, m, F, S)
        rhs = a.transpose(0, 2, 1, 3)  # (b, G, S, D)
        jac = jax.lax.dot_general(lhs, rhs, (((4,), (2,)), ((0, 1), (0, 1))))  # (b,G,m,F,D)
        if g > 1:
            jac = jac.transpose(0, 2, 1, 3, 4)
        return jac.reshape(b * m, g * f * din)

    def _elementwise_rows(self) -> dict[int, jax.Array]:
        """Per leaf with element-wise uses: its per-example gradient rows ``(b m, size)``,
        summed over the uses (the transpose of the broadcast, over positions and loops)."""
        n = self.batch * self.width
        rows: dict[int, jax.Array] = {}
        for k, layer in enumerate(self.model.layers):
            if not layer.elementwise:
                continue
            leaf = layer.weight.leaf
            aval = self.model.param_avals[leaf]
            one = lambda a, d, ly=layer, av=aval: ly.elementwise_rows(a, d, av)  # noqa: E731
            part = jax.vmap(one)(self._a(k), self._d(k)).reshape(n, -1)
            rows[leaf] = part if leaf not in rows else rows[leaf] + part
        return rows

    def _fallback_rows(self) -> list[tuple[int, jax.Array]]:
        return list(zip(self.model.fallback, self.fallback, strict=True))

    def _shared_jacobians(self) -> list[jax.Array]:
        """Per shared weight: the sum of its uses' Jacobians, ``(b m, leaf size)``."""
        n = self.batch * self.width
        shared: dict[int, jax.Array] = {}
        for k, layer in enumerate(self.model.layers):
            if not layer.shared:
                continue
            leaf = layer.weight.leaf
            aval = self.model.param_avals[leaf]
            jac = self._layer_jacobian(k)[:, :, :, : layer.features_in, :]
            jac = jac.reshape(n, *jac.shape[2:])
            to_leaf = jax.vmap(lambda x, ly=layer, av=aval: ly.weight_from_canonical(x, av))
            part = to_leaf(jac).reshape(n, -1).astype(self.dtype)
            shared[leaf] = part if leaf not in shared else shared[leaf] + part
        return list(shared.values())

    def gram(self) -> jax.Array:
        r"""The Gram matrix :math:`S^\top J J^\top S`, ``(b m, b m)``, example-major."""
        return cross_gram(self, self, "full")

    def gram_diagonal(self) -> jax.Array:
        r"""The diagonal of :meth:`gram`, ``(b m,)``, without the off-diagonal blocks."""
        b, m = self.batch, self.width
        diag = jnp.zeros((b, m), self.dtype)
        for k, layer in enumerate(self.model.layers):
            if layer.shared or layer.elementwise:
                continue
            d = self._d(k)
            p = _input_gram_diagonal(self, self, k)  # (b, G, S, S)
            q = jnp.einsum("iksgf,iktgf->ikgst", d, d)  # (b, m, G, S, S)
            diag = diag + jnp.sum(q * p[:, None], axis=(2, 3, 4))
        n = b * m
        flat = diag.reshape(n)
        rows = [*self._shared_jacobians(), *self._elementwise_rows().values(), *self.fallback]
        for jac in rows:
            jac = jac.reshape(n, -1).astype(self.dtype)
            flat = flat + jnp.sum(jac * jac, axis=1)
        return flat

    def vjp(self, u: jax.Array) -> list[list[jax.Array]]:
        r""":math:`J^\top S u` for each row of ``u`` (``(q, b, m)``): ``q`` lists of leaves."""
        q = u.shape[0]
        u = u.astype(self.dtype)
        grads: list[list[Any]] = [[None] * len(self.params) for _ in range(q)]

        def add(r, leaf, value):
            value = value.astype(self.params[leaf].dtype)
            grads[r][leaf] = value if grads[r][leaf] is None else grads[r][leaf] + value

        for k, layer in enumerate(self.model.layers):
            if layer.elementwise:
                continue
            a, d = self._a(k), self._d(k)
            b, s, g, din = a.shape
            m, f = d.shape[1], d.shape[-1]
            # U_q = sum_k u_qk delta_k, as a loop over k (a fused elementwise sum)
            us = []
            for r in range(q):
                acc = u[r, :, 0, None, None, None] * d[:, 0]
                for c in range(1, m):
                    acc = acc + u[r, :, c, None, None, None] * d[:, c]
                us.append(acc)  # (b, S, G, F)
            big_u = jnp.stack(us, axis=-1)  # (b, S, G, F, q)
            if layer.kind == "embed":  # scatter-add of U into the rows of the tokens
                tok = self._tokens(k).transpose(2, 0, 1).reshape(g, b * s)
                rhs = big_u.transpose(2, 0, 1, 3, 4).reshape(g, b * s, f * q)
                dw = jax.vmap(_scatter_rows, in_axes=(0, 0, None))(tok, rhs, din)
                dw = dw.reshape(g, din, f, q)
            elif g == 1:
                a2 = a.reshape(b * s, din)
                dw = (a2.T @ big_u.reshape(b * s, f * q)).reshape(1, din, f, q)
            else:
                lhs = a.transpose(2, 0, 1, 3).reshape(g, b * s, din)
                rhs = big_u.transpose(2, 0, 1, 3, 4).reshape(g, b * s, f * q)
                dw = (lhs.transpose(0, 2, 1) @ rhs).reshape(g, din, f, q)
            dw = dw.transpose(3, 0, 1, 2)  # (q, G, D, F)
            nw = layer.features_in
            w_leaf = layer.weight.leaf
            aval = self.model.param_avals[w_leaf]
            for r in range(q):
                add(r, w_leaf, layer.weight_from_canonical(dw[r, :, :nw, :], aval))
                if layer.bias is not None:
                    b_leaf = layer.bias.leaf
                    shape = self.model.param_avals[b_leaf].shape
                    add(r, b_leaf, layer.bias_from_row(dw[r, :, nw, :], shape))
        n = self.batch * self.width
        flat_u = u.reshape(q, n)
        by_leaf = [*self._elementwise_rows().items(), *self._fallback_rows()]
        for leaf, jac in by_leaf:
            shape = self.model.param_avals[leaf].shape
            value = flat_u @ jac.reshape(n, -1).astype(self.dtype)
            for r in range(q):
                add(r, leaf, value[r].reshape(shape))
        for r in range(q):
            for leaf, x in enumerate(self.params):
                if grads[r][leaf] is None:
                    grads[r][leaf] = jnp.zeros_like(x)
        return grads

    def jvp(self, tangents: list[Any]) -> jax.Array:
        r""":math:`S^\top J v` for a tangent ``v`` given as a list of leaves: ``(b, m)``."""
        b, m = self.batch, self.width
        out = jnp.zeros((b, m), self.dtype)
        for k, layer in enumerate(self.model.layers):
            if layer.elementwise:
                continue
            a, d = self._a(k), self._d(k)
            _, s, g, din = a.shape
            f = d.shape[-1]
            w = layer.weight_to_canonical(tangents[layer.weight.leaf]).astype(self.dtype)
            if layer.bias is not None:
                row = layer.bias_to_row(tangents[layer.bias.leaf]).astype(self.dtype)
                w = jnp.concatenate([w, row[:, None, :]], axis=1)
            if layer.kind == "embed":  # the rows of the tokens
                tok = self._tokens(k)  # (b, S, G)
                z = jax.vmap(lambda wg, t: wg[t], in_axes=(0, 2), out_axes=2)(w, tok)
                z = z.reshape(b, -1)  # (b, S, G, F)
            elif g == 1:
                z = (a.reshape(b * s, din) @ w[0]).reshape(b, s * f)
            else:
                lhs = a.transpose(2, 0, 1, 3).reshape(g, b * s, din)
                z = (lhs @ w).reshape(g, b, s, f).transpose(1, 2, 0, 3).reshape(b, -1)
            dd = d.reshape(b, m, -1) if g == 1 else d.reshape(b, m, s * g * f)
            cols = [jnp.sum(z * dd[:, c], axis=1) for c in range(m)]
            out = out + jnp.stack(cols, axis=1)
        n = b * m
        by_leaf = [*self._elementwise_rows().items(), *self._fallback_rows()]
        for leaf, jac in by_leaf:
            v = tangents[leaf].reshape(-1).astype(self.dtype)
            out = out + (jac.reshape(n, -1).astype(self.dtype) @ v).reshape(b, m)
        return out


def _scatter_rows(tokens: jax.Array, values: jax.Array, rows: int) -> jax.Array:
    """``sum_s onehot(tokens_s) values_s^T``: a ``(rows, X)`` scatter-add."""
    return jnp.zeros((rows, values.shape[-1]), values.dtype).at[tokens].add(values)


def layerwise_jacobian(
    predict_fn: Callable,
    params: Any,
    inputs: Any,
    columns_fn: Callable[[jax.Array], jax.Array] | None = None,
    *,
    implementation: str = "auto",
    chunk_size: int | None = None,
    model: ModelLayers | None = None,
) -> LayerwiseJacobian:
    r"""Runs the batch once forward and once backward (``m`` cotangent columns per example).

    Args:
        predict_fn: ``predict_fn(params, x)``.
        params: a pytree of arrays.
        inputs: the batch.
        columns_fn: maps the outputs of one example, flattened to ``(C,)``, to its ``(C, m)``
            cotangent columns :math:`S_i`; the identity (``m = C``) when ``None``.
        implementation: ``"auto"``, ``"structured"`` or ``"jacobian"`` (per-layer choice).
        chunk_size: examples per chunk of the pass (``jax.lax.map``); all at once if ``None``.
        model: the result of :func:`find_layers`, if already computed.

    Returns:
        A :class:`LayerwiseJacobian`.
    """
    if model is None:
        model = find_layers(predict_fn, params, inputs)
    p_leaves = model.param_tree.flatten_up_to(params)
    x_leaves = model.input_tree.flatten_up_to(inputs)
    batch = jnp.shape(x_leaves[0])[0]
    c = model.num_outputs
    dtype = model.output_dtype
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"predict_fn must return floating-point outputs, got {dtype}")
    fb = model.fallback
    if columns_fn is None:
        columns_fn = lambda out: jnp.eye(c, dtype=dtype)  # noqa: E731
    width = jax.eval_shape(columns_fn, jax.ShapeDtypeStruct((c,), dtype)).shape[1]

    def one(x_i):
        x1 = [x[None] for x in x_i]

        def f(eps, fb_vals):
            leaves = list(p_leaves)
            for j, val in zip(fb, fb_vals, strict=True):
                leaves[j] = val
            return run_with_hooks(model, leaves, x1, eps)

        eps0 = [
            jnp.zeros(layer.eps_shape, layer.eqn.outvars[0].aval.dtype) for layer in model.layers
        ]
        out, vjp_fn, acts = jax.vjp(f, eps0, [p_leaves[j] for j in fb], has_aux=True)
        acts = [ly.canonical_activation(a) for ly, a in zip(model.layers, acts, strict=True)]
        cols = columns_fn(out.reshape(c)).astype(out.dtype)  # (C, m)
        cots = cols.T.reshape(width, *out.shape)
        d_eps, d_fb = jax.vmap(vjp_fn)(cots)
        deltas = [jax.vmap(ly.delta)(de) for ly, de in zip(model.layers, d_eps, strict=True)]
        return out, cols, acts, deltas, d_fb

    if chunk_size is None:
        out, cols, acts, deltas, d_fb = jax.vmap(one)(x_leaves)
    else:
        out, cols, acts, deltas, d_fb = jax.lax.map(
            one, x_leaves, batch_size=min(int(chunk_size), batch)
        )
    return LayerwiseJacobian(
        model=model,
        choices=choose(model, batch, width, implementation),
        outputs=out,
        columns=cols,
        acts=list(acts),
        deltas=list(deltas),
        fallback=list(d_fb),
        params=list(p_leaves),
        dtype=dtype,
    )


def unflatten(model: ModelLayers, leaves: list[Any]) -> Any:
    """A list of leaves back to the parameter pytree."""
    return jax.tree.unflatten(model.param_tree, leaves)


def flatten(model: ModelLayers, tree: Any) -> list[Any]:
    return model.param_tree.flatten_up_to(tree)


def total_costs(model: ModelLayers, batch: int, columns: int, choices: list[str]) -> float:
    total = 0.0
    for layer, choice in zip(model.layers, choices, strict=True):
        total += layer_costs(layer, batch, columns)[choice]
    n = batch * columns
    for leaf in model.fallback:
        total += n * n * math.prod(model.param_avals[leaf].shape)
    return total


REDUCTIONS = ("full", "trace", "diagonal")


def _rows(lj: LayerwiseJacobian) -> list[jax.Array]:
    """The Jacobian rows ``(b m, X)`` of the shared weights and of the fallback leaves."""
    n = lj.batch * lj.width
    rows = list(lj._shared_jacobians())
    rows += list(lj._elementwise_rows().values())
    rows += [jac.reshape(n, -1).astype(lj.dtype) for jac in lj.fallback]
    return rows


def _rows_product(r1: jax.Array, r2: jax.Array, b1: int, b2: int, m: int, reduction: str):
    """``R1 R2^T`` reduced: ``(n1, n2)``, its trace over outputs ``(b1, b2)``, or ``(b, m, m)``."""
    if reduction == "full":
        return r1 @ r2.T
    if reduction == "trace":
        return r1.reshape(b1, -1) @ r2.reshape(b2, -1).T
    x1, x2 = r1.reshape(b1, m, -1), r2.reshape(b2, m, -1)
    return jax.lax.dot_general(x1, x2, (((2,), (2,)), ((0,), (0,))))  # (b, m, m)


def _input_gram(lj1: LayerwiseJacobian, lj2: LayerwiseJacobian, k: int) -> jax.Array:
    r"""The inputs' Gram :math:`a_{is} \cdot a'_{jt}` per group, ``(G, b1, S, b2, S)``; for an
    embedding the token-equality pattern :math:`[v_{is} = v'_{jt}]`."""
    if lj1.model.layers[k].kind == "embed":
        t1 = lj1._tokens(k).transpose(2, 0, 1)  # (G, b1, S)
        t2 = lj2._tokens(k).transpose(2, 0, 1)
        return (t1[:, :, :, None, None] == t2[:, None, None]).astype(lj1.dtype)
    a1, a2 = lj1._a(k), lj2._a(k)
    b1, s, g, din = a1.shape
    b2 = a2.shape[0]
    if g == 1:  # a plain matrix product (XLA:CPU runs a batch of one more slowly)
        return (a1.reshape(b1 * s, din) @ a2.reshape(b2 * s, din).T).reshape(1, b1, s, b2, s)
    a1g = a1.transpose(2, 0, 1, 3).reshape(g, b1 * s, din)
    a2g = a2.transpose(2, 0, 1, 3).reshape(g, b2 * s, din)
    return (a1g @ a2g.transpose(0, 2, 1)).reshape(g, b1, s, b2, s)


def _input_gram_diagonal(lj1: LayerwiseJacobian, lj2: LayerwiseJacobian, k: int) -> jax.Array:
    """The blocks of example ``i`` of both batches of :func:`_input_gram`, ``(b, G, S, S)``."""
    if lj1.model.layers[k].kind == "embed":
        t1, t2 = lj1._tokens(k), lj2._tokens(k)  # (b, S, G)
        eq = t1[:, :, None, :] == t2[:, None, :, :]  # (b, S, S, G)
        return eq.transpose(0, 3, 1, 2).astype(lj1.dtype)
    return jnp.einsum("isgd,itgd->igst", lj1._a(k), lj2._a(k))


def _structured_cross(
    lj1: LayerwiseJacobian, lj2: LayerwiseJacobian, k: int, reduction: str
) -> jax.Array:
    r"""One layer's :math:`\sum_{s,t}(a_{is}\cdot a'_{jt})(\delta_{iks}\cdot\delta'_{jlt})`."""
    d1, d2 = lj1._d(k), lj2._d(k)
    b1, s, g, f = d1.shape[0], d1.shape[2], d1.shape[3], d1.shape[4]
    b2 = d2.shape[0]
    m = d1.shape[1]
    n1, n2 = b1 * m, b2 * m
    if reduction == "diagonal":
        p = _input_gram_diagonal(lj1, lj2, k)  # (b, G, S, S)
        q = jnp.einsum("iksgf,iltgf->iklgst", d1, d2)  # (b, m, m, G, S, S)
        return jnp.sum(q * p[:, None, None], axis=(3, 4, 5))
    if s == 1 and g == 1:
        p = _input_gram(lj1, lj2, k).reshape(b1, b2)
        if reduction == "trace":
            return p * (d1.reshape(b1, m * f) @ d2.reshape(b2, m * f).T)
        q = (d1.reshape(n1, f) @ d2.reshape(n2, f).T).reshape(b1, m, b2, m)
        return (q * p[:, None, :, None]).reshape(n1, n2)
    if s == 1 and reduction == "full" and any(lp.stacked for lp in lj1.model.layers[k].loops):
        # one layer per iteration of a scan over stacked weights: the 2D products of the
        # unrolled layers (XLA:CPU runs them faster than the batched ones)
        p = _input_gram(lj1, lj2, k).reshape(g, b1, b2)
        out = jnp.zeros((n1, n2), lj1.dtype)
        for gi in range(g):
            q = (d1[:, :, 0, gi].reshape(n1, f) @ d2[:, :, 0, gi].reshape(n2, f).T).reshape(
                b1, m, b2, m
            )
            out = out + (q * p[gi][:, None, :, None]).reshape(n1, n2)
        return out
    if s == 1:
        p = _input_gram(lj1, lj2, k).reshape(g, b1, b2)
        if reduction == "trace":
            e1 = d1.reshape(b1, m, g, f).transpose(2, 0, 1, 3).reshape(g, b1, m * f)
            e2 = d2.reshape(b2, m, g, f).transpose(2, 0, 1, 3).reshape(g, b2, m * f)
            return jnp.sum(p * (e1 @ e2.transpose(0, 2, 1)), axis=0)
        e1 = d1.reshape(n1, g, f).transpose(1, 0, 2)  # (G, n1, F)
        e2 = d2.reshape(n2, g, f).transpose(1, 0, 2)
        q = (e1 @ e2.transpose(0, 2, 1)).reshape(g, b1, m, b2, m)
        return jnp.sum(q * p[:, :, None, :, None], axis=0).reshape(n1, n2)
    p = _input_gram(lj1, lj2, k).reshape(g, b1, s, b2 * s)  # (G, i, s, (j t))
    dg = d1.transpose(3, 0, 2, 1, 4).reshape(g, b1, s, m * f)  # (G, i, s, (k f))
    r = jax.lax.dot_general(p, dg, (((2,), (2,)), ((0, 1), (0, 1))))  # (G, i, (jt), (kf))
    r = r.reshape(g, b1, b2, s, m, f)
    if reduction == "trace":
        r = r.transpose(2, 1, 4, 0, 3, 5).reshape(b2, b1, m * g * s * f)  # (j, i, (k g t f))
        dj = d2.transpose(0, 1, 3, 2, 4).reshape(b2, m * g * s * f)
        out = jax.lax.dot_general(r, dj, (((2,), (1,)), ((0,), (0,))))  # (j, i)
        return out.T
    r = r.transpose(2, 1, 4, 0, 3, 5).reshape(b2, n1, g * s * f)  # (j, (ik), (g t f))
    dj = d2.transpose(0, 3, 2, 4, 1).reshape(b2, g * s * f, m)  # (j, (g t f), l)
    out = jax.lax.dot_general(r, dj, (((2,), (1,)), ((0,), (0,))))  # (j, (ik), l)
    return out.transpose(1, 0, 2).reshape(n1, n2)


def _diagonal_choice(layer: Layer, columns: int) -> str:
    """Per-example blocks: the S^2 form or the per-example Jacobian, whichever is cheaper."""
    m = columns
    s, g, d, f = layer.positions, layer.groups, layer.columns_in, layer.features_out
    structured = g * s * s * (d + m * m * f)
    jacobian = g * (m * s * d * f + m * m * d * f)
    return "structured" if structured <= jacobian else "jacobian"


def cross_gram(
    lj1: LayerwiseJacobian,
    lj2: LayerwiseJacobian,
    reduction: str = "full",
    choices: list[str] | None = None,
) -> jax.Array:
    r"""The cross-Gram :math:`S_1^\top J_1 J_2^\top S_2` of two batches, reduced over outputs.

    With rows :math:`(i, k)` of the first batch and columns :math:`(j, l)` of the second, a
    layer adds :math:`\sum_{s,t}(a_{is}\cdot a'_{jt})(\delta_{iks}\cdot\delta'_{jlt})`, which
    for a dense layer is :math:`[(A_1A_2^\top)\otimes 1_{m\times m}] \odot \Delta_1\Delta_2^\top`.

    Args:
        lj1: the pass over the first batch.
        lj2: the pass over the second batch, of the same model (``lj1`` itself for a Gram).
        reduction: ``"full"``: ``(b1 m, b2 m)``; ``"trace"``: the sum over :math:`k = l`,
            ``(b1, b2)``; ``"diagonal"``: the blocks of example :math:`i` of both batches,
            ``(b, m, m)`` (the batches must have one size).
        choices: ``"structured"`` or ``"jacobian"`` per layer; ``lj1.choices`` when ``None``.

    The Gram of a batch with itself (``lj2 is lj1``, ``"full"``) sums the products of the
    Jacobian rows (Jacobian-form layers, element-wise rows, per-leaf Jacobians) from their lower
    half when there are at least :data:`SYMMETRIC_MIN_ROWS` rows (see :class:`_HalfGram`).

    Returns:
        The reduced kernel, in ``lj1.dtype``.
    """
    b1, b2, m = lj1.batch, lj2.batch, lj1.width
    choices = lj1.choices if choices is None else choices
    shape = {"full": (b1 * m, b2 * m), "trace": (b1, b2), "diagonal": (b1, m, m)}[reduction]
    out = jnp.zeros(shape, lj1.dtype)
    halves = _HalfGram(b1 * m) if lj2 is lj1 and reduction == "full" else None
    for k, (layer, choice) in enumerate(zip(lj1.model.layers, choices, strict=True)):
        if layer.shared or layer.elementwise:
            continue
        if reduction == "diagonal":
            choice = _diagonal_choice(layer, m)
        if choice == "structured":
            out = out + _structured_cross(lj1, lj2, k, reduction)
        elif halves is not None:
            halves.add(lj1._jacobian_rows(k))
        else:
            r1 = lj1._jacobian_rows(k)
            r2 = r1 if lj2 is lj1 else lj2._jacobian_rows(k)
            out = out + _rows_product(r1, r2, b1, b2, m, reduction)
    rows1 = _rows(lj1)
    rows2 = rows1 if lj2 is lj1 else _rows(lj2)
    for r1, r2 in zip(rows1, rows2, strict=True):
        if halves is not None:
            halves.add(r1)
        else:
            out = out + _rows_product(r1, r2, b1, b2, m, reduction)
    return out if halves is None else out + halves.gram(out.dtype)


# A Gram R R^T of n >= this many rows is built as its lower half, [R_0; R_1] R_0^T and
# R_1 R_1^T, 3/4 of the multiply-adds. On XLA:CPU (jax 0.10, 2-core AMD EPYC, float32, n = 576)
# it took 0.78x the CPU time of R R^T for the GRU of benchmarks/egn_zoo.py (rows of 1,088 and
# 12,288 columns) and 0.97x for its transformer (14 row blocks of 4,160-8,320 columns); four
# or six row blocks (5/8 and 7/12 of the multiply-adds) ran no faster than R R^T: XLA's
# products of fewer rows run at a lower rate.
SYMMETRIC_MIN_ROWS = 512


class _HalfGram:
    r"""Accumulates :math:`\sum_l R_l R_l^\top` (each ``R_l`` of ``n`` rows) from its
    lower half when ``n >= SYMMETRIC_MIN_ROWS``: with the rows split in two,
    :math:`[R_0; R_1] R_0^\top` and :math:`R_1 R_1^\top`, and the upper right block the
    transpose of the lower left one (the same sums of products, so exact)."""

    def __init__(self, n: int):
        self.n = n
        self.h = n // 2 if n >= SYMMETRIC_MIN_ROWS else n
        self.left: jax.Array | None = None  # (n, h): [R_0; R_1] R_0^T
        self.corner: jax.Array | None = None  # (n - h, n - h): R_1 R_1^T

    def add(self, r: jax.Array) -> None:
        h = self.h
        nt = (((1,), (1,)), ((), ()))
        left = jax.lax.dot_general(r, r[:h], nt)
        self.left = left if self.left is None else self.left + left
        if h < self.n:
            corner = jax.lax.dot_general(r[h:], r[h:], nt)
            self.corner = corner if self.corner is None else self.corner + corner

    def gram(self, dtype: Any) -> jax.Array:
        if self.left is None:
            return jnp.zeros((self.n, self.n), dtype)
        if self.corner is None:
            return self.left
        h = self.h
        top = jnp.concatenate([self.left[:h], self.left[h:].T], axis=1)
        bottom = jnp.concatenate([self.left[h:], self.corner], axis=1)
        return jnp.concatenate([top, bottom], axis=0)
