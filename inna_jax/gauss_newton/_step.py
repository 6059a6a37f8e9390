r"""The step logic shared by the Gauss-Newton optimizers (EGN and SGN).

Given a direction :math:`d_k` (from a batch-space or a conjugate-gradient solve), one step is:
bias-corrected momentum on the direction, an optional Armijo line search on the batch, and an
optional Levenberg-Marquardt update of the regularizer :math:`\lambda` from the ratio of the
actual to the predicted decrease. A batch whose loss or direction is not finite changes
nothing. Every hyperparameter value may be traced; only the switches (``line_search``,
``adaptive_regularization``, ``lm_rule``) and the trial count are static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._validation import (
    as_float_arrays,
    check_nonnegative,
    check_positive,
    check_schedule_value,
    concrete_float,
)
from inna_jax.gauss_newton._find_layers import ModelLayers, find_layers
from inna_jax.gauss_newton._layerwise_jacobian import LayerwiseJacobian, layerwise_jacobian
from inna_jax.gauss_newton._loss_roots import (
    LossTerms,
    as_matrix,
    hessian_root,
    loss_terms,
    mean_loss,
)

LM_RULES = ("relative", "reference")


class LayerPass(NamedTuple):
    """One layer pass of a batch with the loss-Hessian-root cotangents (see :func:`layer_pass`).

    Attributes:
        model: the layers found in the traced model.
        jacobian: inputs and cotangents of each layer (the Gram matrix, :math:`S^\\top Jv`,
            :math:`J^\\top S u`).
        terms: the loss terms at the batch outputs (residual in the root's columns).
        batch: the batch size ``b``.
    """

    model: ModelLayers
    jacobian: LayerwiseJacobian
    terms: LossTerms
    batch: int


def layer_pass(
    predict_fn: Callable,
    params: Any,
    inputs: Any,
    targets: jax.Array,
    *,
    loss: str,
    implementation: str,
    chunk_size: int | None = None,
) -> LayerPass:
    """One forward pass and one VJP whose cotangents are the columns of each example's
    loss-Hessian root :math:`S_i` (rank :math:`C - 1` for cross-entropy, where
    :math:`S_i^\\top \\sqrt{p_i} = 0`), and the loss terms at the outputs: what EGN and SGN
    share. Shapes and concrete labels are checked before the pass."""
    model = find_layers(predict_fn, params, inputs)
    reduced = loss == "cross_entropy" and model.num_outputs >= 2
    b = jax.tree.leaves(inputs)[0].shape[0]
    as_matrix(jnp.zeros((b, *model.output_shape), model.output_dtype), targets, loss)

    def columns_fn(out):
        return hessian_root(out[None, :], loss, reduced=reduced)[0]

    lj = layerwise_jacobian(
        predict_fn,
        params,
        inputs,
        columns_fn,
        implementation=implementation,
        chunk_size=chunk_size,
        model=model,
    )
    out2d, tgt = as_matrix(lj.outputs, targets, loss)
    return LayerPass(model, lj, loss_terms(out2d, tgt, loss, reduced=reduced), b)


@dataclasses.dataclass(eq=False)
class Direction:
    """A Gauss-Newton direction and what the step logic reuses (lives inside one trace).

    Attributes:
        direction: :math:`d`, a pytree like params.
        loss: :math:`L(\\theta)` on the batch.
        slope: :math:`g^\\top d`.
        root_jd: :math:`S^\\top J d`, ``(b, m)``, or ``None`` if not known.
        batch: :math:`b`.
        gradient_fn: returns :math:`g = (1/b) J^\\top r'` (a pytree), computed on demand.
        root_jvp: :math:`v \\mapsto S^\\top J v` (``(b, m)``).
        gram_scale: the mean eigenvalue :math:`\\operatorname{tr}(S^\\top K S)/(b\\,bm)` of
            :math:`J^\\top QJ/b` on its range (the scale of the curvature).
    """

    direction: Any
    loss: jax.Array
    slope: jax.Array
    root_jd: jax.Array | None
    batch: int
    gradient_fn: Callable[[], Any]
    root_jvp: Callable[[Any], jax.Array]
    gram_scale: jax.Array


class GaussNewtonState(NamedTuple):
    r"""State of :func:`inna_jax.egn` and :func:`inna_jax.sgn`.

    The momentum is the moving average :math:`m_k = \beta m_{k-1} + (1-\beta) d_k` of the
    Gauss-Newton directions; the step taken is :math:`\alpha_k m_k / (1 - \beta^k)`.

    A batch whose loss or direction is not finite leaves every field as it was.

    Attributes:
        count: number of batches with a finite direction so far (int32); it indexes the
            learning-rate schedule and the bias correction.
        step_size: the last step :math:`\alpha_k` taken (the line search starts from it).
        regularizer: the :math:`\lambda` of the next solve (moves only when adaptive).
        momentum: the moving average :math:`m_k` of the directions, a pytree like params
            (stays zero when ``momentum=0`` is given as a Python number).

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
    learning_rate: optax.ScalarOrSchedule,
    regularizer: ArrayLike,
    momentum: ArrayLike,
    armijo_c: ArrayLike,
    armijo_decrease: ArrayLike,
    armijo_increase: ArrayLike,
    armijo_max_trials: int,
    lm_thresholds: tuple[float, float],
    lm_increase: ArrayLike,
    lm_decrease: ArrayLike,
    lm_bounds: tuple[float, float],
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


def check_batch(inputs: Any, targets: Any) -> None:
    """Raises ``ValueError`` for an empty batch (no examples in ``inputs`` or ``targets``)."""
    for label, tree in (("inputs", inputs), ("targets", targets)):
        leaves = jax.tree.leaves(tree)
        shape = tuple(jnp.shape(leaves[0])) if leaves else None
        if not shape or shape[0] == 0:
            got = "no array" if shape is None else f"an array of shape {shape}"
            raise ValueError(
                f"{label} must hold a batch of at least one example (a leading axis of "
                f"length >= 1), got {got}"
            )


def check_lm_rule(lm_rule: str) -> None:
    """Raises ``ValueError`` unless ``lm_rule`` is one of :data:`LM_RULES`."""
    if lm_rule not in LM_RULES:
        raise ValueError(
            f"unknown lm_rule {lm_rule!r}; expected one of {', '.join(map(repr, LM_RULES))}"
        )


def _float_dtype(params: Any) -> jnp.dtype:
    """The dtype of the step size and regularizer: the floats of ``params`` promoted (the
    standard promotion, also under strict dtype promotion: bf16 and f32 give f32)."""
    dtypes = [x.dtype for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]
    if not dtypes:
        return jnp.dtype(jnp.float32)
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.result_type(*dtypes))


