r"""EGN: the exact Gauss-Newton direction, solved in batch space, and its optax optimizer.

With :math:`L(\theta) = (1/b)\sum_i \ell(f(x_i, \theta), y_i)`, the Jacobian :math:`J`
(:math:`bC \times P`), the block-diagonal loss Hessian :math:`Q = SS^\top` and the output
gradient :math:`r'`, so that :math:`g = (1/b) J^\top r'`, the regularized Gauss-Newton direction

.. math::

    d = -\Big(\tfrac1b J^\top Q J + \lambda I\Big)^{-1} g
      = -J^\top (Q J J^\top + b\lambda I)^{-1} r'

needs only a :math:`bC \times bC` solve (Duncan-Guttman / Woodbury identity). With
:math:`K = JJ^\top`, :math:`\mu = b\lambda` and :math:`r' = S w`,

.. math::

    (SS^\top K + \mu I)^{-1} S w = S (S^\top K S + \mu I)^{-1} w ,

because :math:`(SS^\top K + \mu I) S = S (S^\top K S + \mu I)`. The matrix
:math:`M = S^\top K S + \mu I` is symmetric positive definite, so the solve is one Cholesky
factorization, and the direction is :math:`d = -J^\top S M^{-1} w`, one VJP.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._gauss_newton_losses import as_matrix, check_loss, loss_terms
from inna_jax._gauss_newton_step import GaussNewtonState, gauss_newton_transformation
from inna_jax._ntk import IMPLEMENTATIONS, PredictFn, ntk_gram
from inna_jax._validation import check_positive

_MAX_JITTER_TRIES = 12


class Direction(NamedTuple):
    """A Gauss-Newton direction and what the step logic reuses."""

    direction: Any  # d, a pytree like params
    gradient: Any  # g = (1/b) J^T r'
    loss: jax.Array  # L(theta) on the batch


def _cholesky_with_jitter(m: jax.Array) -> jax.Array:
    """Cholesky factor of an SPD ``m``; if rounding makes it fail, retry with a growing shift.

    The first retry adds ``n * eps * max(diag(m))`` to the diagonal, then ten times more each
    time, up to 12 tries. Exactly SPD systems (the usual case) are factored unchanged.
    """
    n = m.shape[0]
    eye = jnp.eye(n, dtype=m.dtype)
    shift0 = n * jnp.finfo(m.dtype).eps * jnp.max(jnp.abs(jnp.diag(m)))

    def failed(chol):
        return ~jnp.all(jnp.isfinite(chol))

    def cond(carry):
        chol, tries, _ = carry
        return failed(chol) & (tries < _MAX_JITTER_TRIES)

    def body(carry):
        _, tries, shift = carry
        return jnp.linalg.cholesky(m + shift * eye), tries + 1, shift * 10

    chol, _, _ = jax.lax.while_loop(cond, body, (jnp.linalg.cholesky(m), 0, shift0))
    return chol


def _batch_solve(gram: jax.Array, terms, mu: jax.Array, loss: str) -> jax.Array:
    """``z = (Q K + mu I)^{-1} r'`` as ``S (S^T K S + mu I)^{-1} w``, shape ``(b, C)``."""
    s, w = terms.sqrt_hessian, terms.root_residual
    b, c = w.shape
    if loss == "mse":  # S = I
        skS = gram
    else:
        k4 = gram.reshape(b, c, b, c)
        skS = jnp.einsum("iac,iaje,jed->icjd", s, k4, s).reshape(b * c, b * c)
        skS = 0.5 * (skS + skS.T)
    m = skS + mu * jnp.eye(b * c, dtype=skS.dtype)
    chol = _cholesky_with_jitter(m)
    v = jax.scipy.linalg.cho_solve((chol, True), w.reshape(-1)).reshape(b, c)
    return v if loss == "mse" else jnp.einsum("iac,ic->ia", s, v)


def _direction(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    implementation: str = "jacobian",
    chunk_size: int | None = None,
) -> Direction:
    """The EGN direction, the gradient and the batch loss (no argument checks)."""
    outputs, vjp_fn = jax.vjp(lambda p: predict_fn(p, inputs), params)
    out2d, tgt = as_matrix(outputs, targets, loss)
    terms = loss_terms(out2d, tgt, loss)
    b = out2d.shape[0]
    dtype = out2d.dtype
    gram = ntk_gram(
        predict_fn, params, inputs, implementation=implementation, chunk_size=chunk_size
    )
    mu = b * jnp.asarray(regularizer, dtype)
    z = _batch_solve(gram.astype(dtype), terms, mu, loss)
    cotangents = jnp.stack([-z, terms.residual / b]).reshape((2, *outputs.shape))
    (pair,) = jax.vmap(vjp_fn)(cotangents)
    direction = jax.tree.map(lambda x: x[0], pair)
    gradient = jax.tree.map(lambda x: x[1], pair)
    return Direction(direction, gradient, jnp.mean(terms.loss))


