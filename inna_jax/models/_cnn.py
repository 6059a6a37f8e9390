"""A small convolutional network for small images (8x8 digits) and 1-D signals (mnist1d)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx


class SmallCNN(nnx.Module):
    r"""Two convolutions and a linear read-out, for 8x8 digits or length-40 mnist1d signals.

    Inputs may come flat (as :func:`~inna_jax.data.load_digits` and
    :func:`~inna_jax.data.load_mnist1d` give them); they are reshaped to
    ``(batch, *input_shape)``, channels last. The spatial rank is ``len(input_shape) - 1``:
    ``(8, 8, 1)`` gives 2-D convolutions, ``(40, 1)`` 1-D ones. The layers are

        conv k: ``channels[0]`` → ReLU → conv k, stride 2: ``channels[1]`` → ReLU
        → flatten → linear: ``num_classes``

    with "SAME" padding. With the defaults on ``(8, 8, 1)`` the model has 9,930 parameters,
    and on ``(40, 1)`` 8,042.

    Args:
        input_shape: shape of one example, channels last, e.g. ``(8, 8, 1)`` or ``(40, 1)``.
        num_classes: number of output logits.
        channels: channels of the two convolutions.
        kernel_size: size of every convolution kernel along each spatial axis.
        rngs: Flax NNX random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from inna_jax.models import SmallCNN, count_params
        >>> model = SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((5, 64))).shape, count_params(model)
        ((5, 10), 9930)

    References:
        Y. LeCun et al., "Gradient-based learning applied to document recognition", 1998.
        S. Greydanus, "Scaling down deep learning" (mnist1d), arXiv 2011.14439, 2020.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        rngs: nnx.Rngs,
    ):
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) not in (2, 3) or min(input_shape) < 1:
            raise ValueError(
                "input_shape must be (length, channels) or (height, width, channels) with "
                f"positive sizes, got input_shape={input_shape}"
            )
        if len(channels) != 2:
            raise ValueError(f"channels must hold 2 sizes, got channels={tuple(channels)}")
        rank = len(input_shape) - 1
        k = (kernel_size,) * rank
        c0, c1 = (int(c) for c in channels)
        self.input_shape = input_shape
        self.conv1 = nnx.Conv(input_shape[-1], c0, k, padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(c0, c1, k, strides=(2,) * rank, padding="SAME", rngs=rngs)
        spatial = 1
        for s in input_shape[:-1]:
            spatial *= -(-s // 2)
        self.head = nnx.Linear(spatial * c1, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of shape ``(batch, num_classes)``."""
        x = x.reshape(x.shape[0], *self.input_shape)
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        return self.head(x.reshape(x.shape[0], -1))


def count_params(model: nnx.Module) -> int:
    """The number of trainable scalars (``nnx.Param`` leaves) of a Flax NNX module.

    Example:
        >>> from flax import nnx
        >>> from inna_jax.models import MLP, count_params
        >>> count_params(MLP(4, (3,), 2, rngs=nnx.Rngs(0)))  # 4*3+3 + 3*2+2
        23
    """
    params = nnx.state(model, nnx.Param)
    return int(sum(leaf.size for leaf in jax.tree.leaves(params)))
