r"""Per-example losses for Gauss-Newton methods, with their output gradient and Hessian root.

For a batch of ``b`` outputs :math:`f_i \in \mathbb{R}^C` and targets :math:`y_i` the batch loss
is :math:`L = (1/b) \sum_i \ell(f_i, y_i)`. A Gauss-Newton method needs, per example,

* the loss :math:`\ell(f_i, y_i)`,
* its gradient :math:`r'_i = \partial \ell / \partial f_i`,
* a square root :math:`S_i` of its Hessian,
  :math:`Q_i = \partial^2 \ell / \partial f_i^2 = S_i S_i^\top`,
* a vector :math:`w_i` with :math:`S_i w_i = r'_i`, so that the gradient lies in the range
  of the curvature (true for the three losses below) and the Woodbury solve needs no
  subtraction (see :func:`inna_jax.egn_direction`).

* ``"mse"``: :math:`\ell = \tfrac12\|f - y\|^2`, :math:`Q = S = I`, :math:`w = f - y`.
* ``"cross_entropy"`` (softmax :math:`p`, target distribution :math:`t`):
  :math:`\ell = -\sum_k t_k \log p_k`, :math:`Q = \mathrm{diag}(p) - pp^\top`,
  :math:`S = \mathrm{diag}(\sqrt p) - p\sqrt p^\top`, :math:`w = -t / \sqrt p`.
* ``"binary_cross_entropy"`` (one logit :math:`f`, :math:`p = \sigma(f)`):
  :math:`\ell = \log(1 + e^f) - yf`, :math:`Q = p(1-p)`, :math:`S = \sqrt{p(1-p)}`,
  :math:`w = (1-y)e^{f/2} - y e^{-f/2}`.

For cross-entropy, :math:`SS^\top = \mathrm{diag}(p) - 2pp^\top + p(\textstyle\sum_k p_k)p^\top = Q`
since :math:`\sum_k p_k = 1`, and :math:`S(-t/\sqrt p) = -t + p \sum_k t_k = p - t`.
:math:`Q` has rank :math:`C - 1` (:math:`S\sqrt p = 0`), so the root can drop a column: with
the Householder reflection :math:`H = I - 2vv^\top/(v^\top v)`, :math:`v = \sqrt p + e_C`
(:math:`H\sqrt p = -e_C`), the last column of :math:`SH` is :math:`-S\sqrt p = 0`, and the
*reduced* root :math:`S' = (SH)_{:, 1..C-1}` with :math:`w' = (Hw)_{1..C-1}` still gives
:math:`S'S'^\top = Q` and :math:`S'w' = r'`. EGN's batch-space system then has size
:math:`b(C-1)` instead of :math:`bC`.
To keep :math:`w` finite, log-probabilities (cross-entropy) and logits (binary) enter its
exponentials clipped at the log of the smallest normal number (-87 in float32, -708 in
float64): only an example whose true class has probability below that is affected.
Cross-entropy targets are integer labels of shape ``(b,)`` or probability vectors ``(b, C)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")


class LossTerms(NamedTuple):
    """Per-example Gauss-Newton pieces of a loss, outputs flattened to shape ``(b, C)``.

    Attributes:
        loss: per-example losses, shape ``(b,)``.
        residual: :math:`r'`, the gradient of each loss in its outputs, shape ``(b, C)``.
        sqrt_hessian: :math:`S` with :math:`Q = SS^\\top`, shape ``(b, C, m)`` (``m = C``, or
            ``C - 1`` for the reduced cross-entropy root).
        root_residual: :math:`w` with :math:`S w = r'`, shape ``(b, m)``.
    """

    loss: jax.Array
    residual: jax.Array
    sqrt_hessian: jax.Array
    root_residual: jax.Array


def _log_tiny(dtype: Any) -> float:
    """log of the smallest normal number: exponents are clipped there so ``w`` stays finite."""
    return math.log(float(jnp.finfo(dtype).tiny))


def check_loss(loss: str) -> None:
    """Raises ``ValueError`` unless ``loss`` is one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(map(repr, LOSSES))}")


