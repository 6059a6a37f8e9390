r"""Training losses and evaluation metrics, per example, so that padded batches can be masked.

With outputs :math:`f_i` and targets :math:`y_i` over a batch of :math:`b` examples:

- ``"cross_entropy"``: :math:`\frac1b\sum_i -\log \mathrm{softmax}(f_i)_{y_i}` (integer labels);
- ``"mse"``: :math:`\frac1b\sum_i \tfrac12\lVert f_i - y_i\rVert^2` (the ½ makes the output
  Hessian the identity, as in the Gauss-Newton convention of EGN);
- ``"binary_cross_entropy"``: :math:`\frac1b\sum_i -y_i\log\sigma(f_i)-(1-y_i)\log(1-\sigma(f_i))`
  with a single logit per example.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")

PerExample = Callable[[jax.Array, jax.Array], jax.Array]


def _squeeze_scalar_outputs(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Drops a trailing axis of size 1 when the targets have one axis fewer."""
    if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
        return outputs[..., 0]
    return outputs


def _cross_entropy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(outputs, targets.astype(jnp.int32))


def _mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    outputs = _squeeze_scalar_outputs(outputs, targets)
    sq = 0.5 * jnp.square(outputs - targets.astype(outputs.dtype))
    return sq.reshape(sq.shape[0], -1).sum(axis=1)


def _binary_cross_entropy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    outputs = _squeeze_scalar_outputs(outputs, targets)
    bce = optax.sigmoid_binary_cross_entropy(outputs, targets.astype(outputs.dtype))
    return bce.reshape(bce.shape[0], -1).sum(axis=1)


_PER_EXAMPLE: dict[str, PerExample] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "binary_cross_entropy": _binary_cross_entropy,
}


def per_example_loss(loss: str | Callable[[jax.Array, jax.Array], jax.Array]) -> PerExample:
    """The per-example form of ``loss``: a map ``(outputs, targets) -> (b,)``.

    Args:
        loss: one of :data:`LOSSES`, or a callable ``(outputs, targets) -> scalar`` giving the
            batch mean; its per-example form applies it to batches of one.

    Raises:
        ValueError: for an unknown loss name.
    """
    if callable(loss):

        def one(o: jax.Array, t: jax.Array) -> jax.Array:
            return jnp.asarray(loss(o[None], t[None]))

        return jax.vmap(one)
    if loss not in _PER_EXAMPLE:
        raise ValueError(f"loss must be one of {LOSSES} or a callable, got loss={loss!r}")
    return _PER_EXAMPLE[loss]


def mean_loss(loss: str | Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """The batch-mean training loss ``(outputs, targets) -> scalar``.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.train._losses import mean_loss
        >>> round(float(mean_loss("mse")(jnp.array([[1.0], [3.0]]), jnp.array([0.0, 1.0]))), 4)
        1.25
    """
    if callable(loss):
        return loss
    per_example = per_example_loss(loss)
    return lambda outputs, targets: jnp.mean(per_example(outputs, targets))


def correct(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example 0/1 correctness: argmax for several logits, sign for a single logit."""
    outputs = _squeeze_scalar_outputs(outputs, targets)
    if outputs.ndim == targets.ndim + 1:
        pred = jnp.argmax(outputs, axis=-1)
    else:
        pred = (outputs > 0).astype(jnp.int32)
    return (pred == targets.astype(pred.dtype)).astype(jnp.float32)


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example squared error :math:`\\lVert f_i - y_i\\rVert^2` (for the RMSE)."""
    outputs = _squeeze_scalar_outputs(outputs, targets)
    sq = jnp.square(outputs - targets.astype(outputs.dtype))
    return sq.reshape(sq.shape[0], -1).sum(axis=1)
