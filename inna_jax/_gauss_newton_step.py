r"""The step logic shared by the Gauss-Newton optimizers (EGN and SGN).

Given a direction :math:`d_k` (from a batch-space or a conjugate-gradient solve), one step is:
bias-corrected momentum on the direction, an optional Armijo line search on the batch, and an
optional Levenberg-Marquardt update of the regularizer :math:`\lambda` from the ratio of the
actual to the predicted decrease. Every hyperparameter value may be traced; only the
switches (``line_search``, ``adaptive_regularization``) and the trial count are static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._gauss_newton_losses import as_matrix, loss_terms, mean_loss
from inna_jax._validation import check_nonnegative, check_positive, concrete_float


class GaussNewtonState(NamedTuple):
    r"""State of :func:`inna_jax.egn` and :func:`inna_jax.sgn`.

    The momentum is the moving average :math:`m_k = \beta m_{k-1} + (1-\beta) d_k` of the
    Gauss-Newton directions; the step taken is :math:`\alpha_k m_k / (1 - \beta^k)`.

    Attributes:
        count: number of updates applied so far (int32).
        step_size: the last step :math:`\alpha_k` taken (the line search starts from it).
        regularizer: the :math:`\lambda` of the next solve (moves only when adaptive).
        momentum: the moving average :math:`m_k` of the directions, a pytree like params.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> tx = inna_jax.egn(lambda w, x: x @ w, "mse", learning_rate=0.5, regularizer=2.0)
        >>> state = tx.init(jnp.zeros(3))
        >>> int(state.count), float(state.step_size), float(state.regularizer)
        (0, 0.5, 2.0)

    References:
        Korbit, Adeoye, Bemporad, Zanon, "Exact Gauss-Newton Optimization for Training Deep
        Neural Networks", arXiv:2405.14402 (2024).
    """

    count: jax.Array
    step_size: jax.Array
    regularizer: jax.Array
    momentum: optax.Updates


def _check_open_unit(name: str, value: Any) -> None:
    v = concrete_float(value)
    if v is not None and not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {name}={value!r}")


def check_hyperparameters(
    *,
    learning_rate,
    regularizer,
    momentum,
    armijo_c,
    armijo_decrease,
    armijo_increase,
    armijo_max_trials,
    lm_thresholds,
    lm_increase,
    lm_decrease,
    lm_bounds,
) -> None:
    """Raises ``ValueError`` for a concrete hyperparameter out of its range."""
    if not callable(learning_rate):
        check_positive("learning_rate", learning_rate)
    check_positive("regularizer", regularizer)
    check_nonnegative("momentum", momentum)
    m = concrete_float(momentum)
    if m is not None and not m < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got momentum={momentum!r}")
    _check_open_unit("armijo_c", armijo_c)
    _check_open_unit("armijo_decrease", armijo_decrease)
    inc = concrete_float(armijo_increase)
    if inc is not None and not inc >= 1.0:
        raise ValueError(f"armijo_increase must be >= 1, got armijo_increase={armijo_increase!r}")
    trials = concrete_float(armijo_max_trials)
    if trials is not None and (int(trials) != trials or trials < 1):
        raise ValueError(
            "armijo_max_trials must be an integer >= 1, got "
            f"armijo_max_trials={armijo_max_trials!r}"
        )
    low, high = lm_thresholds
    if not 0.0 <= low <= high:
        raise ValueError(f"lm_thresholds must satisfy 0 <= low <= high, got {lm_thresholds!r}")
    up = concrete_float(lm_increase)
    if up is not None and not up > 1.0:
        raise ValueError(f"lm_increase must be > 1, got lm_increase={lm_increase!r}")
    _check_open_unit("lm_decrease", lm_decrease)
    lo, hi = lm_bounds
    if not 0.0 < lo <= hi:
        raise ValueError(f"lm_bounds must satisfy 0 < min <= max, got {lm_bounds!r}")


def _float_dtype(params: Any) -> jnp.dtype:
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else jnp.float32


def _axpy(alpha: jax.Array, x: Any, y: Any) -> Any:
    """``y + alpha * x`` leaf by leaf, in each leaf of ``y``'s dtype."""
    return jax.tree.map(lambda xi, yi: (yi + alpha * xi).astype(yi.dtype), x, y)