def egn_direction(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    *,
    loss: str = "mse",
    regularizer: ArrayLike = 1.0,
    implementation: str = "jacobian",
    chunk_size: int | None = None,
) -> Any:
    r"""The regularized Gauss-Newton direction :math:`d = -(J^\top Q J/b + \lambda I)^{-1} g`.

    It is computed in batch space, :math:`d = -J^\top S (S^\top K S + b\lambda I)^{-1} w`,
    with :math:`K = JJ^\top` (:func:`inna_jax.ntk_gram`), :math:`Q = SS^\top` the loss Hessian
    in the outputs and :math:`Sw = r'` its gradient (see the module docstring). The system has
    size :math:`bC`, not :math:`P`, and is solved by Cholesky.

    Degenerate batches: when examples repeat, or :math:`P < bC`, :math:`K` is singular, but
    :math:`M = S^\top K S + b\lambda I` stays positive definite for every :math:`\lambda > 0`
    and the direction is the same as the parameter-space one (repeated examples simply
    count twice in :math:`J^\top QJ` and :math:`g`). When :math:`b\lambda` is below the
    rounding level of :math:`S^\top K S` (about ``eps * ||K||``), Cholesky can fail; it is
    then retried with a diagonal shift of ``bC * eps * max(diag(M))``, grown tenfold per try.
    The direction stays finite and is that of a slightly larger :math:`\lambda`.

    Args:
        predict_fn: ``predict_fn(params, x)`` returning outputs of shape ``(b,)`` or ``(b, C)``.
        params: a pytree of arrays.
        inputs: a batch of ``b`` inputs.
        targets: ``mse``: same shape as the outputs (``(b,)`` also for outputs ``(b, 1)``);
            ``cross_entropy``: integer labels ``(b,)`` or probabilities ``(b, C)``;
            ``binary_cross_entropy``: ``b`` values in [0, 1].
        loss: ``"mse"`` (:math:`\tfrac12\|f-y\|^2` per example), ``"cross_entropy"``
            (softmax over ``C >= 2`` logits) or ``"binary_cross_entropy"`` (one logit).
        regularizer: :math:`\lambda > 0`.
        implementation: how :math:`K` is built, ``"jacobian"`` or ``"matrix_free"``
            (see :func:`inna_jax.ntk_gram`).
        chunk_size: columns per chunk of the matrix-free NTK.

    Returns:
        The direction :math:`d`, a pytree like ``params``.

    Raises:
        ValueError: for an unknown loss, outputs that do not match the targets, or a
            concrete :math:`\lambda \le 0`.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> predict = lambda w, x: x @ w
        >>> x, y = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 2.0])
        >>> d = inna_jax.egn_direction(predict, jnp.zeros(2), x, y, loss="mse", regularizer=1e-6)
        >>> d.round(4)        # the Newton step of the quadratic: to the solution [1, 1]
        Array([1., 1.], dtype=float32)

    References:
        Korbit, Adeoye, Bemporad, Zanon, "Exact Gauss-Newton Optimization for Training Deep
        Neural Networks", arXiv:2405.14402 (2024).
    """
    check_loss(loss)
    check_positive("regularizer", regularizer)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {implementation!r}; expected one of "
            f"{', '.join(map(repr, IMPLEMENTATIONS))}"
        )
    return _direction(
        predict_fn,
        params,
        inputs,
        targets,
        regularizer,
        loss=loss,
        implementation=implementation,
        chunk_size=chunk_size,
    ).direction


