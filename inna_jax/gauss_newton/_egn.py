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

because :math:`(SS^\top K + \mu I) S = S (S^\top K S + \mu I)` (also for a rectangular
:math:`S`: cross-entropy uses a :math:`C \times (C-1)` root, since :math:`Q` has rank
:math:`C - 1`). The matrix :math:`M = S^\top K S + \mu I` is symmetric positive definite, so
the solve is one Cholesky factorization, and the direction is :math:`d = -J^\top S M^{-1} w`.

By default :math:`S^\top K S` is built layer by layer from one forward pass and one VJP whose
cotangents are the columns of each :math:`S_i` (see :func:`inna_jax.ntk_gram`), and the same
layer inputs and cotangents give :math:`J^\top S v` for the direction (and the gradient when
it is needed): no second backward pass. The slope :math:`g^\top d = -w^\top (S^\top K S) v / b`
and :math:`S^\top J d = -(S^\top K S) v` follow in batch space.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._validation import as_float_arrays, check_positive
from inna_jax.gauss_newton._gram import PredictFn, _gram_matrix_free, check_implementation
from inna_jax.gauss_newton._layerwise_jacobian import flatten, unflatten
from inna_jax.gauss_newton._loss_roots import (
    as_matrix,
    check_loss,
    loss_terms,
)
from inna_jax.gauss_newton._step import (
    Direction,
    GaussNewtonState,
    StepSettings,
    check_batch,
    check_lm_rule,
    gauss_newton_transformation,
    layer_pass,
)

_MAX_JITTER_TRIES = 12


def _cholesky(m: jax.Array) -> jax.Array:
    """Cholesky factor of an SPD ``m``, factored once; a retry only if the factor is not finite.

    The retry adds ``n * eps * max(diag(m))`` to the diagonal, then ten times more each time,
    up to 12 tries, in a ``while_loop`` whose body does not run when the first factor is
    finite (the usual case), also under ``vmap``: a ``lax.cond`` would become a ``select``
    that computes the retry for every lane, and a vmapped ``cond`` holding a second LAPACK
    call hung XLA:CPU (jax 0.10) inside the DQN of ``inna_jax.rl``.
    """
    n = m.shape[0]
    eye = jnp.eye(n, dtype=m.dtype)
    shift0 = n * jnp.finfo(m.dtype).eps * jnp.max(jnp.abs(jnp.diag(m)))

    def factor(shift):
        return jax.lax.linalg.cholesky(m + shift * eye, symmetrize_input=False)

    def cond(carry):
        chol, tries, _ = carry
        return ~jnp.all(jnp.isfinite(jnp.diagonal(chol))) & (tries < _MAX_JITTER_TRIES)

    def body(carry):
        _, tries, shift = carry
        return factor(shift), tries + 1, shift * 10

    # the first factor reads the lower triangle of m unchanged
    chol = jax.lax.linalg.cholesky(m, symmetrize_input=False)
    return jax.lax.while_loop(cond, body, (chol, 0, shift0))[0]


