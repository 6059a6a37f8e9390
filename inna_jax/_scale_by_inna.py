r"""The lower layer of the INNA family: INNA's state and step on the (optionally RMS-scaled)
gradient.

:func:`scale_by_inna` holds the auxiliary variable and applies INNA's step to the vector it
receives, or to that vector divided by its running RMS (INNAprop). The aliases
:func:`inna_jax.inna`, :func:`inna_jax.transform` and :func:`inna_jax.innaprop` are this
transformation with their own defaults. This module is also the one place where the
learning-rate coupling is written down (see the docstring of :func:`scale_by_inna`).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._leafwise import Pair, compute_dtype, is_none, unzip
from inna_jax._validation import (
    check_in_range,
    check_nonnegative,
    check_positive,
    concrete_float,
)

_NO_PARAMS_MSG = (
    "INNA needs the current parameters: its step depends on theta, not only on the "
    "gradient. Call tx.update(grads, state, params)."
)


class InnaState(NamedTuple):
    r"""State of :func:`scale_by_inna` and of the INNA-family optimizers built on it.

    Attributes:
        count: number of updates applied so far (int32). While it is 0,
            ``psi_minus_theta`` holds :math:`-\alpha\beta\theta_0`, the part of
            :math:`\psi_0 - \theta_0` known at ``init``; the first update adds
            :math:`\beta(s - \beta) g_0`.
        psi_minus_theta: :math:`z_k = \psi_k - \theta_k`, a pytree like the parameters.
            The auxiliary variable is :math:`\psi_k = z_k + \theta_k`. Storing :math:`z`
            instead of :math:`\psi` lets XLA update both buffers in place (see
            :func:`scale_by_inna`).
        nu: the running average :math:`v_k` of the squared gradient, a pytree like the
            parameters, with RMS scaling (INNAprop); ``None`` without.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> theta = jnp.array([1.0, 2.0])
        >>> tx = inna_jax.inna(0.1, alpha=0.5, beta=0.1)
        >>> _, state = tx.update(jnp.array([0.5, 0.5]), tx.init(theta), theta)
        >>> int(state.count), state.psi_minus_theta.shape
        (1, (2,))

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2.
    """

    count: jax.Array
    psi_minus_theta: optax.Params
    nu: optax.Params | None = None


def _chain_link(local: dict) -> tuple[int, int] | None:
    """(position, length) of the link an ``optax.chain`` update is calling, from its locals."""
    fns, fn = local.get("update_fns"), local.get("fn")
    if fns is None or fn is None:
        return None
    return next((i for i, f in enumerate(fns) if f is fn), -1) + 1, len(fns)


def _named_chain_link(local: dict) -> tuple[int, int] | None:
    """(position, length) of the link an ``optax.named_chain`` update is calling."""
    transforms, name = local.get("transforms"), local.get("name")
    if transforms is None or name is None:
        return None
    names = [n for n, _ in transforms]
    return (names.index(name) + 1 if name in names else 0), len(names)


# The code objects of the update functions of every optax.chain and optax.named_chain (one
# code object, one closure per chain), and how to read the link being called from the locals.
_CHAINS = {
    optax.chain(optax.identity()).update.__code__: _chain_link,
    optax.named_chain(("link", optax.identity())).update.__code__: _named_chain_link,
}

_NOT_LAST_MSG = (
    "inna_jax: an INNA-family optimizer (inna, transform, innaprop, scale_by_inna) must be the "
    "last link of an optax.chain, but it is link {position} of {length} here: its learning "
    "rate also moves its auxiliary variable psi, so a link after it would change the step "
    "without changing psi; put gradient transformations (clipping, scaling) before it"
)


def _check_last_in_chains() -> None:
    """Refuses an INNA update called by an ``optax.chain`` link that is not the last one.

    Walks up the Python stack; in each frame of an ``optax.chain`` or ``optax.named_chain``
    update it compares the link being called with the chain's last link. This runs when
    ``update`` is traced (once under ``jit``) or called eagerly, and costs nothing in the
    compiled step. It reads the chain's loop variables (optax 0.2.x: ``fn`` and
    ``update_fns``, ``name`` and ``transforms``); where they are absent it passes silently,
    and ``tests/test_optimizers.py`` (``test_a_link_after_inna_is_refused``) fails.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            read = _CHAINS.get(frame.f_code)
            link = None if read is None else read(frame.f_locals)
            if link is not None and link[0] != link[1]:
                raise ValueError(_NOT_LAST_MSG.format(position=link[0], length=link[1]))
            frame = frame.f_back
    finally:
        del frame