def _concrete(x: jax.Array) -> np.ndarray | None:
    """``x`` as a NumPy array when it is known in Python (not traced), else ``None``."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def as_matrix(outputs: jax.Array, targets: jax.Array, loss: str) -> tuple[jax.Array, jax.Array]:
    """Checks shapes and returns outputs as ``(b, C)`` and targets in the matching layout.

    ``mse``: outputs ``(b,)`` or ``(b, C)``, targets of the same shape (``(b,)`` also accepted
    for outputs ``(b, 1)``). ``cross_entropy``: outputs ``(b, C)`` with ``C >= 2``, targets
    integer labels ``(b,)`` in ``[0, C)`` (returned one-hot) or probabilities ``(b, C)``.
    ``binary_cross_entropy``: outputs ``(b,)`` or ``(b, 1)`` logits, targets of ``b`` values
    in [0, 1].

    Labels are checked against ``[0, C)`` when they are concrete. Traced labels (inside
    ``jit``) cannot be checked: an out-of-range label gives that example a NaN target row,
    hence a NaN loss, and the Gauss-Newton optimizers skip such a step (zero update, state
    unchanged).

    Raises:
        ValueError: for an unknown loss, mismatched shapes, float labels for cross-entropy,
            or concrete labels out of range.
    """
    check_loss(loss)
    outputs = jnp.asarray(outputs)
    targets = jnp.asarray(targets)
    if outputs.ndim not in (1, 2):
        raise ValueError(
            f"predict_fn must return outputs of shape (b,) or (b, C), got shape {outputs.shape}"
        )
    b = outputs.shape[0]
    mismatch = ValueError(
        f"loss={loss!r}: outputs of shape {outputs.shape} do not match targets of shape "
        f"{targets.shape}"
    )
    if targets.ndim == 0 or targets.shape[0] != b:
        raise mismatch
    if loss == "cross_entropy":
        if outputs.ndim != 2 or outputs.shape[1] < 2:
            raise ValueError(
                "loss='cross_entropy' needs outputs of shape (b, C) with C >= 2 logits, got "
                f"shape {outputs.shape}; use 'binary_cross_entropy' for one logit"
            )
        num_classes = outputs.shape[1]
        if targets.shape == (b,):
            if not jnp.issubdtype(targets.dtype, jnp.integer):
                raise ValueError(
                    "loss='cross_entropy': targets must be integer class labels of shape (b,) "
                    f"or class probabilities of shape (b, C), got {targets.dtype} targets of "
                    f"shape {targets.shape}"
                )
            labels = _concrete(targets)
            if (
                labels is not None
                and labels.size
                and (labels.min() < 0 or labels.max() >= num_classes)
            ):
                raise ValueError(
                    f"loss='cross_entropy': labels must be in [0, {num_classes}), got labels "
                    f"from {labels.min()} to {labels.max()}"
                )
            one_hot = jax.nn.one_hot(targets, num_classes, dtype=outputs.dtype)
            if labels is not None:
                return outputs, one_hot
            valid = (targets >= 0) & (targets < num_classes)
            return outputs, jnp.where(valid[:, None], one_hot, jnp.nan)
        if targets.shape == outputs.shape:
            return outputs, targets.astype(outputs.dtype)
        raise mismatch
    if loss == "binary_cross_entropy":
        if outputs.shape not in ((b,), (b, 1)) or targets.shape not in ((b,), (b, 1)):
            raise mismatch
        return outputs.reshape(b, 1), targets.reshape(b, 1).astype(outputs.dtype)
    # mse
    if outputs.shape == targets.shape:
        return outputs.reshape(b, -1), targets.reshape(b, -1).astype(outputs.dtype)
    if outputs.shape == (b, 1) and targets.shape == (b,):
        return outputs, targets.reshape(b, 1).astype(outputs.dtype)
    raise mismatch


def _householder(sqrt_p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``v = sqrt(p) + e_C`` and ``v.v`` per example (``H sqrt(p) = -e_C``)."""
    v = sqrt_p.at[..., -1].add(1.0)
    return v, jnp.sum(v * v, axis=-1)


