r"""The empirical neural tangent kernel (NTK) Gram matrix of a batch.

For a model :math:`f(x, \theta) \in \mathbb{R}^C` and a batch :math:`x_1, \dots, x_b`, stack the
outputs into a vector of length :math:`bC` (example-major: index :math:`iC + c`) and let
:math:`J = \partial f / \partial \theta` be its :math:`bC \times P` Jacobian. The empirical NTK
is :math:`K = J J^\top`, with blocks :math:`K_{(i,c),(j,d)} = \langle \nabla_\theta f_c(x_i),
\nabla_\theta f_d(x_j) \rangle`. It is the curvature of the Gauss-Newton solve in batch space
(:func:`inna_jax.egn_direction`) and the matrix that drives the NTK dynamics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("jacobian", "matrix_free")

PredictFn = Callable[[Any, jax.Array], jax.Array]


def _check_outputs(outputs: jax.Array) -> None:
    if outputs.ndim not in (1, 2):
        raise ValueError(
            f"predict_fn must return outputs of shape (b,) or (b, C), got shape {outputs.shape}"
        )


def _gram_jacobian(predict_fn: PredictFn, params: Any, inputs: jax.Array) -> jax.Array:
    """``J J^T`` from per-example Jacobians, ``vmap(jacrev)``, summed leaf by leaf."""
    shape = jax.eval_shape(lambda p, x: predict_fn(p, x), params, inputs).shape
    n = shape[0] * (1 if len(shape) == 1 else shape[1])
    jac = jax.vmap(lambda x: jax.jacrev(lambda p: predict_fn(p, x[None])[0])(params))(inputs)
    leaves = jax.tree.leaves(jac)
    if not leaves:
        raise ValueError("params has no array leaves: the NTK is undefined")
    gram = jnp.zeros((n, n), leaves[0].dtype)
    for leaf in leaves:
        rows = leaf.reshape(n, -1)  # (b, [C,] *param_shape) -> (b*C, p_leaf)
        gram = gram + rows @ rows.T
    return gram


def _gram_matrix_free(
    predict_fn: PredictFn, params: Any, inputs: jax.Array, chunk_size: int | None
) -> jax.Array:
    """``J J^T`` column by column, ``K e_j = J (J^T e_j)``, with a linearized model."""
    outputs, f_jvp = jax.linearize(lambda p: predict_fn(p, inputs).reshape(-1), params)
    f_vjp = jax.linear_transpose(f_jvp, params)
    n = outputs.shape[0]
    eye = jnp.eye(n, dtype=outputs.dtype)

    def column(e):
        (u,) = f_vjp(e)
        return f_jvp(u)

    batch = n if chunk_size is None else min(int(chunk_size), n)
    gram = jax.lax.map(column, eye, batch_size=batch)
    return 0.5 * (gram + gram.T)


def ntk_gram(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    *,
    implementation: str = "jacobian",
    chunk_size: int | None = None,
) -> jax.Array:
    r"""The empirical NTK Gram matrix :math:`K = J J^\top` of a batch.

    .. math::

        K_{(i,c),(j,d)} = \sum_{p=1}^{P}
        \frac{\partial f_c(x_i, \theta)}{\partial \theta_p}
        \frac{\partial f_d(x_j, \theta)}{\partial \theta_p}

    Two implementations give the same matrix:

    * ``"jacobian"``: materialises the per-example Jacobians with ``vmap(jacrev)`` (memory
      :math:`bCP`) and contracts them leaf by leaf. It assumes, as the per-example ``vmap``
      does, that ``predict_fn`` treats examples independently (no batch statistics).
      Fastest when :math:`bCP` fits in memory.
    * ``"matrix_free"``: linearizes the batch model once and builds column :math:`j` as
      :math:`J(J^\top e_j)`, a VJP followed by a JVP. It never holds :math:`J`; ``chunk_size``
      columns are computed at once (memory about ``chunk_size`` :math:`\times P`), all of
      them when ``chunk_size`` is ``None``. Its cost is :math:`bC` VJP/JVP pairs over the
      whole batch.

    Args:
        predict_fn: ``predict_fn(params, x)`` returning outputs of shape ``(b,)`` or
            ``(b, C)``. For a Flax NNX model: ``graphdef, params = nnx.split(model,
            nnx.Param)`` and ``predict_fn = lambda p, x: nnx.merge(graphdef, p)(x)``.
        params: any pytree of arrays (the trained parameters).
        inputs: a batch of ``b`` inputs, leading axis ``b``.
        implementation: ``"jacobian"`` or ``"matrix_free"``.
        chunk_size: columns per chunk of the matrix-free path (ignored by ``"jacobian"``).

    Returns:
        The symmetric positive semi-definite ``(b, b)`` matrix for scalar outputs, or
        ``(b*C, b*C)`` for ``C`` outputs, ordered example-major (row ``i*C + c``).

    Raises:
        ValueError: for an unknown implementation, a ``chunk_size`` < 1 or outputs that are
            not of shape ``(b,)`` or ``(b, C)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> predict = lambda w, x: x @ w          # a linear model: K = X X^T
        >>> x = jnp.array([[1.0, 0.0], [1.0, 2.0]])
        >>> inna_jax.ntk_gram(predict, jnp.zeros(2), x)
        Array([[1., 1.],
               [1., 5.]], dtype=float32)

    References:
        Jacot, Gabriel, Hongler, "Neural Tangent Kernel", NeurIPS 2018.
        Novak, Sohl-Dickstein, Schoenholz, "Fast Finite Width Neural Tangent Kernel",
        ICML 2022 (Jacobian contraction and the JVP/VJP "NTK-vector product" methods).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {implementation!r}; expected one of "
            f"{', '.join(map(repr, IMPLEMENTATIONS))}"
        )
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    _check_outputs(jax.eval_shape(lambda p, x: predict_fn(p, x), params, inputs))
    if implementation == "jacobian":
        return _gram_jacobian(predict_fn, params, inputs)
    return _gram_matrix_free(predict_fn, params, inputs, chunk_size)