def _vdot(x: Any, y: Any, dtype: Any) -> jax.Array:
    """``sum(x * y)`` over the leaves, accumulated in ``dtype``."""
    parts = [
        jnp.vdot(a.astype(dtype), b.astype(dtype))
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
    ]
    return sum(parts, jnp.zeros([], dtype))


def _axpy(alpha: jax.Array, x: Any, y: Any) -> Any:
    """``y + alpha * x`` leaf by leaf, in each leaf of ``y``'s dtype."""
    return jax.tree.map(lambda xi, yi: yi + alpha.astype(yi.dtype) * xi.astype(yi.dtype), x, y)


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The hyperparameters of a Gauss-Newton step (see :func:`inna_jax.egn`), checked once."""

    loss: str
    learning_rate: optax.ScalarOrSchedule
    regularizer: ArrayLike
    line_search: bool
    adaptive_regularization: bool
    momentum: ArrayLike
    armijo_c: ArrayLike
    armijo_decrease: ArrayLike
    armijo_increase: ArrayLike
    armijo_max_trials: int
    lm_rule: str
    lm_floor: ArrayLike
    lm_thresholds: tuple[float, float]
    lm_increase: ArrayLike
    lm_decrease: ArrayLike
    lm_bounds: tuple[float, float]

    def __post_init__(self) -> None:
        check_hyperparameters(
            learning_rate=self.learning_rate,
            regularizer=self.regularizer,
            momentum=self.momentum,
            armijo_c=self.armijo_c,
            armijo_decrease=self.armijo_decrease,
            armijo_increase=self.armijo_increase,
            armijo_max_trials=self.armijo_max_trials,
            lm_thresholds=self.lm_thresholds,
            lm_increase=self.lm_increase,
            lm_decrease=self.lm_decrease,
            lm_bounds=self.lm_bounds,
        )
        check_lm_rule(self.lm_rule)
        check_nonnegative("lm_floor", self.lm_floor)

    @property
    def plain(self) -> bool:
        """``momentum = 0`` known in Python: the direction is d_k itself, and the slope and
        curvature of the step come from the batch-space solve (no pass over the parameters)."""
        return concrete_float(self.momentum) == 0.0

    def rate_at(self, count: Any) -> Any:
        """The learning rate (the line search's cap) at step ``count``."""
        schedule = self.learning_rate
        # optax's schedules mix the int32 count with floats, which strict promotion refuses
        with jax.numpy_dtype_promotion("standard"):
            value = schedule(count) if callable(schedule) else schedule
        if callable(schedule):
            check_schedule_value("learning_rate", value, count, positive=True)
        return value


class _Trial(NamedTuple):
    """Where the step along the direction ended: the step length and the losses around it."""

    alpha: jax.Array
    slope: jax.Array  # g^T d
    loss0: jax.Array  # L(theta)
    new_loss: jax.Array  # L(theta + alpha d), or loss0 when it was not evaluated
    ok: jax.Array  # the batch, the slope and the new loss are finite


def gauss_newton_transformation(
    direction_fn: Callable[..., Direction],
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    settings: StepSettings,
    name: str,
) -> optax.GradientTransformationExtraArgs:
    """An optax transformation around ``direction_fn(params, inputs, targets, lam)``.

    One update (:func:`_gauss_newton_update`): the direction (:func:`_averaged_direction`),
    its step length (:func:`_step_length`), the next regularizer (:func:`_next_regularizer`),
    the step. See :func:`inna_jax.egn` for the method.
    """

    def init_fn(params: optax.Params) -> GaussNewtonState:
        params = as_float_arrays(params, "params", name)
        dtype = _float_dtype(params)
        return GaussNewtonState(
            count=jnp.zeros([], jnp.int32),
            step_size=jnp.asarray(settings.rate_at(jnp.zeros([], jnp.int32)), dtype),
            regularizer=jnp.asarray(settings.regularizer, dtype),
            momentum=optax.tree.zeros_like(params),
        )

    def update_fn(
        updates: optax.Updates,
        state: GaussNewtonState,
        params: optax.Params | None = None,
        *,
        inputs: Any = None,
        targets: Any = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, GaussNewtonState]:
        del updates  # the gradient is recomputed with the Gauss-Newton loss convention
        del extra_args  # such as value=loss, given to every optimizer by some loops
        if params is None or inputs is None or targets is None:
            raise ValueError(
                f"{name} needs the parameters and the batch: call "
                "tx.update(grads, state, params, inputs=x, targets=y)"
            )
        params = as_float_arrays(params, "params", name)
        check_batch(inputs, targets)
        batch = _Batch(params, inputs, targets)
        return _gauss_newton_update(direction_fn, predict_fn, settings, state, batch)

    # optax types a state as a chex.ArrayTree, which a NamedTuple state is at run time
    # (name, loss) of the method: inna_jax.train reads it to warn when the loss it reports is not
    # the one minimised here (inna_jax/train/_checks.py, gauss_newton_loss)
    update_fn.gauss_newton = (name, settings.loss)  # pyright: ignore[reportFunctionMemberAccess]
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


class _Batch(NamedTuple):
    """The parameters and the batch of one update."""

    params: Any
    inputs: Any
    targets: Any


def _gauss_newton_update(
    direction_fn: Callable[..., Direction],
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    settings: StepSettings,
    state: GaussNewtonState,
    batch: _Batch,
) -> tuple[optax.Updates, GaussNewtonState]:
    """One step: the direction on the batch, its length, the next regularizer, the update.

    A batch whose loss or direction is not finite leaves the state as it is.
    """
    dtype = state.step_size.dtype
    adaptive = settings.adaptive_regularization
    lam = state.regularizer if adaptive else jnp.asarray(settings.regularizer, dtype)
    out = direction_fn(batch.params, batch.inputs, batch.targets, lam)
    loss0 = out.loss.astype(dtype)
    batch_ok = jnp.isfinite(loss0) & jnp.isfinite(out.slope)
    count = jnp.where(batch_ok, optax.safe_int32_increment(state.count), state.count)
    direction, new_momentum, slope, root_jd = _averaged_direction(
        out, state, settings, batch_ok, count, dtype
    )
    lr = jnp.asarray(settings.rate_at(state.count), dtype)
    loss_at = _loss_along(predict_fn, settings.loss, batch, direction, dtype)
    trial = _step_length(loss_at, loss0, slope, batch_ok, state.step_size, lr, settings)
    new_lam = state.regularizer
    if adaptive:
        new_lam = _next_regularizer(out, direction, root_jd, trial, lam, lr, settings)
        # a non-finite batch tells nothing about the model: lambda stays
        new_lam = jnp.where(batch_ok, new_lam, lam).astype(dtype)
    alpha, step = _scaled_step(trial, direction, batch.params)
    return step, GaussNewtonState(
        count=count,
        step_size=jnp.where(alpha > 0, alpha, state.step_size).astype(dtype),
        regularizer=new_lam,
        momentum=new_momentum,
    )


def _loss_along(
    predict_fn: Callable[[Any, jax.Array], jax.Array],
    loss: str,
    batch: _Batch,
    direction: Any,
    dtype: Any,
) -> Callable[[jax.Array], jax.Array]:
    """``alpha -> L(theta + alpha d)`` on the batch, in ``dtype``."""

    def loss_at(alpha):
        outputs = predict_fn(_axpy(alpha, direction, batch.params), batch.inputs)
        return mean_loss(*as_matrix(outputs, batch.targets, loss), loss).astype(dtype)

    return loss_at


def _scaled_step(trial: _Trial, direction: Any, params: Any) -> tuple[jax.Array, Any]:
    """The step length taken (zero when the trial failed) and the update ``alpha d``, each
    leaf in its parameter's dtype."""
    alpha = jnp.where(trial.ok, trial.alpha, jnp.zeros_like(trial.alpha))
    step = jax.tree.map(
        lambda d, p: jnp.where(trial.ok, alpha.astype(d.dtype) * d, 0).astype(p.dtype),
        direction,
        params,
    )
    return alpha, step


def _averaged_direction(
    out: Direction,
    state: GaussNewtonState,
    settings: StepSettings,
    batch_ok: jax.Array,
    count: jax.Array,
    dtype: Any,
) -> tuple[Any, Any, jax.Array, jax.Array | None]:
    """The bias-corrected moving average of the directions: (direction, new momentum,
    slope g^T d, S^T J d or ``None``). With ``momentum = 0`` it is the batch's direction."""
    if settings.plain:
        return out.direction, state.momentum, out.slope.astype(dtype), out.root_jd
    beta = jnp.asarray(settings.momentum, dtype)
    new_momentum = jax.tree.map(
        lambda m, d: jnp.where(
            batch_ok, beta.astype(m.dtype) * m + (1 - beta).astype(m.dtype) * d, m
        ).astype(m.dtype),
        state.momentum,
        out.direction,
    )
    correction = jnp.where(count > 0, 1 - beta ** count.astype(dtype), 1)
    direction = jax.tree.map(lambda m: m / correction.astype(m.dtype), new_momentum)
    return direction, new_momentum, _vdot(out.gradient_fn(), direction, dtype), None


def _step_length(
    loss_at: Callable[[jax.Array], jax.Array],
    loss0: jax.Array,
    slope: jax.Array,
    batch_ok: jax.Array,
    last_step: jax.Array,
    lr: jax.Array,
    settings: StepSettings,
) -> _Trial:
    """The learning rate, or Armijo backtracking from ``min(increase * last step, lr)``."""
    dtype = loss0.dtype
    finite = batch_ok & jnp.isfinite(slope)
    if not settings.line_search:
        new_loss = loss_at(lr) if settings.adaptive_regularization else loss0
        return _Trial(lr, slope, loss0, new_loss, finite & jnp.isfinite(new_loss))
    c = jnp.asarray(settings.armijo_c, dtype)
    shrink = jnp.asarray(settings.armijo_decrease, dtype)
    alpha0 = jnp.minimum(last_step * jnp.asarray(settings.armijo_increase, dtype), lr)

    def cond(carry):
        alpha, trials, new_loss = carry
        armijo_fails = ~(new_loss <= loss0 + c * alpha * slope)
        return armijo_fails & (trials < settings.armijo_max_trials)

    def body(carry):
        alpha, trials, _ = carry
        alpha = alpha * shrink
        return alpha, trials + 1, loss_at(alpha)

    alpha, _, new_loss = jax.lax.while_loop(cond, body, (alpha0, 1, loss_at(alpha0)))
    return _Trial(alpha, slope, loss0, new_loss, finite & jnp.isfinite(new_loss))


def _next_regularizer(
    out: Direction,
    direction: Any,
    root_jd: jax.Array | None,
    trial: _Trial,
    lam: jax.Array,
    lr: jax.Array,
    settings: StepSettings,
) -> jax.Array:
    """Levenberg-Marquardt: lambda from the ratio of the actual to the predicted decrease."""
    dtype = trial.loss0.dtype
    if root_jd is None:
        root_jd = out.root_jvp(direction)
    # d^T (J^T Q J / b) d = |S^T J d|^2 / b
    curvature = (jnp.sum(root_jd.astype(dtype) ** 2) / out.batch).astype(dtype)
    alpha = trial.alpha
    predicted = -(alpha * trial.slope + 0.5 * alpha**2 * curvature)
    actual = trial.loss0 - trial.new_loss
    valid = (predicted > 0) & trial.ok
    rho = jnp.where(valid, actual / jnp.where(valid, predicted, 1), 0)
    return _lm_update(
        lam,
        rho,
        rule=settings.lm_rule,
        floor=jnp.asarray(settings.lm_floor, dtype) * lr * out.gram_scale.astype(dtype),
        thresholds=settings.lm_thresholds,
        increase=jnp.asarray(settings.lm_increase, dtype),
        decrease=jnp.asarray(settings.lm_decrease, dtype),
        bounds=settings.lm_bounds,
    )


def _lm_update(
    lam: jax.Array,
    rho: jax.Array,
    *,
    rule: str,
    floor: jax.Array,
    thresholds: tuple[float, float],
    increase: jax.Array,
    decrease: jax.Array,
    bounds: tuple[float, float],
) -> jax.Array:
    """The Levenberg-Marquardt update of lambda from the ratio rho (see :func:`inna_jax.egn`)."""
    low, high = thresholds
    factor = jnp.where(
        rho < low, increase, jnp.where(rho > high, decrease, jnp.ones_like(increase))
    )
    new = lam * factor
    if rule == "relative":
        new = jnp.maximum(new, floor)
    return jnp.clip(new, bounds[0], bounds[1])
