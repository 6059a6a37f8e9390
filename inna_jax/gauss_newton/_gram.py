r"""The empirical neural tangent kernel (NTK) Gram matrix of a batch.

For a model :math:`f(x, \theta) \in \mathbb{R}^C` and a batch :math:`x_1, \dots, x_b`, stack the
outputs into a vector of length :math:`bC` (example-major: index :math:`iC + c`) and let
:math:`J = \partial f / \partial \theta` be its :math:`bC \times P` Jacobian. The empirical NTK
is :math:`K = J J^\top`, with blocks :math:`K_{(i,c),(j,d)} = \langle \nabla_\theta f_c(x_i),
\nabla_\theta f_d(x_j) \rangle`. It is the curvature of the Gauss-Newton solve in batch space
(:func:`inna_jax.egn_direction`) and the matrix that drives the NTK dynamics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from inna_jax.gauss_newton._find_layers import find_layers
from inna_jax.gauss_newton._layerwise_jacobian import (
    REDUCTIONS,
    choose,
    cross_gram,
    layer_costs,
    layerwise_jacobian,
)

IMPLEMENTATIONS = ("auto", "structured", "jacobian", "matrix_free")

PredictFn = Callable[[Any, jax.Array], jax.Array]


def check_implementation(implementation: str, chunk_size: int | None) -> None:
    """Raises ``ValueError`` for an unknown implementation or a ``chunk_size`` < 1."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {implementation!r}; expected one of "
            f"{', '.join(map(repr, IMPLEMENTATIONS))}"
        )
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")


def check_reduction(reduction: str) -> None:
    """Raises ``ValueError`` for an unknown reduction over outputs."""
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(map(repr, REDUCTIONS))}"
        )


def _check_outputs(outputs: Any) -> None:
    if outputs.ndim not in (1, 2):
        raise ValueError(
            f"predict_fn must return outputs of shape (b,) or (b, C), got shape {outputs.shape}"
        )


def check_second_batch(
    predict_fn: PredictFn, params: Any, inputs: Any, inputs2: Any, reduction: str
) -> tuple[Any, Any]:
    """The output shapes of both batches; ``ValueError`` when they do not fit together."""
    out1 = jax.eval_shape(lambda p, x: predict_fn(p, x), params, inputs)
    _check_outputs(out1)
    if inputs2 is None:
        return out1, out1
    tree1, tree2 = jax.tree.structure(inputs), jax.tree.structure(inputs2)
    shapes1 = [jnp.shape(x)[1:] for x in jax.tree.leaves(inputs)]
    shapes2 = [jnp.shape(x)[1:] for x in jax.tree.leaves(inputs2)]
    if tree1 != tree2 or shapes1 != shapes2:
        raise ValueError(
            "inputs2 must have the structure and per-example shapes of inputs, got "
            f"{shapes2} against {shapes1}"
        )
    out2 = jax.eval_shape(lambda p, x: predict_fn(p, x), params, inputs2)
    if reduction == "diagonal" and out1.shape[0] != out2.shape[0]:
        raise ValueError(
            "reduction='diagonal' pairs example i of inputs with example i of inputs2, so both "
            f"need one batch size, got {out1.shape[0]} and {out2.shape[0]}"
        )
    return out1, out2


