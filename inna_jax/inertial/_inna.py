r"""INNA (a.k.a. INDIAN): the pure update, the initial auxiliary variable, and the optimizers.

The discrete update, with step :math:`\gamma_k`, friction :math:`\alpha > 0`, Newtonian
damping :math:`\beta > 0` and a (stochastic, sub-)gradient :math:`g_k`:

.. math::

    \phi_k     &= (1/\beta - \alpha)\,\theta_k - \psi_k / \beta \\
    \theta_{k+1} &= \theta_k + \gamma_k (\phi_k - \beta g_k - \lambda \theta_k) \\
    \psi_{k+1}   &= \psi_k + \gamma_k \phi_k

It is the explicit Euler step of the DIN system (see :mod:`inna_jax.dynamics`), and
:math:`\lambda` is the coupled weight decay of the authors' PyTorch code. The optimizers
:func:`inna` and :func:`transform` are :func:`inna_jax.scale_by_inna` (the lower layer, in
:mod:`inna_jax.inertial._scale_by_inna`) applied to the raw gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._leafwise import Pair, compute_dtype, is_none, unzip
from inna_jax._validation import as_float_arrays, check_nonnegative, check_positive
from inna_jax.inertial._scale_by_inna import scale_by_inna


def _leaf_step(
    theta: jax.Array,
    psi: jax.Array,
    grad: jax.Array,
    learning_rate: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    weight_decay: ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """One INNA step on one leaf, in the promoted dtype of (theta, psi, grad)."""
    dtype = compute_dtype(theta, psi, grad)
    t, p, g = (x.astype(dtype) for x in (theta, psi, grad))
    lr, a, b, wd = (jnp.asarray(h, dtype) for h in (learning_rate, alpha, beta, weight_decay))
    inv_b = 1 / b
    phi = (inv_b - a) * t - inv_b * p
    theta_step = lr * (phi - b * g - wd * t)
    psi_step = lr * phi
    return theta_step, psi_step


def inna_step(
    theta: optax.Params,
    psi: optax.Params,
    grad: optax.Updates,
    *,
    learning_rate: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    weight_decay: ArrayLike = 0.0,
) -> tuple[optax.Params, optax.Params]:
    r"""One INNA step, :math:`(\theta_k, \psi_k, g_k) \mapsto (\theta_{k+1}, \psi_{k+1})`.

    .. math::

        \phi_k &= (1/\beta - \alpha)\,\theta_k - \psi_k / \beta \\
        \theta_{k+1} &= \theta_k + \gamma (\phi_k - \beta g_k - \lambda \theta_k) \\
        \psi_{k+1} &= \psi_k + \gamma \phi_k

    Both lines use the old :math:`\theta_k` and :math:`\psi_k`. The inputs are pytrees of one
    structure; a ``None`` leaf of ``theta`` stays ``None``, and a ``None`` gradient leaf leaves
    its parameter and auxiliary variable unchanged. Each output keeps its input's dtype;
    the arithmetic runs in the promoted dtype of the three leaves. Hyperparameters may be
    traced. The function has no side effects, so it is safe under ``jit``, ``vmap``,
    ``pmap`` and ``shard_map``.

    Leaves may be floating-point arrays or Python floats (taken as JAX's default float
    dtype); integer, bool and complex leaves raise a ``ValueError`` naming them.

    Args:
        theta: parameters :math:`\theta_k`.
        psi: auxiliary variable :math:`\psi_k` (see :func:`inna_psi0`).
        grad: gradient :math:`g_k` at :math:`\theta_k`.
        learning_rate: step :math:`\gamma > 0`.
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        weight_decay: coupled decay :math:`\lambda \ge 0`, added to the
            :math:`\theta` step only, as in the authors' PyTorch code.

    Returns:
        The pair ``(theta_next, psi_next)``.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> theta, psi, grad = jnp.array([1.0]), jnp.array([0.95]), jnp.array([2.0])
        >>> inna_jax.inna_step(theta, psi, grad, learning_rate=0.1, alpha=0.5, beta=0.1)
        (Array([0.98], dtype=float32), Array([0.95], dtype=float32))

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Algorithm 1 (INDIAN).
    """

    theta = as_float_arrays(theta, "theta", "inna_step")
    psi = as_float_arrays(psi, "psi", "inna_step")
    grad = as_float_arrays(grad, "grad", "inna_step")

    def step(t, p, g):
        if t is None:
            return None
        if g is None:
            return Pair(t, p)
        dt, dp = _leaf_step(t, p, g, learning_rate, alpha, beta, weight_decay)
        dtype = dt.dtype
        return Pair(
            (t.astype(dtype) + dt).astype(t.dtype),
            (p.astype(dtype) + dp).astype(p.dtype),
        )

    return unzip(jax.tree.map(step, theta, psi, grad, is_leaf=is_none))


def inna_psi0(
    theta: optax.Params,
    grad: optax.Updates,
    *,
    alpha: ArrayLike,
    beta: ArrayLike,
    initial_speed: ArrayLike,
) -> optax.Params:
    r"""The auxiliary variable :math:`\psi_0` for the initial velocity :math:`-s\nabla J(\theta_0)`.

    The change of variable :math:`\psi = -\beta\dot\theta - \beta^2\nabla J(\theta) -
    (\alpha\beta - 1)\theta` maps the initial velocity to

    .. math::

        \psi_0 = (1 - \alpha\beta)\,\theta_0 + \beta (s - \beta)\, g_0 .

    The conventions in circulation are values of the initial speed :math:`s`:
    :math:`s = \beta` (authors' PyTorch code, :math:`\psi_0 = (1 - \alpha\beta)\theta_0`),
    :math:`s = 1` (authors' Keras code and the JMLR paper) and :math:`s = 0` (zero velocity).
    This one function serves the optimizer and the ODE solvers in :mod:`inna_jax.dynamics`.

    Args:
        theta: initial parameters :math:`\theta_0`.
        grad: gradient :math:`g_0 = \nabla J(\theta_0)`, same structure as ``theta``.
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        initial_speed: :math:`s \ge 0`.

    Returns:
        :math:`\psi_0`, a pytree like ``theta`` with its dtypes.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> inna_jax.inna_psi0(jnp.array([1.0]), jnp.array([2.0]), alpha=0.5, beta=0.1,
        ...                    initial_speed=0.1)
        Array([0.95], dtype=float32)

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2 (the first-order form of DIN).
    """
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    check_nonnegative("initial_speed", initial_speed)
    theta = as_float_arrays(theta, "theta", "inna_psi0")
    grad = as_float_arrays(grad, "grad", "inna_psi0")

    def leaf(t, g):
        if t is None:
            return None
        dtype = compute_dtype(t, g)
        a, b, s = (jnp.asarray(h, dtype) for h in (alpha, beta, initial_speed))
        return ((1 - a * b) * t.astype(dtype) + b * (s - b) * g.astype(dtype)).astype(t.dtype)

    return jax.tree.map(leaf, theta, grad, is_leaf=is_none)


def inna(
    learning_rate: optax.ScalarOrSchedule,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    *,
    initial_speed: ArrayLike | None = None,
    weight_decay: ArrayLike = 0.0,
    decoupled_weight_decay: ArrayLike = 0.0,
    psi_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The INNA optimizer (Castera et al.): :func:`inna_jax.scale_by_inna` on the gradient.

    With :math:`\gamma_k` the learning rate at step :math:`k` and :math:`g_k` the gradient,

    .. math::

        \tilde\theta_k &= (1 - \gamma_k \mu)\,\theta_k \\
        \phi_k &= (1/\beta - \alpha)\,\tilde\theta_k - \psi_k / \beta \\
        \theta_{k+1} &= \tilde\theta_k + \gamma_k (\phi_k - \beta g_k - \lambda \tilde\theta_k) \\
        \psi_{k+1} &= \psi_k + \gamma_k \phi_k

    where :math:`\lambda` is ``weight_decay`` (coupled, as in the authors' PyTorch code) and
    :math:`\mu` is ``decoupled_weight_decay`` (applied first, as in the INNAprop code). With
    both at 0 (the default) this is exactly :func:`inna_step`. The state, the
    implementation in :math:`(\theta, z = \psi - \theta)`, the learning-rate coupling (why
    INNA must be the last link of a chain) and the check that refuses a misplaced INNA are
    described once, in :func:`inna_jax.scale_by_inna`.

    **Default initial speed.** ``initial_speed=None`` means :math:`s = \beta`, i.e.
    :math:`\psi_0 = (1 - \alpha\beta)\theta_0`, the default of the authors' PyTorch
    optimizer. We chose it because (i) it reproduces the reference implementation step for
    step, (ii) it follows :math:`\beta` when :math:`\beta` is injected or tuned, and (iii) a
    small initial velocity :math:`-\beta g_0` is the safe choice for deep networks, where
    :math:`s = 1` amounts to a first plain gradient step of size :math:`\gamma_0`.
    Pass ``initial_speed=1.0`` for the Keras code and the JMLR experiments, and ``0.0`` for
    zero initial velocity.

    **Hyperparameter advice from the authors.** Large :math:`\alpha` is slow but stable,
    small :math:`\alpha` fast but may diverge; try :math:`\beta \in \{0.01, 0.1, 1, 10\}`.
    Their defaults are :math:`\gamma_0 = 0.1, \alpha = 0.5, \beta = 0.1`, and the papers
    use :func:`~inna_jax.power_decay` with power 1/2.

    Args:
        learning_rate: :math:`\gamma_k \ge 0`, a float or an optax schedule of the step count.
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        initial_speed: :math:`s \ge 0` in :math:`\dot\theta(0) = -s\nabla J(\theta_0)`;
            ``None`` (default) means :math:`s = \beta`.
        weight_decay: coupled decay :math:`\lambda \ge 0`, scaled by :math:`\gamma_k`,
            entering the :math:`\theta` step only (authors' PyTorch code).
        decoupled_weight_decay: decay :math:`\mu \ge 0` applied as
            :math:`\theta \leftarrow (1 - \gamma_k\mu)\theta` before the step (INNAprop).
        psi_dtype: dtype of the state :math:`z = \psi - \theta` (e.g. ``jnp.float32`` for
            bf16 parameters). ``None`` keeps each parameter's dtype.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params`` and
        accepts (and ignores) extra keyword arguments such as ``value=loss``; its state is an
        :class:`inna_jax.InnaState`.

    Raises:
        ValueError: for a hyperparameter that is not a real number (``inna("0.1")``), a
            concrete :math:`\alpha \le 0` or :math:`\beta \le 0`, a negative or non-finite
            learning rate, a negative initial speed or weight decay; a schedule value that is
            negative or not finite, checked at ``init`` (step 0) and at each ``update``
            outside ``jit`` (inside ``jit`` it is traced and cannot be checked); an integer,
            bool or complex parameter leaf, named by its path (Python floats are taken as
            JAX's default float dtype, as in optax); at ``update`` time when ``params`` is
            missing, or when a link after INNA in an ``optax.chain`` changes INNA's leaves
            (a masked INNA beside another masked optimizer passes: see
            :func:`inna_jax.scale_by_inna`).

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import inna_jax
        >>> loss = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
        >>> params = {"w": jnp.zeros(2)}
        >>> tx = inna_jax.inna(learning_rate=0.1, alpha=0.5, beta=0.1)
        >>> state = tx.init(params)
        >>> for _ in range(300):
        ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> [round(float(w), 3) for w in params["w"]]
        [3.0, 3.0]

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Algorithm 1 (INDIAN) and Section 5. Authors' code:
        https://github.com/camcastera/Indian-for-DeepLearning
    """
    return scale_by_inna(
        learning_rate,
        alpha,
        beta,
        initial_speed=initial_speed,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        psi_dtype=psi_dtype,
    )


def transform(
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    *,
    learning_rate: optax.ScalarOrSchedule = 0.1,
    initial_speed: ArrayLike | None = None,
    weight_decay: ArrayLike = 0.0,
    decoupled_weight_decay: ArrayLike = 0.0,
    psi_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""INNA under the name ``inna.transform(alpha, beta)``, for use inside ``optax.chain``.

    This is :func:`inna` with :math:`(\alpha, \beta)` first and the learning rate as a
    keyword (default 0.1, the authors' PyTorch default); the step is

    .. math::

        \theta_{k+1} = \theta_k + \gamma_k (\phi_k - \beta g_k), \qquad
        \psi_{k+1} = \psi_k + \gamma_k \phi_k .

    Because :math:`\gamma_k` enters the :math:`\psi` update (see
    :func:`inna_jax.scale_by_inna`), ``transform`` must be the *last* link of a chain. Place
    gradient transformations (clipping, ``optax.add_decayed_weights``) before it. The
    signature is explicit, so ``optax.inject_hyperparams(inna_jax.transform)`` works.

    Args:
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        learning_rate: :math:`\gamma_k`, a float or an optax schedule.
        initial_speed: see :func:`inna`.
        weight_decay: see :func:`inna`.
        decoupled_weight_decay: see :func:`inna`.
        psi_dtype: see :func:`inna`.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params``.

    Example:
        >>> import optax
        >>> import inna_jax as inna
        >>> tx = optax.chain(
        ...     optax.clip_by_global_norm(1.0),
        ...     inna.transform(0.5, 0.1, learning_rate=inna.power_decay(0.1)),
        ... )
        >>> hyper = optax.inject_hyperparams(inna.transform)(alpha=0.5, beta=0.1)

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021).
    """
    return inna(
        learning_rate,
        alpha,
        beta,
        initial_speed=initial_speed,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        psi_dtype=psi_dtype,
    )
