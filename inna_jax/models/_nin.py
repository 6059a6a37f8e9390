"""Network-in-Network (Lin, Chen, Yan 2014) for 32x32x3 images, in Flax NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# (kernel size, output channels) of each convolution, block by block.
_BLOCKS = (
    ((5, 192), (1, 160), (1, 96)),
    ((5, 192), (1, 192), (1, 192)),
    ((3, 192), (1, 192)),
)


class NiN(nnx.Module):
    r"""Network-in-Network for CIFAR: three "mlpconv" blocks and global average pooling.

    Each mlpconv block is a spatial convolution followed by 1x1 convolutions (a small MLP
    slid over the image), all with ReLU and "SAME" padding:

    ====== ===================================== ===========================
    block  convolutions (kernel: channels)        then
    ====== ===================================== ===========================
    1      5x5: 192, 1x1: 160, 1x1: 96            3x3 max-pool, stride 2
    2      5x5: 192, 1x1: 192, 1x1: 192           3x3 average-pool, stride 2 (*)
    3      3x3: 192, 1x1: 192, 1x1: ``num_classes``  global average pool
    ====== ===================================== ===========================

    (*) Pooling windows overlapping the border average only the real pixels (padding not
    counted), as Keras and ``count_include_pad=False`` do.

    The last 1x1 convolution has no ReLU: its channel averages are the logits. With
    ``num_classes=100`` (CIFAR-100, the INNA paper's Figure 2) the model has **984,356**
    parameters, "about 1e6" as in the paper; with 10 classes it has 966,986. Dropout
    between blocks (as in the original NiN) is off by default; when on, it follows the
    module's ``train()``/``eval()`` mode.

    Args:
        num_classes: number of output logits.
        in_channels: channels of the NHWC input (3 for CIFAR).
        dropout_rate: dropout after blocks 1 and 2 (0 disables it).
        rngs: Flax NNX random streams (``params``; ``dropout`` when dropout is on).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from inna_jax.models import NiN, count_params
        >>> model = NiN(100, rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 32, 32, 3))).shape, count_params(model)
        ((2, 100), 984356)

    References:
        M. Lin, Q. Chen, S. Yan, "Network In Network", ICLR 2014.
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 5 (Figure 2: NiN on CIFAR-100).
    """

    def __init__(
        self,
        num_classes: int = 100,
        *,
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got num_classes={num_classes}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got dropout_rate={dropout_rate}")
        blocks = [list(b) for b in _BLOCKS]
        blocks[-1].append((1, num_classes))
        convs = []
        c_in = in_channels
        for block in blocks:
            layer = []
            for k, c_out in block:
                layer.append(nnx.Conv(c_in, c_out, (k, k), padding="SAME", rngs=rngs))
                c_in = c_out
            convs.append(nnx.List(layer))
        self.blocks = nnx.List(convs)
        # Without dropout the model holds parameters only (no RNG state to carry).
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs if dropout_rate > 0 else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of shape ``(batch, num_classes)`` for NHWC images ``x``."""
        b1, b2, b3 = self.blocks
        for conv in b1:
            x = nnx.relu(conv(x))
        x = self.dropout(nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME"))
        for conv in b2:
            x = nnx.relu(conv(x))
        pooled = nnx.avg_pool(x, (3, 3), strides=(2, 2), padding="SAME", count_include_pad=False)
        x = self.dropout(pooled)
        for conv in b3[:-1]:
            x = nnx.relu(conv(x))
        x = b3[-1](x)
        return jnp.mean(x, axis=(1, 2))
