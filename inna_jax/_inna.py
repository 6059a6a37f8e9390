r"""INNA (a.k.a. INDIAN): the inertial Newton algorithm as a pure update and an optax optimizer.

The discrete update, with step :math:`\gamma_k`, friction :math:`\alpha > 0`, Newtonian
damping :math:`\beta > 0` and a (stochastic, sub-)gradient :math:`g_k`:

.. math::

    \phi_k     &= (1/\beta - \alpha)\,\theta_k - \psi_k / \beta \\
    \theta_{k+1} &= \theta_k + \gamma_k (\phi_k - \beta g_k - \lambda \theta_k) \\
    \psi_{k+1}   &= \psi_k + \gamma_k \phi_k

It is the explicit Euler step of the DIN system (see :mod:`inna_jax.dynamics`), and
:math:`\lambda` is the coupled weight decay of the authors' PyTorch code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._validation import check_nonnegative, check_positive, concrete_float

_NO_PARAMS_MSG = (
    "inna needs the current parameters: its direction depends on theta, not only on the "
    "gradient. Call tx.update(grads, state, params)."
)


def _is_none(x: Any) -> bool:
    return x is None


class _Pair(NamedTuple):
    """Two per-leaf results, unzipped by :func:`_unzip` (a class, so no user pytree matches)."""

    first: Any
    second: Any


def _unzip(pairs: Any) -> tuple[Any, Any]:
    """Splits a pytree of :class:`_Pair` (or ``None``) leaves into two pytrees."""
    is_pair = lambda x: isinstance(x, _Pair)
    first = jax.tree.map(lambda x: None if x is None else x.first, pairs, is_leaf=is_pair)
    second = jax.tree.map(lambda x: None if x is None else x.second, pairs, is_leaf=is_pair)
    return first, second


def _compute_dtype(*leaves: jax.Array) -> jnp.dtype:
    """The standard promotion of the leaves' dtypes (bf16 with f32 gives f32), also when the
    user runs JAX with strict promotion: the casts that follow are explicit."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*(leaf.dtype for leaf in leaves))


def _leaf_step(theta, psi, grad, learning_rate, alpha, beta, weight_decay):
    """One INNA step on one leaf, in the promoted dtype of (theta, psi, grad)."""
    dtype = _compute_dtype(theta, psi, grad)
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

    def step(t, p, g):
        if t is None:
            return None
        if g is None:
            return _Pair(t, p)
        dt, dp = _leaf_step(t, p, g, learning_rate, alpha, beta, weight_decay)
        dtype = dt.dtype
        return _Pair(
            (t.astype(dtype) + dt).astype(t.dtype),
            (p.astype(dtype) + dp).astype(p.dtype),
        )

    return _unzip(jax.tree.map(step, theta, psi, grad, is_leaf=_is_none))


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

    def leaf(t, g):
        if t is None:
            return None
        dtype = _compute_dtype(t, g)
        a, b, s = (jnp.asarray(h, dtype) for h in (alpha, beta, initial_speed))
        return ((1 - a * b) * t.astype(dtype) + b * (s - b) * g.astype(dtype)).astype(t.dtype)

    return jax.tree.map(leaf, theta, grad, is_leaf=_is_none)


class InnaState(NamedTuple):
    r"""State of :func:`inna`.

    Attributes:
        count: number of updates applied so far (int32). While it is 0,
            ``psi_minus_theta`` holds :math:`-\alpha\beta\theta_0`, the part of
            :math:`\psi_0 - \theta_0` known at ``init``; the first update adds
            :math:`\beta(s - \beta) g_0`.
        psi_minus_theta: :math:`z_k = \psi_k - \theta_k`, a pytree like the parameters.
            The auxiliary variable is :math:`\psi_k = z_k + \theta_k`. Storing :math:`z`
            instead of :math:`\psi` lets XLA update both buffers in place (see :func:`inna`).

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> theta = jnp.array([1.0, 2.0])
        >>> tx = inna_jax.inna(0.1, alpha=0.5, beta=0.1)
        >>> _, state = tx.update(jnp.array([0.5, 0.5]), tx.init(theta), theta)
        >>> int(state.count)
        1

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2.
    """

    count: jax.Array
    psi_minus_theta: optax.Params


