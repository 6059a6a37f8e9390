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
To keep :math:`w` finite, log-probabilities (cross-entropy) and logits (binary) enter its
exponentials clipped at the log of the smallest normal number (-87 in float32, -708 in
float64): only an example whose true class has probability below that is affected.
Cross-entropy targets are integer labels of shape ``(b,)`` or probability vectors ``(b, C)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")


class LossTerms(NamedTuple):
    """Per-example Gauss-Newton pieces of a loss, outputs flattened to shape ``(b, C)``.

    Attributes:
        loss: per-example losses, shape ``(b,)``.
        residual: :math:`r'`, the gradient of each loss in its outputs, shape ``(b, C)``.
        sqrt_hessian: :math:`S` with :math:`Q = SS^\\top`, shape ``(b, C, C)``.
        root_residual: :math:`w` with :math:`S w = r'`, shape ``(b, C)``.
    """

    loss: jax.Array
    residual: jax.Array
    sqrt_hessian: jax.Array
    root_residual: jax.Array


def _log_tiny(dtype) -> float:
    """log of the smallest normal number: exponents are clipped there so ``w`` stays finite."""
    return math.log(float(jnp.finfo(dtype).tiny))


def check_loss(loss: str) -> None:
    """Raises ``ValueError`` unless ``loss`` is one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(map(repr, LOSSES))}")


def as_matrix(outputs: jax.Array, targets: jax.Array, loss: str) -> tuple[jax.Array, jax.Array]:
    """Checks shapes and returns outputs as ``(b, C)`` and targets in the matching layout.

    ``mse``: outputs ``(b,)`` or ``(b, C)``, targets of the same shape (``(b,)`` also accepted
    for outputs ``(b, 1)``). ``cross_entropy``: outputs ``(b, C)`` with ``C >= 2``, targets
    integer labels ``(b,)`` (returned one-hot) or probabilities ``(b, C)``.
    ``binary_cross_entropy``: outputs ``(b,)`` or ``(b, 1)`` logits, targets of ``b`` values in
    [0, 1].

    Raises:
        ValueError: for an unknown loss or mismatched shapes.
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
        if targets.shape == (b,) and jnp.issubdtype(targets.dtype, jnp.integer):
            return outputs, jax.nn.one_hot(targets, num_classes, dtype=outputs.dtype)
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


def loss_terms(outputs: jax.Array, targets: jax.Array, loss: str) -> LossTerms:
    """Per-example loss, gradient :math:`r'`, Hessian root :math:`S` and :math:`w = S^{-1}r'`.

    Args:
        outputs: ``(b, C)`` model outputs (logits for the cross-entropies).
        targets: targets in the layout returned by :func:`as_matrix`.
        loss: one of :data:`LOSSES`.

    Returns:
        A :class:`LossTerms`.
    """
    b, c = outputs.shape
    if loss == "mse":
        r = outputs - targets
        eye = jnp.broadcast_to(jnp.eye(c, dtype=outputs.dtype), (b, c, c))
        return LossTerms(0.5 * jnp.sum(r**2, axis=1), r, eye, r)
    if loss == "cross_entropy":
        logp = jax.nn.log_softmax(outputs, axis=1)
        p = jnp.exp(logp)
        sqrt_p = jnp.exp(0.5 * logp)
        loss_i = -jnp.sum(targets * logp, axis=1)
        r = p - targets
        s = jax.vmap(jnp.diag)(sqrt_p) - p[:, :, None] * sqrt_p[:, None, :]
        w = -targets * jnp.exp(-0.5 * jnp.maximum(logp, _log_tiny(logp.dtype)))
        return LossTerms(loss_i, r, s, w)
    # binary cross-entropy on logits
    f, y = outputs, targets
    p = jax.nn.sigmoid(f)
    loss_i = jnp.sum(jax.nn.softplus(f) - y * f, axis=1)
    r = p - y
    s = jnp.sqrt(jax.nn.sigmoid(f) * jax.nn.sigmoid(-f))[:, :, None]
    fc = jnp.clip(f, _log_tiny(f.dtype), -_log_tiny(f.dtype))
    w = (1 - y) * jnp.exp(0.5 * fc) - y * jnp.exp(-0.5 * fc)
    return LossTerms(loss_i, r, s, w)


def mean_loss(outputs: jax.Array, targets: jax.Array, loss: str) -> jax.Array:
    """The batch loss :math:`(1/b)\\sum_i \\ell(f_i, y_i)` (arguments as in :func:`loss_terms`)."""
    return jnp.mean(loss_terms(outputs, targets, loss).loss)
