r"""SGN: a stochastic Gauss-Newton baseline whose step is solved by conjugate gradient.

The direction solves, in parameter space,

.. math::

    \Big(\tfrac1b J^\top Q J + \lambda I\Big) d = -g

by at most ``cg_iterations`` (10) conjugate-gradient iterations from :math:`d = 0`. Each
iteration needs one Gauss-Newton-vector product :math:`J^\top Q J v / b` with
:math:`Q = SS^\top`. By default it comes from the layer inputs :math:`A` and the output
cotangents :math:`\Delta` of one forward pass and one VJP with the columns of each
:math:`S_i` (as in :func:`inna_jax.egn`): :math:`S^\top Jv` and :math:`J^\top S u` are then
products with :math:`A` and :math:`\Delta` only, no pass through the model per iteration
(``benchmarks/egn_scaling.py``: 5x faster for scalar outputs, 7-80x on a small CNN, equal for
an MLP with 10 classes). ``implementation="matrix_free"`` uses JVPs and VJPs of the
linearized batch model instead. The step logic (Armijo, Levenberg-Marquardt, momentum) is
that of :func:`inna_jax.egn`, so the two optimizers differ only by the solve.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax.gauss_newton._gram import PredictFn, check_implementation
from inna_jax.gauss_newton._layerwise_jacobian import flatten, unflatten
from inna_jax.gauss_newton._loss_roots import as_matrix, check_loss, loss_terms
from inna_jax.gauss_newton._step import (
    Direction,
    StepSettings,
    _vdot,
    gauss_newton_transformation,
    layer_pass,
)


def _sgn_direction_linearized(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    cg_iterations: int,
) -> Direction:
    """SGN with JVPs and VJPs of the linearized batch model (no layer structure)."""
    outputs, f_jvp = jax.linearize(lambda p: predict_fn(p, inputs), params)
    f_vjp = jax.linear_transpose(f_jvp, params)
    out2d, tgt = as_matrix(outputs, targets, loss)
    terms = loss_terms(out2d, tgt, loss)
    b = out2d.shape[0]
    dtype = out2d.dtype
    s = terms.sqrt_hessian
    lam = jnp.asarray(regularizer, dtype)
    (gradient,) = f_vjp((terms.residual / b).reshape(outputs.shape))
    # CG runs in one dtype for all leaves (at least float32; jax's cg sums the leaves' dot
    # products, which mixed bf16/f32 leaves cannot do under strict promotion)
    cg_dtype = _cg_dtype(dtype)
    to_cg = lambda tree: jax.tree.map(lambda x: x.astype(cg_dtype), tree)
    to_params = lambda tree: jax.tree.map(lambda x, p: x.astype(p.dtype), tree, params)

    def root_jvp(t):  # S^T J t, (b, m)
        return jnp.einsum("iak,ia->ik", s, f_jvp(to_params(t)).reshape(out2d.shape))

    def gn_vector_product(v):
        u = root_jvp(v) / b
        (jtqjv,) = f_vjp(jnp.einsum("iak,ik->ia", s, u).reshape(outputs.shape))
        return jax.tree.map(lambda x, y: x.astype(cg_dtype) + lam.astype(cg_dtype) * y, jtqjv, v)

    minus_g = jax.tree.map(jnp.negative, to_cg(gradient))
    direction, _ = jax.scipy.sparse.linalg.cg(
        gn_vector_product, minus_g, tol=0.0, atol=0.0, maxiter=cg_iterations
    )
    direction = to_params(direction)
    # the trace of S^T K S needs the per-example Jacobian rows, which this path never forms:
    # no relative floor for the LM rule here
    return Direction(
        direction=direction,
        loss=jnp.mean(terms.loss),
        slope=_vdot(gradient, direction, dtype),
        root_jd=None,
        batch=b,
        gradient_fn=lambda: gradient,
        root_jvp=root_jvp,
        gram_scale=jnp.zeros((), dtype),
    )


def _sgn_direction_layerwise(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    cg_iterations: int,
    implementation: str,
) -> Direction:
    """SGN with the per-layer inputs and cotangents of one pass (:math:`S^\\top Jv`,
    :math:`J^\\top S u` from them)."""
    model, lj, terms, b = layer_pass(
        predict_fn, params, inputs, targets, loss=loss, implementation=implementation
    )
    m = terms.root_residual.shape[1]
    dtype = lj.dtype
    lam = jnp.asarray(regularizer, dtype)
    (gradient,) = lj.vjp((terms.root_residual.astype(dtype) / b)[None])
    # CG runs in one dtype for all leaves (see _sgn_direction_linearized)
    cg_dtype = _cg_dtype(dtype)
    leaf_dtypes = [x.dtype for x in gradient]

    def gn_vector_product(v):
        (jtqjv,) = lj.vjp((lj.jvp(v) / b)[None])
        return [
            x.astype(cg_dtype) + lam.astype(cg_dtype) * y for x, y in zip(jtqjv, v, strict=True)
        ]

    minus_g = [-x.astype(cg_dtype) for x in gradient]
    direction, _ = jax.scipy.sparse.linalg.cg(
        gn_vector_product, minus_g, tol=0.0, atol=0.0, maxiter=cg_iterations
    )
    direction = [x.astype(t) for x, t in zip(direction, leaf_dtypes, strict=True)]
    return Direction(
        direction=unflatten(model, direction),
        loss=jnp.mean(terms.loss),
        slope=_vdot(gradient, direction, dtype),
        root_jd=None,
        batch=b,
        gradient_fn=lambda: unflatten(model, gradient),
        root_jvp=lambda t: lj.jvp(flatten(model, t)),
        gram_scale=jnp.sum(lj.gram_diagonal()) / (b * b * m),
    )


def _cg_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype of the CG iterations: ``dtype``, or float32 for a half-precision one."""
    return jnp.dtype(dtype) if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def sgn(
    predict_fn: PredictFn,
    loss: str = "mse",
    learning_rate: optax.ScalarOrSchedule = 1.0,
    regularizer: ArrayLike = 1e-3,
    *,
    cg_iterations: int = 10,
    implementation: str = "auto",
    line_search: bool = True,
    adaptive_regularization: bool = False,
    momentum: ArrayLike = 0.0,
    armijo_c: ArrayLike = 0.1,
    armijo_decrease: ArrayLike = 0.8,
    armijo_increase: ArrayLike = 1.5,
    armijo_max_trials: int = 15,
    lm_rule: str = "relative",
    lm_floor: ArrayLike = 10.0,
    lm_thresholds: tuple[float, float] = (0.25, 0.75),
    lm_increase: ArrayLike = 1.5,
    lm_decrease: ArrayLike = 0.5,
    lm_bounds: tuple[float, float] = (1e-12, 1e6),
) -> optax.GradientTransformationExtraArgs:
    r"""SGN (Gargiani et al. 2020): Gauss-Newton steps solved by truncated conjugate gradient.

    The direction is :math:`d \approx -(J^\top QJ/b + \lambda I)^{-1} g` after at most
    ``cg_iterations`` CG iterations (matrix-free, never forming :math:`J^\top QJ`); the step,
    line search, momentum and adaptive :math:`\lambda` are those of :func:`inna_jax.egn`.
    Defaults follow the EGN paper's SGN baseline: damping :math:`\lambda = 10^{-3}`, 10 CG
    iterations, Armijo line search on.  The CG iterations run in one dtype for all leaves: the
    model's output dtype, or float32 for a half-precision one; each direction leaf is cast
    back to its parameter's dtype.

    Args:
        predict_fn: ``predict_fn(params, x)`` returning ``(b,)`` or ``(b, C)`` outputs.
        loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"``.
        learning_rate: the step, or the cap of the line search; a float or a schedule.
        regularizer: the damping :math:`\lambda > 0`.
        cg_iterations: the maximum number of CG iterations, :math:`\ge 1`.
        implementation: ``"auto"``, ``"structured"`` or ``"jacobian"`` (the layer pass;
            they differ only in how :func:`inna_jax.ntk_gram` would build the Gram matrix,
            which SGN never forms) or ``"matrix_free"`` (the linearized model; there the
            relative LM floor is 0, since the Gram matrix's trace is not formed).
        line_search: Armijo backtracking on the batch.
        adaptive_regularization: Levenberg-Marquardt update of :math:`\lambda`.
        momentum: :math:`\beta \in [0, 1)`.
        armijo_c: see :func:`inna_jax.egn`.
        armijo_decrease: see :func:`inna_jax.egn`.
        armijo_increase: see :func:`inna_jax.egn`.
        armijo_max_trials: see :func:`inna_jax.egn`.
        lm_rule: see :func:`inna_jax.egn`.
        lm_floor: see :func:`inna_jax.egn`.
        lm_thresholds: see :func:`inna_jax.egn`.
        lm_increase: see :func:`inna_jax.egn`.
        lm_decrease: see :func:`inna_jax.egn`.
        lm_bounds: see :func:`inna_jax.egn`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``, called as
        ``tx.update(grads, state, params, inputs=x, targets=y)``.

    Raises:
        ValueError: for an unknown loss, implementation or ``lm_rule``, or out-of-range
            hyperparameters; a schedule value, a parameter leaf or an empty batch as for
            :func:`inna_jax.egn`.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import inna_jax
        >>> predict = lambda w, x: x @ w
        >>> x, y = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 2.0])
        >>> tx = inna_jax.sgn(predict, "mse", regularizer=1e-6)
        >>> w = jnp.zeros(2)
        >>> state = tx.init(w)
        >>> updates, state = tx.update(None, state, w, inputs=x, targets=y)
        >>> optax.apply_updates(w, updates).round(4)    # CG is exact in 2 iterations here
        Array([1., 1.], dtype=float32)

    References:
        Gargiani, Zanelli, Diehl, Hutter, "On the Promise of the Stochastic Generalized
        Gauss-Newton Method for Training DNNs", arXiv:2006.02409 (2020).
    """
    check_loss(loss)
    if int(cg_iterations) != cg_iterations or cg_iterations < 1:
        raise ValueError(f"cg_iterations must be an integer >= 1, got {cg_iterations!r}")

    check_implementation(implementation, None)

    def direction_fn(params, inputs, targets, lam):
        if implementation == "matrix_free":
            return _sgn_direction_linearized(
                predict_fn,
                params,
                inputs,
                targets,
                lam,
                loss=loss,
                cg_iterations=int(cg_iterations),
            )
        return _sgn_direction_layerwise(
            predict_fn,
            params,
            inputs,
            targets,
            lam,
            loss=loss,
            cg_iterations=int(cg_iterations),
            implementation=implementation,
        )

    settings = StepSettings(
        loss=loss,
        learning_rate=learning_rate,
        regularizer=regularizer,
        line_search=line_search,
        adaptive_regularization=adaptive_regularization,
        momentum=momentum,
        armijo_c=armijo_c,
        armijo_decrease=armijo_decrease,
        armijo_increase=armijo_increase,
        armijo_max_trials=armijo_max_trials,
        lm_rule=lm_rule,
        lm_floor=lm_floor,
        lm_thresholds=lm_thresholds,
        lm_increase=lm_increase,
        lm_decrease=lm_decrease,
        lm_bounds=lm_bounds,
    )
    return gauss_newton_transformation(direction_fn, predict_fn, settings, "sgn")