def _solve(gram: jax.Array, mu: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v = (gram + mu I)^{-1} w`` and ``gram @ v`` (vectors of length ``n``).

    The system is solved in at least float32 (LAPACK and cuSOLVER have no bf16/f16 Cholesky,
    and a half-precision factor of an ill-conditioned Gram would be noise); both results are
    returned in ``gram``'s dtype.
    """
    n = gram.shape[0]
    out_dtype = gram.dtype
    dtype = out_dtype if jnp.finfo(out_dtype).bits >= 32 else jnp.dtype(jnp.float32)
    gram, mu, w = gram.astype(dtype), jnp.asarray(mu).astype(dtype), w.astype(dtype)
    m = gram + mu * jnp.eye(n, dtype=dtype)
    chol = _cholesky(m)
    v = jax.scipy.linalg.cho_solve((chol, True), w)
    return v.astype(out_dtype), (gram @ v).astype(out_dtype)


def _direction_layerwise(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    implementation: str,
    chunk_size: int | None,
) -> Direction:
    """EGN from one forward pass and one VJP with the columns of each :math:`S_i`."""
    model, lj, terms, b = layer_pass(
        predict_fn,
        params,
        inputs,
        targets,
        loss=loss,
        implementation=implementation,
        chunk_size=chunk_size,
    )
    m = terms.root_residual.shape[1]
    dtype = lj.dtype
    w = terms.root_residual.reshape(-1).astype(dtype)
    mu = b * jnp.asarray(regularizer, dtype)
    gram = lj.gram()
    v, kv = _solve(gram, mu, w)
    (direction,) = lj.vjp(-v.reshape(1, b, m))

    def gradient_fn():
        (g,) = lj.vjp((w / b).reshape(1, b, m))
        return unflatten(model, g)

    return Direction(
        direction=unflatten(model, direction),
        loss=jnp.mean(terms.loss),
        slope=-jnp.vdot(w, kv) / b,
        root_jd=-kv.reshape(b, m),
        batch=b,
        gradient_fn=gradient_fn,
        root_jvp=lambda t: lj.jvp(flatten(model, t)),
        gram_scale=jnp.trace(gram) / (b * b * m),
    )


def _direction_matrix_free(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    chunk_size: int | None,
) -> Direction:
    """EGN with the matrix-free Gram matrix (column by column, a VJP and a JVP each)."""
    outputs, vjp_fn = jax.vjp(lambda p: predict_fn(p, inputs), params)
    out2d, tgt = as_matrix(outputs, targets, loss)
    terms = loss_terms(out2d, tgt, loss)
    s, w = terms.sqrt_hessian, terms.root_residual
    b, c = out2d.shape
    m = w.shape[1]
    dtype = out2d.dtype
    gram = _gram_matrix_free(predict_fn, params, inputs, chunk_size).astype(dtype)
    if loss == "mse":  # S = I
        sks = gram
    else:
        sks = jnp.einsum("iak,iaje,jel->ikjl", s, gram.reshape(b, c, b, c), s)
        sks = 0.5 * (sks.reshape(b * m, b * m) + sks.reshape(b * m, b * m).T)
    mu = b * jnp.asarray(regularizer, dtype)
    v, kv = _solve(sks, mu, w.reshape(-1))
    z = jnp.einsum("iak,ik->ia", s, v.reshape(b, m))
    (direction,) = vjp_fn((-z).reshape(outputs.shape))

    def gradient_fn():
        (g,) = vjp_fn((terms.residual / b).reshape(outputs.shape))
        return g

    def root_jvp(t):
        _, jt = jax.jvp(lambda p: predict_fn(p, inputs), (params,), (t,))
        return jnp.einsum("iak,ia->ik", s, jt.reshape(b, c))

    return Direction(
        direction=direction,
        loss=jnp.mean(terms.loss),
        slope=-jnp.vdot(w.reshape(-1), kv) / b,
        root_jd=-kv.reshape(b, m),
        batch=b,
        gradient_fn=gradient_fn,
        root_jvp=root_jvp,
        gram_scale=jnp.trace(sks) / (b * b * m),
    )


def _direction(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    regularizer: ArrayLike,
    *,
    loss: str,
    implementation: str = "auto",
    chunk_size: int | None = None,
) -> Direction:
    """The EGN direction and the batch quantities the step reuses (no argument checks)."""
    if implementation == "matrix_free":
        return _direction_matrix_free(
            predict_fn, params, inputs, targets, regularizer, loss=loss, chunk_size=chunk_size
        )
    return _direction_layerwise(
        predict_fn,
        params,
        inputs,
        targets,
        regularizer,
        loss=loss,
        implementation=implementation,
        chunk_size=chunk_size,
    )


def egn_direction(
    predict_fn: PredictFn,
    params: Any,
    inputs: jax.Array,
    targets: jax.Array,
    *,
    loss: str = "mse",
    regularizer: ArrayLike = 1.0,
    implementation: str = "auto",
    chunk_size: int | None = None,
) -> Any:
    r"""The regularized Gauss-Newton direction :math:`d = -(J^\top Q J/b + \lambda I)^{-1} g`.

    It is computed in batch space, :math:`d = -J^\top S (S^\top K S + b\lambda I)^{-1} w`,
    with :math:`K = JJ^\top` (:func:`inna_jax.ntk_gram`), :math:`Q = SS^\top` the loss Hessian
    in the outputs and :math:`Sw = r'` its gradient (see the module docstring). The system has
    size :math:`bm`, not :math:`P` (:math:`m = C`, or :math:`C - 1` for cross-entropy, whose
    Hessian has rank :math:`C - 1`), and is solved by one Cholesky factorization.

    With the default layer-wise implementations, one forward pass and one VJP whose cotangents
    are the columns of each example's :math:`S_i` give every layer's input :math:`A` and
    output cotangents :math:`\Delta`; they yield :math:`S^\top K S` directly (see
    :func:`inna_jax.ntk_gram`), and then the direction
    :math:`J^\top S v = \sum_l A_l^\top (\sum_k v_k \Delta_{l,k})` with no second backward
    pass.

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
        implementation: ``"auto"``, ``"structured"``, ``"jacobian"`` or ``"matrix_free"``
            (see :func:`inna_jax.ntk_gram`).
        chunk_size: examples per chunk of the layer-wise pass, or columns per chunk of the
            matrix-free Gram matrix.

    Returns:
        The direction :math:`d`, a pytree like ``params``.

    Raises:
        ValueError: for an unknown loss or implementation, an empty batch (no example in
            ``inputs`` or ``targets``), outputs that do not match the targets, float or
            (concrete) out-of-range cross-entropy labels, a concrete :math:`\lambda \le 0`,
            or a parameter leaf that is not floating point.

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
    check_implementation(implementation, chunk_size)
    params = as_float_arrays(params, "params", "egn_direction")
    check_batch(inputs, targets)
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
    implementation: str = "auto",
    chunk_size: int | None = None,
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
    at most 15 trials (the last trial is taken if none passes).

    **Non-finite batches.** A batch whose loss or direction is not finite (a NaN in the
    inputs, an overflow) gives a zero update and leaves the whole state as it was (count,
    step size, :math:`\lambda`, momentum): the next finite batch goes on as if the bad one had
    not been seen. A line search that ends on a non-finite loss gives a zero step too, and
    counts as :math:`\rho = 0` below.

    **Levenberg-Marquardt** (``adaptive_regularization=True``). The ratio
    :math:`\rho_k = (L(\theta) - L(\theta + s)) / (-g^\top s - \tfrac12 s^\top J^\top Q J s / b)`
    of the actual to the predicted decrease of the step :math:`s = \alpha\hat m` (a
    non-positive prediction counts as :math:`\rho = 0`) sets the :math:`\lambda` of the next
    solve, multiplied by ``lm_increase`` = 1.5 when :math:`\rho < 0.25` and by
    ``lm_decrease`` = 0.5 when :math:`\rho > 0.75`. The default ``lm_rule="relative"`` keeps it
    above a floor set by the batch's curvature and the step cap:

    .. math::

        \lambda_{k+1} = \operatorname{clip}\big(f(\rho_k)\,\lambda_k,\;
        \max(\lambda_{min},\, \kappa\,\eta_k\,\nu_k),\; \lambda_{max}\big), \qquad
        \nu_k = \frac{\operatorname{tr}(S^\top K S)}{b \cdot bm},

    with :math:`\kappa` = ``lm_floor`` (10), :math:`\eta_k` = ``learning_rate`` at step
    :math:`k` (the line search's cap) and :math:`\nu_k` the mean eigenvalue of
    :math:`J^\top QJ/b` on its range. In a direction of curvature well below
    :math:`\lambda` the step is about :math:`-(\alpha/\lambda) g` with
    :math:`\alpha \le \eta`, so the floor keeps it within :math:`1/\kappa` of the Newton step
    at the batch's mean curvature, :math:`-g/\nu`, whatever the step cap; above the floor
    :math:`\lambda` adapts freely. ``lm_rule="reference"`` is the rule of the reference code
    (clip to ``lm_bounds`` only): on minibatches the ratio measured on the step's own batch is
    nearly always good, :math:`\lambda` falls to :math:`10^{-12}` and each step fits its batch
    exactly; on digits and mnist1d (MLP 32-64-32, batch 32) it ends at 10-20% test accuracy,
    where the relative rule matches fixed-:math:`\lambda` EGN (docs/reproducing.md, "EGN against
    SGN, SGD and Adam").

    **Cost.** With ``momentum=0`` given as a Python number, the slope :math:`g^\top d` and the
    curvature :math:`\|S^\top J d\|^2/b` of the line search and of the LM rule come from the
    batch-space solve (:math:`S^\top J d = -S^\top K S\,v`), and the gradient is never formed;
    with momentum they need the gradient and a :math:`Jv` (from the same layer inputs and
    cotangents). On CPU, keep LAPACK single-threaded (``OPENBLAS_NUM_THREADS=1`` before
    starting Python): OpenBLAS's threaded Cholesky spins on systems of size >= 256.

    **Data parallelism.** Under ``jax.jit`` with the batch split over a mesh axis and the
    parameters replicated (``inna_jax.train.fit(..., mesh=data_mesh(n))``, which always passes
    ``inputs=`` and ``targets=`` to ``update``), each device runs the forward pass and the VJP
    of its examples, and the result equals one device's up to the order of additions. The
    "Costs" section of docs/guides/egn.md has both in detail (what XLA communicates, the
    threaded Cholesky's timings and how to limit its threads from Python).

    ``learning_rate``, ``regularizer``, ``momentum``, ``lm_floor`` and the Armijo and LM
    factors may be traced: with ``optax.inject_hyperparams(inna_jax.egn,
    static_args=("predict_fn", "loss", "line_search", "adaptive_regularization",
    "armijo_max_trials"))`` they become state (a traced momentum takes the general path).

    The loss on which EGN works is :math:`(1/b)\sum_i \ell_i`, with :math:`\ell` as in
    :func:`egn_direction` (``mse`` is half the squared error); the ``grads`` given to
    ``update`` are not used, since EGN computes the gradient with its own loss.
    Cross-entropy targets are integer labels in :math:`[0, C)` (checked when they are
    concrete; inside ``jit`` an out-of-range label makes the batch loss NaN, so the step is
    skipped as above) or probability rows.

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
        implementation: how :math:`S^\top K S` is built: ``"auto"`` (per layer, see
            :func:`inna_jax.ntk_plan`), ``"structured"``, ``"jacobian"`` or
            ``"matrix_free"`` (see :func:`inna_jax.ntk_gram`).
        chunk_size: examples per chunk of the layer-wise pass, or columns per chunk of the
            matrix-free Gram matrix.
        armijo_c: sufficient-decrease constant :math:`c \in (0, 1)`.
        armijo_decrease: backtracking factor in (0, 1).
        armijo_increase: factor :math:`\ge 1` on the previous step to start the next search.
        armijo_max_trials: loss evaluations per search, :math:`\ge 1`.
        lm_rule: ``"relative"`` (the floor above) or ``"reference"`` (``lm_bounds`` only).
        lm_floor: :math:`\kappa \ge 0` of the relative floor.
        lm_thresholds: :math:`(\rho_{low}, \rho_{high})`.
        lm_increase: factor :math:`> 1` on :math:`\lambda` when :math:`\rho < \rho_{low}`.
        lm_decrease: factor in (0, 1) on :math:`\lambda` when :math:`\rho > \rho_{high}`.
        lm_bounds: :math:`(\lambda_{min}, \lambda_{max})`.

    Returns:
        An ``optax.GradientTransformationExtraArgs``, called as
        ``tx.update(grads, state, params, inputs=x, targets=y)``; its state is a
        :class:`inna_jax.GaussNewtonState`.

    Raises:
        ValueError: for an unknown loss, implementation or ``lm_rule`` and for
            hyperparameters out of range (``regularizer <= 0`` among them); a schedule value
            that is not finite and > 0, checked at ``init`` (step 0) and at each ``update``
            outside ``jit`` (inside ``jit`` it is traced and cannot be checked); a parameter
            leaf that is not floating point, named by its path (Python floats are taken as
            JAX's default float dtype, as in optax); at ``update``, an empty batch (no
            example in ``inputs`` or ``targets``), outputs that do not match the targets,
            and bad labels.

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
        Neural Networks", arXiv:2405.14402 (2024), Sections 3-4; reference code: the "somax"
        package.
        Nocedal, Wright, "Numerical Optimization", 2nd ed., Section 10.3 (Levenberg-Marquardt).
    """
    check_loss(loss)
    check_positive("regularizer", regularizer)
    check_implementation(implementation, chunk_size)
    check_lm_rule(lm_rule)

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
    return gauss_newton_transformation(direction_fn, predict_fn, settings, "egn")


__all__ = ["GaussNewtonState", "egn", "egn_direction"]