def inna(
    learning_rate: optax.ScalarOrSchedule,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    *,
    initial_speed: ArrayLike | None = None,
    weight_decay: ArrayLike = 0.0,
    decoupled_weight_decay: ArrayLike = 0.0,
    psi_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""The INNA optimizer (Castera et al.) as an ``optax.GradientTransformation``.

    With :math:`\gamma_k` the learning rate at step :math:`k`, the update is

    .. math::

        \tilde\theta_k &= (1 - \gamma_k \mu)\,\theta_k \\
        \phi_k &= (1/\beta - \alpha)\,\tilde\theta_k - \psi_k / \beta \\
        \theta_{k+1} &= \tilde\theta_k + \gamma_k (\phi_k - \beta g_k - \lambda \tilde\theta_k) \\
        \psi_{k+1} &= \psi_k + \gamma_k \phi_k

    where :math:`\lambda` is ``weight_decay`` (coupled, as in the authors' PyTorch code) and
    :math:`\mu` is ``decoupled_weight_decay`` (applied first, as in the INNAprop code). With
    both at 0 (the default) this is exactly :func:`inna_step`. The returned ``updates`` are
    :math:`\theta_{k+1} - \theta_k`, so ``optax.apply_updates`` gives :math:`\theta_{k+1}`.

    The auxiliary variable starts at :func:`inna_psi0` with initial speed :math:`s`:
    :math:`\psi_0 = (1 - \alpha\beta)\theta_0 + \beta(s - \beta) g_0`. The
    :math:`\theta_0` part is set by ``init`` (with the :math:`\alpha, \beta` given there);
    unless :math:`s = \beta`, the :math:`g_0` part is added at the first update (a
    ``jnp.where`` on the step count, on a scalar coefficient: no Python branch, no
    recompilation).

    **Implementation.** The state holds :math:`z_k = \psi_k - \theta_k`, not
    :math:`\psi_k`. With :math:`\gamma = \gamma_k` and no decoupled decay, the step above is
    exactly

    .. math::

        z_{k+1} &= z_k + \gamma(\beta g_k + \lambda\theta_k) \\
        \theta_{k+1} &= \big(1 - \gamma(\alpha + \lambda) + \gamma^2\lambda/\beta\big)\theta_k
            - (\gamma/\beta)\, z_{k+1} + \gamma(\gamma - \beta)\, g_k .

    In :math:`(\theta, \psi)` each new value needs both old ones, so XLA must copy one
    buffer before it can update either in place (on CPU, where it does not fuse kernels with
    two outputs, it copies both). In :math:`(\theta, z)` the state update needs only the old
    :math:`\theta`, and the parameter update reads the new :math:`z`, as in SGD with
    momentum: both updates run in place. Without weight decay (a concrete 0, the default)
    the state update does not read :math:`\theta` at all. The two forms agree to rounding
    (below 1e-12 after 300 float64 steps, checked against a NumPy transcription of the
    paper's form).
    :func:`inna_step` keeps the paper's :math:`(\theta, \psi)` form.

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
        learning_rate: :math:`\gamma_k`, a float or an optax schedule of the step count.
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
        An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Raises:
        ValueError: for a concrete :math:`\alpha \le 0`, :math:`\beta \le 0`, a negative or
            non-finite learning rate, a negative initial speed or weight decay; and at
            ``update`` time when ``params`` is missing.

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
        JMLR 22 (2021). Authors' code: https://github.com/camcastera/Indian-for-DeepLearning
    """
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    if initial_speed is not None:
        check_nonnegative("initial_speed", initial_speed)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("decoupled_weight_decay", decoupled_weight_decay)
    if psi_dtype is not None:
        psi_dtype = jax.dtypes.canonicalize_dtype(psi_dtype)

    # With no weight decay given as a concrete 0 (the default), the state update does not
    # read theta: one array pass less per step. Traced decays take the general path.
    no_decay = concrete_float(weight_decay) == 0.0 and concrete_float(decoupled_weight_decay) == 0.0

    def init_fn(params: optax.Params) -> InnaState:
        # z_0 = psi_0 - theta_0 = -alpha beta theta_0 + beta (s - beta) g_0. The theta part is
        # set here; the g_0 part, when s != beta, is added at the first update.
        def z0(t):
            if t is None:
                return None
            dtype = t.dtype if psi_dtype is None else psi_dtype
            ab = jnp.asarray(alpha, dtype) * jnp.asarray(beta, dtype)
            return (-ab * t.astype(dtype)).astype(dtype)

        z = jax.tree.map(z0, params, is_leaf=_is_none)
        return InnaState(count=jnp.zeros([], jnp.int32), psi_minus_theta=z)

    def update_fn(updates, state: InnaState, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        speed = beta if initial_speed is None else initial_speed
        first = state.count == 0

        def leaf(g, t, z):
            if g is None or t is None:
                return None
            dtype = _compute_dtype(t, z, g)
            hyper = (lr, alpha, beta, speed, weight_decay, decoupled_weight_decay)
            c, a, b, s, lam, mu = (jnp.asarray(h, dtype) for h in hyper)
            # Scalar coefficients of the step written in z = psi - theta (see the docstring):
            #   z'     = z + c b g + c (mu + lam (1 - c mu)) theta
            #   theta' = theta + (A - 1) theta + B z' + E g
            z_theta = c * (mu + lam * (1 - c * mu))
            a_minus_1 = -c * (a + lam) + c * c * lam / b
            a_minus_1 = a_minus_1 - c * mu * (1 + a_minus_1)
            coef_z, coef_g = -c / b, c * (c - b)
            tc, g = t.astype(dtype), g.astype(dtype)
            # at the first update, z holds -alpha beta theta_0: add beta (s - beta) g_0
            coef_g_z = c * b + jnp.where(first, b * (s - b), jnp.zeros((), dtype))
            z_next = z.astype(dtype) + coef_g_z * g
            if not no_decay:
                z_next = z_next + z_theta * tc
            update = a_minus_1 * tc + coef_z * z_next + coef_g * g
            return _Pair(update.astype(t.dtype), z_next.astype(z.dtype))

        pairs = jax.tree.map(leaf, updates, params, state.psi_minus_theta, is_leaf=_is_none)
        new_updates, new_z = _unzip(pairs)
        new_z = _keep_missing(new_z, state.psi_minus_theta)
        count = optax.safe_int32_increment(state.count)
        return new_updates, InnaState(count=count, psi_minus_theta=new_z)

    return optax.GradientTransformation(init_fn, update_fn)


def _keep_missing(new_z, old_z):
    """Keeps the old state leaf where the gradient was ``None`` (frozen parameters)."""
    return jax.tree.map(
        lambda new, old: old if new is None else new, new_z, old_z, is_leaf=_is_none
    )


def transform(
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    *,
    learning_rate: optax.ScalarOrSchedule = 0.1,
    **kwargs: Any,
) -> optax.GradientTransformation:
    r"""INNA under the name ``inna.transform(alpha, beta)``, for use inside ``optax.chain``.

    This is :func:`inna` with :math:`(\alpha, \beta)` first. The step :math:`\gamma_k` enters
    the :math:`\psi` update, so INNA cannot be split into a direction followed by
    ``optax.scale_by_learning_rate``: the learning rate is an argument here (default 0.1, the
    authors' PyTorch default) and ``transform`` must be the *last* link of a chain. Place
    gradient transformations (clipping, ``optax.add_decayed_weights``) before it.

    Args:
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        learning_rate: :math:`\gamma_k`, a float or an optax schedule.
        **kwargs: any other keyword of :func:`inna`.

    Returns:
        An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

    Example:
        >>> import optax
        >>> import inna_jax as inna
        >>> tx = optax.chain(
        ...     optax.clip_by_global_norm(1.0),
        ...     inna.transform(0.5, 0.1, learning_rate=inna.power_decay(0.1)),
        ... )

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021).
    """
    return inna(learning_rate, alpha, beta, **kwargs)
