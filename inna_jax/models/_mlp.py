"""A multilayer perceptron in Flax NNX."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
    """A fully connected network: ``in_features -> hidden... -> out_features``.

    Args:
        in_features: input size (inputs are flattened after the batch axis).
        hidden: sizes of the hidden layers, e.g. ``(32, 64, 32)`` as in the EGN paper.
        out_features: output size (classes, or 1 for scalar regression).
        activation: elementwise nonlinearity between layers.
        rngs: Flax NNX random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from inna_jax.models import MLP
        >>> model = MLP(64, (32,), 10, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((5, 64))).shape
        (5, 10)
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: Callable[[jax.Array], jax.Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden, out_features]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)