def gauss_newton_transformation(
    direction_fn: Callable[..., Any],
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    *,
    loss: str,
    learning_rate: optax.ScalarOrSchedule,
    regularizer: ArrayLike,
    line_search: bool,
    adaptive_regularization: bool,
    momentum: ArrayLike,
    armijo_c: ArrayLike,
    armijo_decrease: ArrayLike,
    armijo_increase: ArrayLike,
    armijo_max_trials: int,
    lm_thresholds: tuple[float, float],
    lm_increase: ArrayLike,
    lm_decrease: ArrayLike,
    lm_bounds: tuple[float, float],
    name: str,
) -> optax.GradientTransformationExtraArgs:
    """An optax transformation around ``direction_fn(params, inputs, targets, lam)``.

    ``direction_fn`` returns an object with fields ``direction``, ``gradient`` (of the batch
    loss :math:`(1/b)\\sum_i\\ell_i`) and ``loss``. See :func:`inna_jax.egn` for the step.
    """
    check_hyperparameters(
        learning_rate=learning_rate,
        regularizer=regularizer,
        momentum=momentum,
        armijo_c=armijo_c,
        armijo_decrease=armijo_decrease,
        armijo_increase=armijo_increase,
        armijo_max_trials=armijo_max_trials,
        lm_thresholds=lm_thresholds,
        lm_increase=lm_increase,
        lm_decrease=lm_decrease,
        lm_bounds=lm_bounds,
    )
    schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

    def init_fn(params: optax.Params) -> GaussNewtonState:
        dtype = _float_dtype(params)
        return GaussNewtonState(
            count=jnp.zeros([], jnp.int32),
            step_size=jnp.asarray(schedule(0), dtype),
            regularizer=jnp.asarray(regularizer, dtype),
            momentum=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state: GaussNewtonState, params=None, *, inputs=None, targets=None, **_):
        del updates  # the gradient is recomputed with the Gauss-Newton loss convention
        if params is None or inputs is None or targets is None:
            raise ValueError(
                f"{name} needs the parameters and the batch: call "
                "tx.update(grads, state, params, inputs=x, targets=y)"
            )
        dtype = state.step_size.dtype
        lam = state.regularizer if adaptive_regularization else jnp.asarray(regularizer, dtype)
        out = direction_fn(params, inputs, targets, lam)
        loss0 = out.loss.astype(dtype)

        beta = jnp.asarray(momentum, dtype)
        count = optax.safe_int32_increment(state.count)
        new_momentum = jax.tree.map(
            lambda m, d: (beta * m + (1 - beta) * d).astype(m.dtype), state.momentum, out.direction
        )
        correction = 1 - beta ** count.astype(dtype)
        direction = jax.tree.map(lambda m: m / correction.astype(m.dtype), new_momentum)
        slope = optax.tree.vdot(out.gradient, direction).astype(dtype)
        # safeguard: a non-finite direction (or line-search loss) gives no step at all
        finite = jnp.isfinite(slope)
        lr = jnp.asarray(schedule(state.count), dtype)

        def loss_at(alpha):
            return mean_loss(
                *as_matrix(predict_fn(_axpy(alpha, direction, params), inputs), targets, loss),
                loss,
            ).astype(dtype)

        if line_search:
            c = jnp.asarray(armijo_c, dtype)
            shrink = jnp.asarray(armijo_decrease, dtype)
            alpha0 = jnp.minimum(state.step_size * jnp.asarray(armijo_increase, dtype), lr)

            def cond(carry):
                alpha, trials, new_loss = carry
                armijo_fails = ~(new_loss <= loss0 + c * alpha * slope)
                return armijo_fails & (trials < armijo_max_trials)

            def body(carry):
                alpha, trials, _ = carry
                alpha = alpha * shrink
                return alpha, trials + 1, loss_at(alpha)

            alpha, _, new_loss = jax.lax.while_loop(cond, body, (alpha0, 1, loss_at(alpha0)))
            finite = finite & jnp.isfinite(new_loss)
        else:
            alpha = lr
            new_loss = loss_at(alpha) if adaptive_regularization else None

        if adaptive_regularization:
            outputs, jv = jax.jvp(lambda p: predict_fn(p, inputs), (params,), (direction,))
            out2d, tgt = as_matrix(outputs, targets, loss)
            s = loss_terms(out2d, tgt, loss).sqrt_hessian
            sjv = jnp.einsum("iac,ia->ic", s, jv.reshape(out2d.shape))
            curvature = jnp.sum(sjv**2) / out2d.shape[0]  # d^T (J^T Q J / b) d
            predicted = -(alpha * slope + 0.5 * alpha**2 * curvature.astype(dtype))
            actual = loss0 - new_loss
            valid = (predicted > 0) & jnp.isfinite(actual) & finite
            rho = jnp.where(valid, actual / jnp.where(valid, predicted, 1), 0)
            low, high = lm_thresholds
            factor = jnp.where(
                rho < low,
                jnp.asarray(lm_increase, dtype),
                jnp.where(rho > high, jnp.asarray(lm_decrease, dtype), jnp.ones([], dtype)),
            )
            new_lam = jnp.clip(lam * factor, lm_bounds[0], lm_bounds[1]).astype(dtype)
        else:
            new_lam = state.regularizer

        alpha = jnp.where(finite, alpha, jnp.zeros_like(alpha))
        step = jax.tree.map(
            lambda d, p: jnp.where(finite, alpha * d, 0).astype(p.dtype), direction, params
        )
        return step, GaussNewtonState(
            count=count,
            step_size=jnp.where(alpha > 0, alpha, state.step_size).astype(dtype),
            regularizer=new_lam,
            momentum=new_momentum,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