def _gram_matrix_free(
    predict_fn: PredictFn,
    params: Any,
    inputs: Any,
    chunk_size: int | None,
    inputs2: Any = None,
    reduction: str = "full",
) -> jax.Array:
    r"""``J_1 J_2^T`` column by column, ``K e_j = J_1 (J_2^T e_j)``: a VJP then a JVP.

    The columns are ``jax.vmap``-ed, ``chunk_size`` at a time, in a Python loop: a
    ``jax.lax.map`` puts the model inside a loop body, where XLA:CPU runs convolutions as
    generic loops (measured 14x slower on a small CNN). The trace and the diagonal keep only
    their part of each chunk.
    """
    leaves, tree = jax.tree.flatten(params)
    inexact = [i for i, x in enumerate(leaves) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]

    def f(values, x):
        full = list(leaves)
        for i, v in zip(inexact, values, strict=True):
            full[i] = v
        return predict_fn(jax.tree.unflatten(tree, full), x)

    primals = [leaves[i] for i in inexact]
    out1, f1_jvp = jax.linearize(lambda v: f(v, inputs).reshape(-1), primals)
    if inputs2 is None:
        f2_vjp = jax.linear_transpose(f1_jvp, primals)
        out2 = out1
        b2 = jax.eval_shape(lambda p, x: predict_fn(p, x), params, inputs).shape[0]
    else:
        shaped, f2_vjp = jax.vjp(lambda v: f(v, inputs2), primals)
        b2 = shaped.shape[0]
        out2 = shaped.reshape(-1)
    n1, n2 = out1.shape[0], out2.shape[0]
    c = n2 // b2
    b1 = n1 // c
    dtype = out1.dtype

    def column(e):
        (u,) = f2_vjp(e.reshape(out2.shape) if inputs2 is None else e.reshape(shaped.shape))
        return f1_jvp(u)  # (n1,)

    columns = jax.vmap(column)

    if reduction == "full":
        per = n2 if chunk_size is None else min(int(chunk_size), n2)
        parts = []
        for start in range(0, n2, per):
            idx = jnp.arange(start, min(start + per, n2))
            parts.append(columns(jax.nn.one_hot(idx, n2, dtype=dtype)))
        gram = jnp.concatenate(parts, axis=0).T  # (n1, n2)
        return 0.5 * (gram + gram.T) if inputs2 is None else gram
    # group the columns by example j of the second batch: C columns (j, d) each
    per = b2 if chunk_size is None else max(1, min(int(chunk_size) // c, b2))
    parts = []
    for start in range(0, b2, per):
        js = jnp.arange(start, min(start + per, b2))
        idx = (js[:, None] * c + jnp.arange(c)[None, :]).reshape(-1)
        cols = columns(jax.nn.one_hot(idx, n2, dtype=dtype)).reshape(len(js), c, b1, c)
        if reduction == "trace":
            parts.append(jnp.trace(cols, axis1=1, axis2=3))  # (len, b1)
        else:  # rows (i, c) of example i = j, column d: block [c, d]
            parts.append(cols[jnp.arange(len(js)), :, js, :].transpose(0, 2, 1))
    out = jnp.concatenate(parts, axis=0)
    if reduction == "trace":
        out = out.T  # (b1, b2)
        return 0.5 * (out + out.T) if inputs2 is None else out
    return 0.5 * (out + out.transpose(0, 2, 1)) if inputs2 is None else out


def _shape_result(kernel: jax.Array, outputs: Any, reduction: str) -> jax.Array:
    """Scalar outputs ``(b,)`` give a ``(b,)`` diagonal instead of ``(b, 1, 1)``."""
    if reduction == "diagonal" and outputs.ndim == 1:
        return kernel.reshape(kernel.shape[0])
    return kernel


def ntk_gram(
    predict_fn: PredictFn,
    params: Any,
    inputs: Any,
    inputs2: Any = None,
    *,
    implementation: str = "auto",
    reduction: str = "full",
    chunk_size: int | None = None,
) -> jax.Array:
    r"""The empirical NTK :math:`K = J_1 J_2^\top` of a batch, or of two batches.

    .. math::

        K_{(i,c),(j,d)} = \sum_{p=1}^{P}
        \frac{\partial f_c(x_i, \theta)}{\partial \theta_p}
        \frac{\partial f_d(x'_j, \theta)}{\partial \theta_p}

    with :math:`x` the batch ``inputs`` and :math:`x'` the batch ``inputs2`` (``inputs``
    itself when ``None``: the Gram matrix). ``reduction`` picks what is kept over the outputs:

    * ``"full"`` (default): every :math:`K_{(i,c),(j,d)}`, rows :math:`(i, c)`, columns
      :math:`(j, d)`, example-major;
    * ``"trace"``: :math:`\sum_c K_{(i,c),(j,c)}`, the kernel traced over outputs (``(b1,
      b2)``; neural-tangents' ``trace_axes=(-1,)`` is this divided by :math:`C`);
    * ``"diagonal"``: the per-example blocks :math:`K_{(i,c),(i,d)}` between example
      :math:`i` of both batches (``(b, C, C)``; neural-tangents' ``diagonal_axes=(0,)``).

    The cross-kernel comes from the same layer-wise pass over each batch, :math:`A_1A_2^\top`
    and :math:`\Delta_1\Delta_2^\top` per layer, and the reductions are taken inside the
    per-layer products (the trace costs :math:`C` times less than the full kernel).

    The model's dense and convolution layers are found in its traced program (see
    :func:`ntk_plan`). For a dense layer :math:`y = aW + b` with per-example input
    :math:`a_i` and output cotangent :math:`\delta_{ic} = \partial f_c(x_i)/\partial y_i`, the
    gradient of :math:`f_c(x_i)` is :math:`(a_i \otimes \delta_{ic}, \delta_{ic})`, so the layer
    adds

    .. math::

        K^{(l)} = \big[(AA^\top + 1) \otimes 1_{C\times C}\big] \odot \Delta\Delta^\top

    (a convolution, or a dense layer applied at several positions :math:`s`, adds
    :math:`\sum_{s,t}(a_{is}\cdot a_{jt} + 1)(\delta_{ics}\cdot\delta_{jdt})`). :math:`A` comes
    from one forward pass and :math:`\Delta` from one VJP with ``C`` cotangent columns, taken
    with respect to zero perturbations added to each layer's output. Parameters that are not a
    dense or convolution weight or bias (normalisation scales, embeddings, a weight used in
    another way) get their exact per-example Jacobian from the same VJP, so the result is
    exact for every model.

    * ``"auto"`` (default): per layer, the cheaper of the layer-wise form above and the
      layer's Jacobian :math:`\sum_s a_{is}\otimes\delta_{ics}` followed by :math:`J_lJ_l^\top`
      (:func:`ntk_plan` shows the choice and the costs).
    * ``"structured"``: the layer-wise form for every layer.
    * ``"jacobian"``: the per-layer Jacobian for every layer.
    * ``"matrix_free"``: linearizes the batch model once and builds column :math:`j` as
      :math:`J(J^\top e_j)`, a VJP followed by a JVP. It never holds a Jacobian, needs no
      layer structure and, unlike the others, does not assume that ``predict_fn`` treats
      examples independently. ``chunk_size`` columns are computed at once.

    The first three trace ``predict_fn`` on a single example and ``vmap`` over the batch, so
    they assume that examples are independent (no batch statistics: a BatchNorm must be in
    evaluation mode); there ``chunk_size`` is the number of examples per chunk of the pass
    (``jax.lax.map``), all at once when ``None``.

    Args:
        predict_fn: ``predict_fn(params, x)`` returning outputs of shape ``(b,)`` or
            ``(b, C)``. For a Flax NNX model: ``graphdef, params = nnx.split(model,
            nnx.Param)`` and ``predict_fn = lambda p, x: nnx.merge(graphdef, p)(x)``.
        params: any pytree of arrays (the trained parameters).
        inputs: a batch of ``b`` inputs, leading axis ``b`` (an array or a pytree of arrays).
        inputs2: a second batch of ``b2`` inputs of the same structure and per-example
            shapes, or ``None`` for the Gram matrix of ``inputs``.
        implementation: ``"auto"``, ``"structured"``, ``"jacobian"`` or ``"matrix_free"``.
        reduction: ``"full"``, ``"trace"`` or ``"diagonal"``.
        chunk_size: examples per chunk of the layer-wise pass, or columns per chunk of the
            matrix-free one.

    Returns:
        ``"full"``: ``(b, b2)`` for scalar outputs, ``(b*C, b2*C)`` for ``C`` outputs,
        ordered example-major (row ``i*C + c``, column ``j*C + d``); ``"trace"``:
        ``(b, b2)``; ``"diagonal"``: ``(b, C, C)``, or ``(b,)`` for scalar outputs. Without
        ``inputs2`` the kernel is symmetric positive semi-definite. In the dtype of the
        outputs.

    Raises:
        ValueError: for an unknown implementation or reduction, a ``chunk_size`` < 1,
            outputs that are not of shape ``(b,)`` or ``(b, C)``, an ``inputs2`` whose
            examples differ in shape from those of ``inputs``, or ``"diagonal"`` with two
            batch sizes.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> predict = lambda w, x: x @ w          # a linear model: K = X X^T
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]])
        >>> inna_jax.ntk_gram(predict, jnp.zeros(2), x)
        Array([[1., 1.],
               [1., 5.]], dtype=float32)
        >>> inna_jax.ntk_gram(predict, jnp.zeros(2), x, jnp.array([[0.0, 1.0]]))  # X X2^T
        Array([[0.],
               [2.]], dtype=float32)

    References:
        Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018.
        Novak, Sohl-Dickstein, Schoenholz, "Fast Finite Width Neural Tangent Kernel",
        ICML 2022, Section 3 (structured derivatives; the JVP/VJP "NTK-vector products").
        Goodfellow, "Efficient Per-Example Gradient Computations", arXiv:1510.01799 (2015).
    """
    check_implementation(implementation, chunk_size)
    check_reduction(reduction)
    out1, out2 = check_second_batch(predict_fn, params, inputs, inputs2, reduction)
    if implementation == "matrix_free":
        kernel = _gram_matrix_free(predict_fn, params, inputs, chunk_size, inputs2, reduction)
        return _shape_result(kernel, out1, reduction)
    model = find_layers(predict_fn, params, inputs)
    lj1 = layerwise_jacobian(
        predict_fn,
        params,
        inputs,
        implementation=implementation,
        chunk_size=chunk_size,
        model=model,
    )
    if inputs2 is None:
        return _shape_result(cross_gram(lj1, lj1, reduction), out1, reduction)
    lj2 = layerwise_jacobian(
        predict_fn,
        params,
        inputs2,
        implementation=implementation,
        chunk_size=chunk_size,
        model=model,
    )
    # one choice per layer for both batches, made for their mean size
    b = (out1.shape[0] + out2.shape[0]) // 2
    choices = choose(model, max(b, 1), lj1.width, implementation)
    return _shape_result(cross_gram(lj1, lj2, reduction, choices), out1, reduction)


@dataclasses.dataclass(frozen=True)
class NTKPlanRow:
    r"""One row of :class:`NTKPlan`: a placed layer use, or a parameter with its own Jacobian.

    For a layer, ``costs`` holds the multiply-adds of its two ways into the Gram matrix
    (with :math:`n = bm`): ``"structured"`` :math:`G(b^2D + n^2F)` for one position,
    ``"jacobian"`` :math:`G(nSDF + n^2DF)` (see :func:`ntk_plan`).

    Attributes:
        name: the parameter leaves (``"layers.0.kernel + layers.0.bias"``).
        kind: ``"dense"``, ``"conv"``, ``"embed"`` (a table lookup), ``"scale"`` or
            ``"shift"`` (an element-wise product or sum with a broadcast parameter), or
            ``"per-leaf Jacobian"`` (a fallback leaf).
        positions: :math:`S`, positions per example at which the weight is applied.
        groups: :math:`G`, independent groups (dot batch axes, convolution feature groups).
        features_in: :math:`D`, inputs per group and position (+1 with a merged bias).
        features_out: :math:`F`, outputs per group and position.
        parameters: the number of scalars of the row's leaves.
        choice: ``"structured"``, ``"jacobian"``, ``"elementwise"`` (per-example gradient
            rows of a scale or shift) or ``"per-leaf Jacobian"``.
        costs: multiply-adds of each way, ``{"structured": ..., "jacobian": ...}``.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
        >>> predict = lambda p, x: x @ p["w"] + p["b"]
        >>> row = inna_jax.ntk_plan(predict, params, jnp.zeros((4, 3))).rows[0]
        >>> row.name, row.kind, row.features_in, row.features_out, row.parameters
        ('w + b', 'dense', 4, 2, 8)
        >>> row.costs["structured"] == 4 * 4 * 4 + 8 * 8 * 2  # b^2 D + n^2 F, n = b C
        True

    References:
        Novak, Sohl-Dickstein, Schoenholz, "Fast Finite Width Neural Tangent Kernel",
        ICML 2022, Section 3 and Table 1.
    """

    name: str
    kind: str
    positions: int
    groups: int
    features_in: int
    features_out: int
    parameters: int
    choice: str
    costs: dict


@dataclasses.dataclass(frozen=True)
class NTKPlan:
    r"""How :func:`ntk_gram` builds the Gram matrix of a model, layer by layer.

    ``str(plan)`` is a table; :attr:`rows` holds the same as :class:`NTKPlanRow` records. The
    Gram matrix is the sum of the rows' shares,
    :math:`K = \sum_l K^{(l)} + \sum_{\text{leaves}} J_{leaf} J_{leaf}^\top`.

    Attributes:
        batch: :math:`b`.
        columns: :math:`m`, cotangent columns per example (``C`` for :func:`ntk_gram`).
        implementation: the requested implementation.
        rows: one :class:`NTKPlanRow` per placed layer use, then one per fallback leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> params = {"w": jnp.zeros((3, 2)), "scale": jnp.ones(2)}
        >>> predict = lambda p, x: (x @ p["w"]) * p["scale"]
        >>> plan = inna_jax.ntk_plan(predict, params, jnp.zeros((4, 3)))
        >>> [(row.name, row.choice) for row in plan.rows]
        [('w', 'structured'), ('scale', 'elementwise')]

    References:
        Novak, Sohl-Dickstein, Schoenholz, "Fast Finite Width Neural Tangent Kernel",
        ICML 2022, Section 3.
    """

    batch: int
    columns: int
    implementation: str
    rows: tuple

    def __str__(self) -> str:
        head = (
            f"{'layer':<36} {'kind':<17} {'S':>5} {'G':>3} {'D':>6} {'F':>5} "
            f"{'params':>8}  {'choice':<17} {'structured':>10} {'jacobian':>10}"
        )
        lines = [
            f"NTK plan: batch b={self.batch}, m={self.columns} columns per example, "
            f"implementation={self.implementation!r} (costs: million multiply-adds, weighted as in "
            "ntk_plan)",
            head,
            "-" * len(head),
        ]
        for r in self.rows:
            costs = [
                f"{r.costs[k] / 1e6:>10.1f}" if k in r.costs else f"{'-':>10}"
                for k in ("structured", "jacobian")
            ]
            lines.append(
                f"{r.name[:36]:<36} {r.kind:<17} {r.positions:>5} {r.groups:>3} "
                f"{r.features_in:>6} {r.features_out:>5} {r.parameters:>8}  "
                f"{r.choice:<17} {costs[0]} {costs[1]}"
            )
        return "\n".join(lines)


def ntk_plan(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    *,
    implementation: str = "auto",
    columns: int | None = None,
) -> NTKPlan:
    r"""Which layers :func:`ntk_gram` found in a model, and how it builds each one's share.

    For every placed layer (a dense or convolution weight, with the bias added to its output,
    or an embedding table: a dense layer on one-hot rows whose input Gram is the
    token-equality pattern) it lists :math:`S` (positions), :math:`G` (groups), :math:`D`
    (inputs, +1 for the bias), :math:`F` (outputs) and the multiply-adds of the two ways to
    add the layer to :math:`K`, with :math:`n = bm`:

    .. math::

        \text{structured: } G\,(b^2 S^2 D + b\,n\,S^2 F + n^2 S F)
        \;\;(G\,(b^2D + n^2F) \text{ if } S = 1), \qquad
        \text{jacobian: } G\,(nSDF + n^2DF).

    With several positions (:math:`S > 1`) the two batched contractions of the structured form
    (:math:`bnS^2F` and :math:`n^2SF`) count 8 times their multiply-adds: their small inner
    or outer dimensions ran 8 to 15 times slower per multiply-add than a large matrix
    product on XLA:CPU. ``"auto"`` takes the cheaper one. A weight used several times always
    gets its Jacobian (the sum over its uses).

    Inside ``lax.scan`` (also as written by ``nnx.scan``, ``flax.linen.scan``,
    ``eqx.nn.MLP(scan=True)``), a weight sliced per iteration (stacked layers) is one layer
    whose iterations are groups, :math:`G = T`, the cost of its unrolled twin; a weight passed
    whole to every iteration (a recurrent cell) is one layer whose iterations are positions,
    :math:`S = T`, the position-summed form :math:`\sum_{t,s}(a_t\cdot a'_s)(\delta_t\cdot
    \delta'_s)`. A parameter multiplied or added element-wise (LayerNorm, RMSNorm and
    BatchNorm scales and biases, a bias after a residual sum, a positional table) is a
    ``"scale"`` or ``"shift"`` row: its per-example gradients, the cotangent (times the other
    operand) summed over the broadcast axes, cost :math:`nSF + n^2 F` (``F`` its size). Every
    other parameter is a "per-leaf Jacobian" row, with cost :math:`n^2 P_{leaf}`.

    Args:
        predict_fn: as for :func:`ntk_gram`.
        params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
        inputs: a batch (arrays or ``jax.ShapeDtypeStruct``).
        implementation: ``"auto"``, ``"structured"`` or ``"jacobian"``.
        columns: cotangent columns per example, ``C`` by default (EGN with cross-entropy
            uses ``C - 1``).

    Returns:
        An :class:`NTKPlan`; print it for a table.

    Raises:
        ValueError: for an unknown implementation or outputs of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> import inna_jax
        >>> from inna_jax.models import MLP
        >>> graphdef, params = nnx.split(MLP(4, (8,), 3, rngs=nnx.Rngs(0)), nnx.Param)
        >>> predict = lambda p, x: nnx.merge(graphdef, p)(x)
        >>> plan = inna_jax.ntk_plan(predict, params, jnp.zeros((16, 4)))
        >>> [(row.name, row.choice) for row in plan.rows][0]
        ('layers.0.kernel + layers.0.bias', 'structured')
        >>> print(str(plan).splitlines()[3][:60])
        layers.0.kernel + layers.0.bias      dense                 1

    References:
        Novak, Sohl-Dickstein, Schoenholz, "Fast Finite Width Neural Tangent Kernel",
        ICML 2022, Section 3 and Table 1 (costs of the NTK methods).
    """
    check_implementation(implementation, None)
    if implementation == "matrix_free":
        raise ValueError("ntk_plan describes the layer-wise implementations, not 'matrix_free'")
    model = find_layers(predict_fn, params, inputs)
    batch = int(jax.tree.leaves(inputs)[0].shape[0])
    m = model.num_outputs if columns is None else int(columns)
    choices = choose(model, batch, m, implementation)
    rows = []
    for layer, choice in zip(model.layers, choices, strict=True):
        size = math.prod(model.param_avals[layer.weight.leaf].shape)
        if layer.bias is not None:
            size += math.prod(model.param_avals[layer.bias.leaf].shape)
        rows.append(
            NTKPlanRow(
                name=layer.name,
                kind=layer.kind,
                positions=layer.positions,
                groups=layer.groups,
                features_in=layer.columns_in,
                features_out=layer.features_out,
                parameters=size,
                choice=choice,
                costs=layer_costs(layer, batch, m),
            )
        )
    n = batch * m
    for leaf in model.fallback:
        size = math.prod(model.param_avals[leaf].shape)
        rows.append(
            NTKPlanRow(
                name=model.leaf_names[leaf],
                kind="per-leaf Jacobian",
                positions=1,
                groups=1,
                features_in=size,
                features_out=1,
                parameters=size,
                choice="per-leaf Jacobian",
                costs={"jacobian": float(n * n * size)},
            )
        )
    return NTKPlan(batch=batch, columns=m, implementation=implementation, rows=tuple(rows))