def egn(
    predict_fn: PredictFn,
    loss: str = "mse",
    learning_rate: optax.ScalarOrSchedule = 1.0,
    regularizer: ArrayLike = 1.0,
    *,
    line_search: bool = False,
    adaptive_regularization: bool = False,
    momentum: ArrayLike = 0.0,
    implementation: str = "jacobian",
    chunk_size: int | None = None,
    armijo_c: ArrayLike = 0.1,
    armijo_decrease: ArrayLike = 0.8,
    armijo_increase: ArrayLike = 1.5,
    armijo_max_trials: int = 15,
    lm_thresholds: tuple[float, float] = (0.25, 0.75),
    lm_increase: ArrayLike = 1.5,
    lm_decrease: ArrayLike = 0.5,
    lm_bounds: tuple[float, float] = (1e-12, 1e6),
) -> optax.GradientTransformationExtraArgs:
    r"""The EGN optimizer: exact Gauss-Newton steps solved in batch space.

    Each step computes the direction :math:`d_k` of :func:`egn_direction` on the batch, then

    .. math::

        m_k = \beta m_{k-1} + (1-\beta) d_k, \qquad
        \hat m_k = m_k / (1 - \beta^{k+1}), \qquad
        \theta_{k+1} = \theta_k + \alpha_k \hat m_k .

    The step :math:`\alpha_k` is ``learning_rate``, or with ``line_search=True`` the Armijo
    backtracking step on the same batch: start from
    :math:`\min(1.5\,\alpha_{k-1}, \text{learning\_rate})` and multiply by 0.8 until
    :math:`L(\theta + \alpha \hat m) \le L(\theta) + c\,\alpha\, g^\top \hat m` (:math:`c = 0.1`),
    at most 15 trials (the last trial is taken if none passes). A non-finite direction, or a
    search that ends on a non-finite loss, gives a zero step (the LM rule then raises
    :math:`\lambda`). With
    ``adaptive_regularization=True`` (Levenberg-Marquardt), the ratio
    :math:`\rho = (L(\theta) - L(\theta + s)) / (-g^\top s - \tfrac12 s^\top J^\top Q J s / b)`
    of the actual to the predicted decrease of the step :math:`s = \alpha\hat m` sets the
    :math:`\lambda` of the next solve: :math:`\rho < 0.25` (poor model) multiplies it by
    ``lm_increase`` = 1.5 (more damping), :math:`\rho > 0.75` (good model) by ``lm_decrease``
    = 0.5 (less damping), then it is clipped to ``lm_bounds``. A non-positive predicted
    decrease, or a non-finite actual one, counts as :math:`\rho = 0`.

    ``learning_rate``, ``regularizer``, ``momentum`` and the Armijo and LM factors may be
    traced: with ``optax.inject_hyperparams(inna_jax.egn, static_args=("predict_fn", "loss",
    "line_search", "adaptive_regularization", "armijo_max_trials"))`` they become state. On
    CPU, keep LAPACK single-threaded (``threadpoolctl.threadpool_limits(1, "blas")``) when
    the machine is busy: OpenBLAS's threaded Cholesky for systems of size >= 256 can spin for
    hundreds of milliseconds.

    The loss on which EGN works is :math:`(1/b)\sum_i \ell_i`, with :math:`\ell` as in
    :func:`egn_direction` (``mse`` is half the squared error); the ``grads`` given to
    ``update`` are not used, since EGN computes the gradient with its own loss.

    Args:
        predict_fn: ``predict_fn(params, x)`` returning ``(b,)`` or ``(b, C)`` outputs. For a
            Flax NNX model: ``graphdef, params = nnx.split(model, nnx.Param)`` and
            ``predict_fn = lambda p, x: nnx.merge(graphdef, p)(x)``.
        loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"``.
        learning_rate: the step, or the cap of the line search; a float or an optax schedule.
        regularizer: :math:`\lambda > 0`, the initial one when adaptive.
        line_search: Armijo backtracking on the batch (a ``lax.while_loop``).
        adaptive_regularization: Levenberg-Marquardt update of :math:`\lambda`.
        momentum: :math:`\beta \in [0, 1)`, bias-corrected moving average of the direction.
        implementation: ``"jacobian"`` or ``"matrix_free"`` NTK (see :func:`inna_jax.ntk_gram`).
        chunk_size: columns per chunk of the matrix-free NTK.
        armijo_c: sufficient-decrease constant :math:`c \in (0, 1)`.
        armijo_decrease: backtracking factor in (0, 1).
        armijo_increase: factor :math:`\ge 1` on the previous step to start the next search.
        armijo_max_trials: loss evaluations per search, :math:`\ge 1`.
        lm_thresholds: :math:`(\rho_{low}, \rho_{high})`.
        lm_increase: factor :math:`> 1` on :math:`\lambda` when :math:`\rho < \rho_{low}`.
        lm_decrease: factor in (0, 1) on :math:`\lambda` when :math:`\rho > \rho_{high}`.
        lm_bounds: :math:`(\lambda_{min}, \lambda_{max})`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``, called as
        ``tx.update(grads, state, params, inputs=x, targets=y)``; its state is a
        :class:`inna_jax.GaussNewtonState`.

    Raises:
        ValueError: for an unknown loss or implementation and for hyperparameters out of
            range (``regularizer <= 0`` among them); outputs that do not match the targets
            raise at the first ``update``.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> import inna_jax
        >>> predict = lambda w, x: jnp.tanh(x @ w)
        >>> x = jnp.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])
        >>> y = jnp.tanh(x @ jnp.array([0.5, -0.3]))
        >>> tx = inna_jax.egn(predict, "mse", learning_rate=1.0, regularizer=1e-3)
        >>> w = jnp.zeros(2)
        >>> state = tx.init(w)
        >>> for _ in range(5):
        ...     updates, state = tx.update(None, state, w, inputs=x, targets=y)
        ...     w = optax.apply_updates(w, updates)
        >>> w.round(3)
        Array([ 0.5, -0.3], dtype=float32)

    References:
        Korbit, Adeoye, Bemporad, Zanon, "Exact Gauss-Newton Optimization for Training Deep
        Neural Networks", arXiv:2405.14402 (2024); reference code: the "somax" package.
    """
    check_loss(loss)
    check_positive("regularizer", regularizer)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {implementation!r}; expected one of "
            f"{', '.join(map(repr, IMPLEMENTATIONS))}"
        )

    def direction_fn(params, inputs, targets, lam):
        return _direction(
            predict_fn,
            params,
            inputs,
            targets,
            lam,
            loss=loss,
            implementation=implementation,
            chunk_size=chunk_size,
        )

    return gauss_newton_transformation(
        direction_fn,
        predict_fn,
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
        lm_thresholds=lm_thresholds,
        lm_increase=lm_increase,
        lm_decrease=lm_decrease,
        lm_bounds=lm_bounds,
        name="egn",
    )


__all__ = ["GaussNewtonState", "egn", "egn_direction"]