def scale_by_inna(
    learning_rate: optax.ScalarOrSchedule,
    alpha: ArrayLike = 0.5,
    beta: ArrayLike = 0.1,
    *,
    initial_speed: ArrayLike | None = None,
    weight_decay: ArrayLike = 0.0,
    decoupled_weight_decay: ArrayLike = 0.0,
    rms_decay: ArrayLike | None = None,
    rms_eps: ArrayLike = 1e-8,
    psi_dtype: Any | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""INNA's state and step on the incoming vector: the lower layer of the INNA family.

    With :math:`\gamma_k` the learning rate at step :math:`k` and :math:`g_k` the vector this
    transformation receives (the gradient, or a transformed gradient when links precede it
    in ``optax.chain``), the update is INNA's step on :math:`\hat g_k`:

    .. math::

        \tilde\theta_k &= (1 - \gamma_k \mu)\,\theta_k \\
        \phi_k &= (1/\beta - \alpha)\,\tilde\theta_k - \psi_k / \beta \\
        \theta_{k+1} &= \tilde\theta_k + \gamma_k (\phi_k - \beta \hat g_k
            - \lambda \tilde\theta_k) \\
        \psi_{k+1} &= \psi_k + \gamma_k \phi_k

    where :math:`\lambda` is ``weight_decay`` (coupled, as in the authors' INNA code: it is
    the gradient of the penalty :math:`\tfrac{\lambda}{2\beta}\|\theta\|^2`) and :math:`\mu`
    is ``decoupled_weight_decay`` (applied first, as in the INNAprop code). Without RMS
    scaling (``rms_decay=None``, the default) :math:`\hat g_k = g_k`, and with both decays at
    0 this is exactly :func:`inna_jax.inna_step`. With ``rms_decay`` :math:`= \sigma`,
    :math:`\hat g_k` is :math:`g_k` divided by its running RMS, as in RMSprop and INNAprop:

    .. math::

        v_{k+1} = \sigma v_k + (1 - \sigma)\, g_k^2 \ (v_0 = 0), \qquad
        \hat g_k = g_k \big/ \big(\sqrt{v_{k+1}} / \sqrt{1 - \sigma^{k+1}} + \varepsilon\big).

    The returned ``updates`` are :math:`\theta_{k+1} - \theta_k`, so ``optax.apply_updates``
    gives :math:`\theta_{k+1}`.

    **The learning-rate coupling.** :math:`\gamma_k` enters the :math:`\psi` update as well
    as the parameter step. INNA is therefore not a direction that
    ``optax.scale_by_learning_rate`` could scale afterwards, as optax does for Adam: a link
    that rescales INNA's output by :math:`c` would move :math:`\theta` by :math:`c\gamma_k`
    while :math:`\psi` moved by :math:`\gamma_k`, which is another method (no longer the
    Euler scheme of DIN). So this transformation takes the learning rate itself, returns the
    final update, and must be the **last** link of an ``optax.chain``. Transformations of
    the gradient (clipping, ``optax.add_decayed_weights``) go before it. Every alias of the
    family (:func:`inna_jax.inna`, :func:`inna_jax.transform`, :func:`inna_jax.innaprop`) is
    this transformation with its own settings.

    **Misplaced links are refused.** INNA cannot see what follows it in a chain, so the
    check looks at who calls it: when ``update`` runs (traced once under ``jit``, or
    eagerly), it walks up the Python call stack and, in every ``optax.chain`` or
    ``optax.named_chain`` it finds, requires the link being called to be the chain's last
    one. ``optax.chain(inna,
    optax.scale(0.5))`` raises a one-line ``ValueError`` at its first ``update``, also inside
    an outer chain or a wrapper; ``optax.MultiSteps``, ``optax.apply_if_finite``,
    ``optax.inject_hyperparams``, ``nnx.Optimizer`` and chains that end with INNA pass. The
    check costs nothing in the compiled step. It does not see parameters changed outside
    ``optax.apply_updates`` (``params + 0.5 * updates``): a runtime check would have to read
    a parameter element in the step, and on XLA:CPU that read makes the donated in-place
    update copy whole buffers (measured at 1e6 parameters: 1.7x the step time for the read
    alone, 2.9x with the ``lax.cond`` that would raise).

    **Initial auxiliary variable.** :math:`\psi` starts at :func:`inna_jax.inna_psi0` with
    initial speed :math:`s`: :math:`\psi_0 = (1 - \alpha\beta)\theta_0 + \beta(s - \beta)
    \hat g_0`. The :math:`\theta_0` part is set by ``init`` (with the :math:`\alpha, \beta`
    given there); unless :math:`s = \beta`, the :math:`\hat g_0` part is added at the first
    update (a ``jnp.where`` on the step count, on a scalar coefficient: no Python branch, no
    recompilation).

    **Implementation.** The state holds :math:`z_k = \psi_k - \theta_k`, not
    :math:`\psi_k`. With :math:`\gamma = \gamma_k` and no decoupled decay, the step above is
    exactly

    .. math::

        z_{k+1} &= z_k + \gamma(\beta \hat g_k + \lambda\theta_k) \\
        \theta_{k+1} &= \big(1 - \gamma(\alpha + \lambda) + \gamma^2\lambda/\beta\big)\theta_k
            - (\gamma/\beta)\, z_{k+1} + \gamma(\gamma - \beta)\, \hat g_k .

    In :math:`(\theta, \psi)` each new value needs both old ones, so XLA must copy one
    buffer before it can update either in place (on CPU, where it does not fuse kernels with
    two outputs, it copies both). In :math:`(\theta, z)` the state update needs only the old
    :math:`\theta`, and the parameter update reads the new :math:`z`, as in SGD with
    momentum: both updates run in place. Without weight decay (a concrete 0, the default)
    the state update does not read :math:`\theta` at all. The two forms agree to rounding
    (below 1e-12 after 300 float64 steps, checked against a NumPy transcription of the
    paper's form). With RMS scaling, :math:`\hat g` is computed inside each of the two
    updates (in two algebraically equal forms, so that XLA does not share it): a separate
    ``optax.scale_by_rms`` link would hand both updates one scaled-gradient array, which
    XLA:CPU materializes as a fresh temporary buffer at every step (10k page faults per
    step and 2.6x Adam's time at 1e7 parameters, against 1.3-1.4x here). The
    arithmetic runs in the promoted dtype of the leaves and at least float32, and each
    result is cast back to its buffer's dtype.

    Args:
        learning_rate: :math:`\gamma_k \ge 0`, a float or an optax schedule of the step count.
        alpha: friction :math:`\alpha > 0`.
        beta: Newtonian damping :math:`\beta > 0`.
        initial_speed: :math:`s \ge 0` in :math:`\dot\theta(0) = -s \hat g_0`; ``None``
            (default) means :math:`s = \beta`, i.e. :math:`\psi_0 = (1 - \alpha\beta)\theta_0`.
        weight_decay: coupled decay :math:`\lambda \ge 0`, scaled by :math:`\gamma_k`,
            entering the :math:`\theta` step only (authors' INNA code).
        decoupled_weight_decay: decay :math:`\mu \ge 0` applied as
            :math:`\theta \leftarrow (1 - \gamma_k\mu)\theta` before the step (INNAprop code).
        rms_decay: ``None`` (no scaling) or :math:`\sigma \in [0, 1)`, the decay of the
            squared-gradient average (INNAprop's ``sigma``).
        rms_eps: :math:`\varepsilon \ge 0`, added outside the square root.
        psi_dtype: dtype of the state arrays (:math:`z = \psi - \theta`, and :math:`v`),
            e.g. ``jnp.float32`` for bf16 parameters. ``None`` keeps each parameter's dtype.

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs ``params`` and
        ignores extra keyword arguments; its state is an :class:`inna_jax.InnaState`.

    Raises:
        ValueError: for a hyperparameter that is not a real number, a concrete
            :math:`\alpha \le 0` or :math:`\beta \le 0`, a negative or non-finite learning
            rate, a negative initial speed, weight decay or :math:`\varepsilon`, a
            :math:`\sigma` outside :math:`[0, 1)`; at ``update`` time when ``params`` is
            missing or when a link follows INNA in an ``optax.chain``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import inna_jax
        >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
        >>> tx = optax.chain(
        ...     optax.clip_by_global_norm(1.0),  # acts on the gradient, before INNA
        ...     inna_jax.scale_by_inna(0.1, alpha=0.5, beta=0.1),
        ... )
        >>> params = jnp.zeros(2)
        >>> state = tx.init(params)
        >>> for _ in range(500):
        ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
        ...     params = optax.apply_updates(params, updates)
        >>> [round(float(p), 3) for p in params]
        [3.0, 3.0]

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 2 and Algorithm 1 (INDIAN). Bolte, Boustany, Pauwels, Purica,
        "A second-order-like optimizer with adaptive gradient scaling for deep learning",
        arXiv:2410.05871 (2024), Section 2 (RMS scaling, decoupled weight decay).
    """
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    if initial_speed is not None:
        check_nonnegative("initial_speed", initial_speed)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("decoupled_weight_decay", decoupled_weight_decay)
    rms = rms_decay is not None
    if rms:
        check_in_range("rms_decay", rms_decay, 0.0, 1.0)
    check_nonnegative("rms_eps", rms_eps)
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

        def v0(t):
            return (
                None
                if t is None
                else jnp.zeros(t.shape, t.dtype if psi_dtype is None else psi_dtype)
            )

        z = jax.tree.map(z0, params, is_leaf=is_none)
        nu = jax.tree.map(v0, params, is_leaf=is_none) if rms else None
        return InnaState(count=jnp.zeros([], jnp.int32), psi_minus_theta=z, nu=nu)

    def update_fn(updates, state: InnaState, params=None, **extra_args):
        del extra_args  # INNA uses the gradient only
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        _check_last_in_chains()
        if callable(learning_rate):
            # optax's schedules mix the int32 count with floats, which strict promotion refuses
            with jax.numpy_dtype_promotion("standard"):
                lr = learning_rate(state.count)
        else:
            lr = learning_rate
        speed = beta if initial_speed is None else initial_speed
        first = state.count == 0

        def leaf(g, t, z, v=None):
            if g is None or t is None:
                return None
            dtype = compute_dtype(t, z, g, *([] if v is None else [v]), _F32)
            hyper = (lr, alpha, beta, speed, weight_decay, decoupled_weight_decay)
            c, a, b, s, lam, mu = (jnp.asarray(h, dtype) for h in hyper)
            # Scalar coefficients of the step written in z = psi - theta (see the docstring):
            #   z'     = z + coef_g_z ghat + c (mu + lam (1 - c mu)) theta
            #   theta' = theta + (A - 1) theta + B z' + E ghat
            z_theta = c * (mu + lam * (1 - c * mu))
            a_minus_1 = -c * (a + lam) + c * c * lam / b
            a_minus_1 = a_minus_1 - c * mu * (1 + a_minus_1)
            coef_z, coef_g = -c / b, c * (c - b)
            # at the first update, z holds -alpha beta theta_0: add beta (s - beta) ghat_0
            coef_g_z = c * b + jnp.where(first, b * (s - b), jnp.zeros((), dtype))
            tc, g = t.astype(dtype), g.astype(dtype)
            if v is None:
                z_term, theta_term, v_next = coef_g_z * g, coef_g * g, None
            else:
                sigma, eps = jnp.asarray(rms_decay, dtype), jnp.asarray(rms_eps, dtype)
                v_next = sigma * v.astype(dtype) + (1 - sigma) * (g * g)
                correction = 1 - sigma ** (state.count + 1).astype(dtype)
                # ghat = g / (sqrt(v') / sqrt(correction) + eps), written twice on purpose
                z_term = g * (coef_g_z / (jnp.sqrt(v_next) / jnp.sqrt(correction) + eps))
                theta_term = g * (coef_g / (jnp.sqrt(v_next / correction) + eps))
                v_next = v_next.astype(v.dtype)
            z_next = z.astype(dtype) + z_term
            if not no_decay:
                z_next = z_next + z_theta * tc
            update = a_minus_1 * tc + coef_z * z_next + theta_term
            return update.astype(t.dtype), z_next.astype(z.dtype), v_next

        if rms:
            triples = jax.tree.map(
                lambda g, t, z, v: None if g is None or t is None else _Triple(*leaf(g, t, z, v)),
                updates,
                params,
                state.psi_minus_theta,
                state.nu,
                is_leaf=is_none,
            )
            is_triple = lambda x: isinstance(x, _Triple)
            pick = lambda i: jax.tree.map(
                lambda x: None if x is None else x[i], triples, is_leaf=is_triple
            )
            new_updates, new_z, new_nu = pick(0), pick(1), pick(2)
            new_nu = _keep_missing(new_nu, state.nu)
        else:
            pairs = jax.tree.map(
                lambda g, t, z: None if g is None or t is None else Pair(*leaf(g, t, z)[:2]),
                updates,
                params,
                state.psi_minus_theta,
                is_leaf=is_none,
            )
            new_updates, new_z = unzip(pairs)
            new_nu = None
        new_z = _keep_missing(new_z, state.psi_minus_theta)
        count = optax.safe_int32_increment(state.count)
        return new_updates, InnaState(count=count, psi_minus_theta=new_z, nu=new_nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# a dtype carrier for compute_dtype: the arithmetic runs in at least float32
_F32 = np.zeros((), np.float32)


class _Triple(NamedTuple):
    """Three per-leaf results (update, z, v), split after the tree map."""

    update: Any
    z: Any
    v: Any


def _keep_missing(new_z, old_z):
    """Keeps the old state leaf where the gradient was ``None`` (frozen parameters)."""
    return jax.tree.map(lambda new, old: old if new is None else new, new_z, old_z, is_leaf=is_none)
