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
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from inna_jax._leafwise import Pair, compute_dtype, is_none, unzip
from inna_jax._validation import (
    as_float_arrays,
    check_in_range,
    check_nonnegative,
    check_positive,
    check_schedule_value,
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


class _Link(NamedTuple):
    """The link a chain's update is calling, and what is needed to trace the links after it."""

    position: int  # 1-based; 0 when the link is not found
    length: int
    updates: Any  # the vector the current link receives
    tail: Callable[[Any], Any]  # the links after it, as a function of the vector


def _chain_link(local: dict) -> _Link | None:
    """The link an ``optax.chain`` update is calling, from its locals."""
    fns, fn = local.get("update_fns"), local.get("fn")
    if fns is None or fn is None:
        return None
    position = next((i for i, f in enumerate(fns) if f is fn), -1) + 1
    states, params, extra = local.get("state"), local.get("params"), local.get("extra_args", {})
    if states is None:
        return None

    def tail(updates):
        for s, f in zip(states[position:], fns[position:], strict=True):
            updates, _ = f(updates, s, params, **extra)
        return updates

    return _Link(position, len(fns), local.get("updates"), tail)


def _named_chain_link(local: dict) -> _Link | None:
    """The link an ``optax.named_chain`` update is calling."""
    transforms, name = local.get("transforms"), local.get("name")
    if transforms is None or name is None:
        return None
    names = [n for n, _ in transforms]
    position = names.index(name) + 1 if name in names else 0
    states, params, extra = local.get("state"), local.get("params"), local.get("extra_args", {})
    if states is None:
        return None

    def tail(updates):
        for n, tx in transforms[position:]:
            updates, _ = tx.update(updates, states[n], params, **extra)
        return updates

    return _Link(position, len(names), local.get("updates"), tail)


# The code objects of the update functions of every optax.chain and optax.named_chain (one
# code object, one closure per chain), and how to read the link being called from the locals.
_CHAINS = {
    optax.chain(optax.identity()).update.__code__: _chain_link,
    optax.named_chain(("link", optax.identity())).update.__code__: _named_chain_link,
}

_NOT_LAST_MSG = (
    "inna_jax: an INNA-family optimizer (inna, transform, innaprop, scale_by_inna) must be the "
    "last link of an optax.chain, or every later link must leave its parameters untouched, but "
    "it is link {position} of {length} here and a later link changes {leaf}: its learning "
    "rate also moves its auxiliary variable psi, so a link after it would change the step "
    "without changing psi; put gradient transformations (clipping, scaling) before it, and to "
    "give INNA some parameters and another optimizer the others write "
    "optax.multi_transform({{'inna': inna_jax.inna(...), 'other': optax.adam(...)}}, "
    "param_labels)"
)

# Set while the links after INNA are traced by the check, so that an INNA among them does not
# start a check of its own.
_CHECKING = threading.local()


def _first_touched(link: _Link, owned: list) -> str | None:
    """The first of INNA's leaves (key paths in the vector ``link.updates``) that the links
    after it change, ``"its parameters"`` when that cannot be told, or ``None`` when they
    all pass through untouched.

    The later links are traced once with ``jax.make_jaxpr`` on the shapes of the vector: a
    leaf is untouched when the traced output *is* the input variable (``optax.masked``
    passes its masked-out leaves through this way). A leaf that is recomputed, even to the
    same value (``optax.scale(1.0)``), counts as changed.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(link.updates)
    index = {path: i for i, (path, _) in enumerate(flat)}
    if not all(path in index for path in owned):
        return "its parameters"  # INNA's vector is not a masked view of the chain's
    shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), link.updates
    )
    _CHECKING.active = True
    try:
        closed, out_shapes = jax.make_jaxpr(link.tail, return_shape=True)(shapes)
    finally:
        _CHECKING.active = False
    if jax.tree.structure(out_shapes) != jax.tree.structure(shapes):
        return "its parameters"
    invars, outvars = closed.jaxpr.invars, closed.jaxpr.outvars
    for path in owned:
        i = index[path]
        if outvars[i] is not invars[i]:
            return "updates" + jax.tree_util.keystr(path)
    return None


def _check_last_in_chains(inna_updates: Any) -> None:
    """Refuses an INNA update inside an ``optax.chain`` link whose later links change INNA's
    leaves.

    Walks up the Python stack; in each frame of an ``optax.chain`` or ``optax.named_chain``
    update whose link being called is not the last one, it traces the later links (see
    :func:`_first_touched`) and requires them to pass INNA's leaves (``inna_updates``, the
    update INNA computed, whose key paths are those of the chain's vector less the leaves
    an ``optax.masked`` hid from INNA) through unchanged. This runs when ``update`` is
    traced (once under ``jit``) or called eagerly, and costs nothing in the compiled step;
    the later links are traced only when INNA is not the last link. It reads the chain's
    loop variables (optax 0.2.x: ``fn``, ``update_fns``, ``state``, ``params``,
    ``extra_args``, ``updates``; ``name`` and ``transforms`` for ``named_chain``); where
    they are absent it passes silently, and ``tests/test_optimizers.py``
    (``test_a_link_after_inna_is_refused``) fails.
    """
    if getattr(_CHECKING, "active", False):
        return
    frame = inspect.currentframe()
    owned = None
    try:
        while frame is not None:
            read = _CHAINS.get(frame.f_code)
            link = None if read is None else read(frame.f_locals)
            if link is not None and link.position != link.length:
                if owned is None:
                    owned = [
                        path for path, _ in jax.tree_util.tree_flatten_with_path(inna_updates)[0]
                    ]
                leaf = _first_touched(link, owned)
                if leaf is not None:
                    raise ValueError(
                        _NOT_LAST_MSG.format(position=link.position, length=link.length, leaf=leaf)
                    )
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
    one, or every later link to leave INNA's parameters untouched. ``optax.chain(inna,
    optax.scale(0.5))`` raises a one-line ``ValueError`` at its first ``update``, also inside
    an outer chain or a wrapper; ``optax.MultiSteps``, ``optax.apply_if_finite``,
    ``optax.inject_hyperparams``, ``nnx.Optimizer`` and chains that end with INNA pass. A
    masked INNA beside another optimizer also passes, when the later links do not touch
    INNA's leaves: ``optax.chain(optax.masked(inna_jax.inna(0.1), {"w": True, "b": False}),
    optax.masked(optax.adam(1e-3), {"w": False, "b": True}))`` is the same optimizer, bit
    for bit, as ``optax.multi_transform({"inna": inna_jax.inna(0.1), "adam":
    optax.adam(1e-3)}, {"w": "inna", "b": "adam"})``, the
    spelling that the error message suggests when a later link does change INNA's leaves
    (here, overlapping masks). To tell, the check traces the later links with
    ``jax.make_jaxpr``, only when INNA is not the last link: once under ``jit``, and at each
    eager ``update`` (about 7 ms for a masked ``optax.adam``): a leaf passes when the later
    links hand it on as it is (what ``optax.masked`` does with the leaves it leaves out);
    one they recompute, even to the same value (``optax.scale(1.0)``), counts as changed.
    The check costs nothing in the compiled step. It does not see parameters changed outside
    ``optax.apply_updates`` (``params + 0.5 * updates``): a runtime check would have to read
    a parameter element in the step, and on XLA:CPU that read makes the donated in-place
    update copy whole buffers (measured at 1e6 parameters: 1.7x the step time for the read
    alone, 2.9x with the ``lax.cond`` that would raise).

    **What the parameters may be.** Floating-point arrays (bfloat16 to float64) and Python
    floats, which are taken as JAX's default float dtype (float32, or float64 with
    ``jax_enable_x64``), as ``optax.apply_updates`` returns them: ``tx.init({"w": 1.0})``
    works as with ``optax.adam``. Integer, bool and complex leaves are refused by name
    (``params['n'] of dtype int32``): INNA's step on an integer would be truncated to 0
    (optax's own optimizers return a float update that ``optax.apply_updates`` truncates
    back to the integer dtype). Keep such leaves out with ``optax.masked`` or a ``None``
    leaf. ``None`` leaves (frozen parameters) stay ``None``.

    **Schedules.** A learning-rate schedule's value is checked (finite and :math:`\ge 0`)
    where it is known: at ``init`` (its value at step 0) and at each ``update`` called
    outside ``jit`` (its value at the current count). Inside ``jit`` the value is traced and
    cannot be checked: a schedule that turns negative there runs gradient ascent.

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
            :math:`\sigma` outside :math:`[0, 1)`; a schedule value that is negative or not
            finite (at ``init``, and at ``update`` outside ``jit``); a parameter leaf that
            is not floating point (at ``init`` and ``update``); at ``update`` time when
            ``params`` is missing or when a link after INNA in an ``optax.chain`` changes
            INNA's leaves.

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
    _check_settings(
        learning_rate, alpha, beta, initial_speed, weight_decay, decoupled_weight_decay,
        rms_decay, rms_eps,
    )  # fmt: skip
    if psi_dtype is not None:
        psi_dtype = jax.dtypes.canonicalize_dtype(psi_dtype)
    rms = rms_decay is not None
    # With no weight decay given as a concrete 0 (the default), the state update does not
    # read theta: one array pass less per step. Traced decays take the general path.
    no_decay = concrete_float(weight_decay) == 0.0 and concrete_float(decoupled_weight_decay) == 0.0

    def init_fn(params: optax.Params) -> InnaState:
        params = as_float_arrays(params, "params", _FAMILY)
        if callable(learning_rate):
            check_schedule_value("learning_rate", _rate_at(learning_rate, 0), 0)
        z = jax.tree.map(lambda t: _initial_z(t, alpha, beta, psi_dtype), params, is_leaf=is_none)
        nu = jax.tree.map(lambda t: _zeros(t, psi_dtype), params, is_leaf=is_none) if rms else None
        return InnaState(count=jnp.zeros([], jnp.int32), psi_minus_theta=z, nu=nu)

    def update_fn(
        updates: optax.Updates,
        state: InnaState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, InnaState]:
        del extra_args  # INNA uses the gradient only
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        params = as_float_arrays(params, "params", _FAMILY)
        updates = jax.tree.map(
            lambda g: None if g is None else jnp.asarray(g), updates, is_leaf=is_none
        )
        if callable(learning_rate):
            lr = _rate_at(learning_rate, state.count)
            check_schedule_value("learning_rate", lr, state.count)
        else:
            lr = learning_rate
        step = _Step(
            hyper=(
                lr, alpha, beta, beta if initial_speed is None else initial_speed,
                weight_decay, decoupled_weight_decay,
            ),
            rms=None if rms_decay is None else (rms_decay, rms_eps),
            no_decay=no_decay,
            count=state.count,
        )  # fmt: skip
        new_updates, new_z, new_nu = _map_leaves(step, updates, params, state)
        _check_last_in_chains(new_updates)
        count = jnp.asarray(optax.safe_int32_increment(state.count))
        return new_updates, InnaState(count=count, psi_minus_theta=new_z, nu=new_nu)

    # optax types a state as a chex.ArrayTree, which a NamedTuple state is at run time
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]


def _check_settings(
    learning_rate: Any,
    alpha: Any,
    beta: Any,
    initial_speed: Any,
    weight_decay: Any,
    decoupled_weight_decay: Any,
    rms_decay: Any,
    rms_eps: Any,
) -> None:
    """Refuses, in one line each, the hyperparameters :func:`scale_by_inna` cannot take."""
    if not callable(learning_rate):
        check_nonnegative("learning_rate", learning_rate)
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    if initial_speed is not None:
        check_nonnegative("initial_speed", initial_speed)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative("decoupled_weight_decay", decoupled_weight_decay)
    if rms_decay is not None:
        check_in_range("rms_decay", rms_decay, 0.0, 1.0)
    check_nonnegative("rms_eps", rms_eps)


def _initial_z(t: Any, alpha: Any, beta: Any, psi_dtype: Any) -> Any:
    """The theta part of z_0 = psi_0 - theta_0 = -alpha beta theta_0 + beta (s - beta) g_0.

    The g_0 part, when s != beta, is added at the first update (:func:`_leaf_step`).
    """
    if t is None:
        return None
    dtype = t.dtype if psi_dtype is None else psi_dtype
    ab = jnp.asarray(alpha, dtype) * jnp.asarray(beta, dtype)
    return (-ab * t.astype(dtype)).astype(dtype)


def _zeros(t: Any, psi_dtype: Any) -> Any:
    """INNAprop's initial squared-gradient average v_0 = 0, in the state's dtype."""
    return None if t is None else jnp.zeros(t.shape, t.dtype if psi_dtype is None else psi_dtype)


class _Step(NamedTuple):
    """What one update needs besides the leaves.

    ``hyper`` is (learning rate at this step, alpha, beta, initial speed s, coupled decay
    lambda, decoupled decay mu); ``rms`` is (sigma, epsilon) for INNAprop's scaling, or
    ``None``; ``no_decay`` says both decays are a concrete 0; ``count`` is the step k.
    """

    hyper: tuple
    rms: tuple | None
    no_decay: bool
    count: Any


def _leaf_step(
    step: _Step, g: jax.Array, t: jax.Array, z: jax.Array, v: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """INNA's step on one leaf: (update theta' - theta, z' = psi' - theta', v').

    The arithmetic runs in the promoted dtype of the leaves and at least float32; each result
    is cast back to its buffer's dtype. The scalar coefficients are those of the step written
    in z = psi - theta (see :func:`scale_by_inna`):

        z'     = z + coef_g_z ghat + c (mu + lam (1 - c mu)) theta
        theta' = theta + (A - 1) theta + B z' + E ghat
    """
    dtype = compute_dtype(t, z, g, *([] if v is None else [v]), _F32)
    c, a, b, s, lam, mu = (jnp.asarray(h, dtype) for h in step.hyper)
    z_theta = c * (mu + lam * (1 - c * mu))
    a_minus_1 = -c * (a + lam) + c * c * lam / b
    a_minus_1 = a_minus_1 - c * mu * (1 + a_minus_1)
    coef_z, coef_g = -c / b, c * (c - b)
    # at the first update, z holds -alpha beta theta_0: add beta (s - beta) ghat_0
    coef_g_z = c * b + jnp.where(step.count == 0, b * (s - b), jnp.zeros((), dtype))
    tc, g = t.astype(dtype), g.astype(dtype)
    if v is None or step.rms is None:
        z_term, theta_term, v_next = coef_g_z * g, coef_g * g, None
    else:
        sigma, eps = (jnp.asarray(h, dtype) for h in step.rms)
        v_next = sigma * v.astype(dtype) + (1 - sigma) * (g * g)
        correction = 1 - sigma ** (step.count + 1).astype(dtype)
        # ghat = g / (sqrt(v') / sqrt(correction) + eps), written twice on purpose
        z_term = g * (coef_g_z / (jnp.sqrt(v_next) / jnp.sqrt(correction) + eps))
        theta_term = g * (coef_g / (jnp.sqrt(v_next / correction) + eps))
        v_next = v_next.astype(v.dtype)
    z_next = z.astype(dtype) + z_term
    if not step.no_decay:
        z_next = z_next + z_theta * tc
    update = a_minus_1 * tc + coef_z * z_next + theta_term
    return update.astype(t.dtype), z_next.astype(z.dtype), v_next


def _map_leaves(step: _Step, updates: Any, params: Any, state: InnaState) -> tuple[Any, Any, Any]:
    """:func:`_leaf_step` over the trees: (updates, z', v'), the old state kept where the
    gradient or the parameter is ``None`` (frozen parameters)."""
    if step.rms is not None:
        assert state.nu is not None  # init_fn gives rms a nu
        triples = jax.tree.map(
            lambda g, t, z, v: (
                None if g is None or t is None else _Triple(*_leaf_step(step, g, t, z, v))
            ),
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
        new_updates, new_z, new_nu = pick(0), pick(1), _keep_missing(pick(2), state.nu)
    else:
        pairs = jax.tree.map(
            lambda g, t, z: (
                None if g is None or t is None else Pair(*_leaf_step(step, g, t, z)[:2])
            ),
            updates,
            params,
            state.psi_minus_theta,
            is_leaf=is_none,
        )
        (new_updates, new_z), new_nu = unzip(pairs), None
    return new_updates, _keep_missing(new_z, state.psi_minus_theta), new_nu


_FAMILY = "the INNA family (inna, transform, innaprop, scale_by_inna)"


def _rate_at(schedule: Callable[[Any], Any], count: Any) -> Any:
    """``schedule(count)``; optax's schedules mix the int32 count with floats, which strict
    promotion refuses, so they run under the standard promotion."""
    with jax.numpy_dtype_promotion("standard"):
        return schedule(jnp.asarray(count, jnp.int32))


# a dtype carrier for compute_dtype: the arithmetic runs in at least float32
_F32 = np.zeros((), np.float32)


class _Triple(NamedTuple):
    """Three per-leaf results (update, z, v), split after the tree map."""

    update: Any
    z: Any
    v: Any


def _keep_missing(new_z: Any, old_z: Any) -> Any:
    """Keeps the old state leaf where the gradient was ``None`` (frozen parameters)."""
    return jax.tree.map(lambda new, old: old if new is None else new, new_z, old_z, is_leaf=is_none)