def hessian_root(outputs: jax.Array, loss: str, *, reduced: bool = False) -> jax.Array:
    """:math:`S` with :math:`SS^\\top = Q`, from the outputs alone: ``(b, C, m)``.

    Args:
        outputs: ``(b, C)`` model outputs.
        loss: one of :data:`LOSSES`.
        reduced: for cross-entropy, the ``C - 1``-column root (see the module docstring).
    """
    b, c = outputs.shape
    if loss == "mse":
        return jnp.broadcast_to(jnp.eye(c, dtype=outputs.dtype), (b, c, c))
    if loss == "binary_cross_entropy":
        f = outputs
        return jnp.sqrt(jax.nn.sigmoid(f) * jax.nn.sigmoid(-f))[:, :, None]
    logp = jax.nn.log_softmax(outputs, axis=1)
    p = jnp.exp(logp)
    sqrt_p = jnp.exp(0.5 * logp)
    s = jax.vmap(jnp.diag)(sqrt_p) - p[:, :, None] * sqrt_p[:, None, :]
    if not reduced:
        return s
    v, vv = _householder(sqrt_p)
    sv = jnp.sum(s * v[:, None, :], axis=2)  # S v, (b, C)
    return s[:, :, : c - 1] - (2.0 / vv)[:, None, None] * sv[:, :, None] * v[:, None, : c - 1]


def loss_terms(
    outputs: jax.Array, targets: jax.Array, loss: str, *, reduced: bool = False
) -> LossTerms:
    """Per-example loss, gradient :math:`r'`, Hessian root :math:`S` and :math:`w = S^{-1}r'`.

    Args:
        outputs: ``(b, C)`` model outputs (logits for the cross-entropies).
        targets: targets in the layout returned by :func:`as_matrix`.
        loss: one of :data:`LOSSES`.
        reduced: for cross-entropy, the ``C - 1``-column root and its :math:`w'`.

    Returns:
        A :class:`LossTerms`.
    """
    s = hessian_root(outputs, loss, reduced=reduced)
    if loss == "mse":
        r = outputs - targets
        return LossTerms(0.5 * jnp.sum(r**2, axis=1), r, s, r)
    if loss == "cross_entropy":
        c = outputs.shape[1]
        logp = jax.nn.log_softmax(outputs, axis=1)
        p = jnp.exp(logp)
        loss_i = -jnp.sum(targets * logp, axis=1)
        r = p - targets
        w = -targets * jnp.exp(-0.5 * jnp.maximum(logp, _log_tiny(logp.dtype)))
        if reduced:
            v, vv = _householder(jnp.exp(0.5 * logp))
            w = w[:, : c - 1] - (2.0 * jnp.sum(v * w, axis=1) / vv)[:, None] * v[:, : c - 1]
        return LossTerms(loss_i, r, s, w)
    # binary cross-entropy on logits
    f, y = outputs, targets
    p = jax.nn.sigmoid(f)
    loss_i = jnp.sum(jax.nn.softplus(f) - y * f, axis=1)
    r = p - y
    fc = jnp.clip(f, _log_tiny(f.dtype), -_log_tiny(f.dtype))
    w = (1 - y) * jnp.exp(0.5 * fc) - y * jnp.exp(-0.5 * fc)
    return LossTerms(loss_i, r, s, w)


def mean_loss(outputs: jax.Array, targets: jax.Array, loss: str) -> jax.Array:
    """The batch loss :math:`(1/b)\\sum_i \\ell(f_i, y_i)` (arguments as in :func:`loss_terms`)."""
    if loss == "mse":
        return jnp.mean(0.5 * jnp.sum((outputs - targets) ** 2, axis=1))
    if loss == "cross_entropy":
        return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(outputs, axis=1), axis=1))
    return jnp.mean(jnp.sum(jax.nn.softplus(outputs) - targets * outputs, axis=1))
