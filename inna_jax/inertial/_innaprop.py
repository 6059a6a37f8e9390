r"""INNAprop (Bolte, Boustany, Pauwels, Purica 2024): INNA's step on the RMSprop-scaled gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._validation import check_in_range, check_nonnegative, check_positive, concrete_float
from inna_jax.inertial._scale_by_inna import scale_by_inna


def innaprop(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    alpha: ArrayLike = 0.1,
    beta: ArrayLike = 0.9,
    *,
    sigma: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    weight_decay: ArrayLike = 0.01,
    psi_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""INNAprop: INNA's step on the RMSprop-scaled gradient, with decoupled weight decay.

    At step :math:`k = 1, 2, \dots`, with step :math:`\gamma = \gamma_k` and gradient
    :math:`g` at the current :math:`\theta`, the authors' update is

    .. math::

        \theta &\leftarrow (1 - \gamma\lambda)\,\theta \\
        v &\leftarrow \sigma v + (1 - \sigma)\, g^2, \qquad v_0 = 0 \\
        d &= \sqrt{v} / \sqrt{1 - \sigma^k} + \varepsilon \\
        \psi &\leftarrow (1 - \gamma/\beta)\,\psi + \gamma (1/\beta - \alpha)\,\theta \\
        \theta &\leftarrow \Big(1 + \frac{\gamma(1 - \alpha\beta)}{\beta - \gamma}\Big)\theta
            - \frac{\gamma}{\beta - \gamma}\,\psi - \gamma\beta\, g / d

    with :math:`\psi_0 = (1 - \alpha\beta)\theta_0`; the last line uses the :math:`\psi`
    just computed. Substituting it shows that the division by :math:`\beta - \gamma`
    cancels: the :math:`\theta` line is INNA's step
    :math:`\theta + \gamma(\phi - \beta\, g/d)` with
    :math:`\phi = (1/\beta - \alpha)\theta - \psi_{\text{old}}/\beta`, and the :math:`\psi`
    line is INNA's :math:`\psi + \gamma\phi`. INNAprop is therefore INNA applied to the
    scaled gradient :math:`g/d`, with the decoupled decay applied first and the initial speed
    :math:`s = \beta` (:func:`inna_jax.inna_psi0`). That is how it is built here:

    ``inna_jax.scale_by_inna(learning_rate, alpha, beta, decoupled_weight_decay=weight_decay,
    rms_decay=sigma, rms_eps=eps)``

    whose docstring states the learning-rate coupling (``innaprop`` must be the last link of
    an ``optax.chain``), the check that refuses a misplaced link, and why the RMS scaling is
    computed inside INNA's update rather than by an ``optax.scale_by_rms`` link before it
    (same :math:`d`, but a temporary array per step). The state is an
    :class:`inna_jax.InnaState` with ``nu`` :math:`= v`; ``update`` ignores extra keyword
    arguments. The authors' GPT-2 runs clip the gradient first:
    ``optax.chain(optax.clip_by_global_norm(1.0), inna_jax.innaprop(...))``.

    **Step size.** The authors' formula divides by :math:`\beta - \gamma`, so a concrete
    ``learning_rate`` :math:`\ge \beta` is refused. A schedule is checked where its value
    is known: at ``init`` (step 0) and at each ``update`` called outside ``jit`` (the
    current count), for :math:`0 \le \gamma_k < \beta`. Inside ``jit`` its value is traced
    and cannot be checked: keep it below :math:`\beta` (their GPT-2 schedule, linear
    warm-up to 6e-4 and cosine decay to 6e-5, with :math:`\beta = 2`, is far below).
    Because the division cancels in the form used here, a step :math:`\ge \beta` would
    still give INNA's finite step, not the authors' :math:`\pm\infty`.

    **Continuous time.** The paper motivates INNAprop by DIN, the continuous-time system of
    INNA (Section 2, derivation in Appendix B), and brings in the RMSprop scaling in the
    discrete scheme; it states no continuous-time system with the adaptive scaling, so
    :mod:`inna_jax.dynamics` has none for INNAprop. With the scaling :math:`d` frozen,
    INNAprop is the explicit Euler scheme of DIN for the preconditioned gradient
    :math:`\nabla J / d` (see :func:`inna_jax.dynamics.din_vector_field`).

    Args:
        learning_rate: :math:`\gamma_k \ge 0`, a float below :math:`\beta` or an optax
            schedule (e.g. ``optax.warmup_cosine_decay_schedule``).
        alpha: friction :math:`\alpha > 0` (0.1 for vision, 2.0 for GPT-2 in the paper).
        beta: Newtonian damping :math:`\beta > 0` (0.9 for vision, 2.0 for GPT-2).
        sigma: decay :math:`\sigma \in [0, 1)` of the squared-gradient average (0.99 for
            GPT-2).
        eps: :math:`\varepsilon \ge 0`, added outside the square root.
        weight_decay: decoupled decay :math:`\lambda \ge 0`, applied as
            :math:`\theta \leftarrow (1 - \gamma_k\lambda)\theta` before the step.
        psi_dtype: dtype of the state arrays (:math:`z = \psi - \theta` and :math:`v`);
            ``None`` keeps each parameter's dtype.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.

    Raises:
        ValueError: for a hyperparameter that is not a real number, :math:`\alpha \le 0`,
            :math:`\beta \le 0`, :math:`\sigma \notin [0, 1)`, :math:`\varepsilon < 0`, a
            negative weight decay, or a concrete learning rate outside :math:`[0, \beta)`
            (for a schedule: its value at ``init`` and at ``update`` outside ``jit``); an
            integer, bool or complex parameter leaf, and a misplaced link, as for
            :func:`inna_jax.inna`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import inna_jax
        >>> loss = lambda p: jnp.sum((p - jnp.array([1.0, -2.0])) ** 2)
        >>> tx = inna_jax.innaprop(learning_rate=0.01, weight_decay=0.0)
        >>> params = jnp.zeros(2)
        >>> state = tx.init(params)
        >>> for _ in range(1000):
        ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> params.round(2)
        Array([ 1., -2.], dtype=float32)

    References:
        Bolte, Boustany, Pauwels, Purica, "A second-order-like optimizer with adaptive
        gradient scaling for deep learning", arXiv:2410.05871 (2024), Section 2 (the
        algorithm) and Appendix B (its derivation from DIN); authors' code
        https://github.com/innaprop/innaprop (``GPT-2_scratch/optimizers/innaprop.py``).
    """
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    check_in_range("sigma", sigma, 0.0, 1.0)
    check_nonnegative("eps", eps)
    check_nonnegative("weight_decay", weight_decay)
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
        lr, b = concrete_float(learning_rate, "learning_rate"), concrete_float(beta, "beta")
        if lr is not None and b is not None and not lr < b:
            raise ValueError(
                f"learning_rate must be < beta in INNAprop (its update divides by "
                f"beta - learning_rate), got learning_rate={learning_rate!r}, beta={beta!r}"
            )
    else:
        learning_rate = _below_beta(learning_rate, beta)
    return scale_by_inna(
        learning_rate,
        alpha,
        beta,
        decoupled_weight_decay=weight_decay,
        rms_decay=sigma,
        rms_eps=eps,
        psi_dtype=psi_dtype,
    )


def _below_beta(schedule: Callable[[Any], Any], beta: ArrayLike) -> Callable[[Any], Any]:
    """``schedule``, checked to stay below a concrete ``beta`` where its value is known."""
    b = concrete_float(beta, "beta")
    if b is None:
        return schedule

    def checked(count: Any) -> Any:
        value = schedule(count)
        if not isinstance(value, jax.core.Tracer) and not isinstance(count, jax.core.Tracer):
            k = int(np.asarray(count))
            v = concrete_float(value, f"learning_rate({k})")
            if v is not None and not v < b:
                raise ValueError(
                    "learning_rate must be < beta in INNAprop (its update divides by "
                    f"beta - learning_rate), got learning_rate({k}) = {v!r} from the schedule, "
                    f"beta={beta!r} (schedules are checked where their value is known: at init "
                    "and at updates outside jit)"
                )
        return value

    return checked
