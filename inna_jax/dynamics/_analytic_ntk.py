r"""The infinite-width NTK of a two-layer ReLU network whose first layer is trained.

For :math:`f(x) = m^{-1/2} \sum_{r=1}^m a_r\,\mathrm{relu}(w_r \cdot x)` with fixed
:math:`a_r = \pm 1` and :math:`w_r \sim \mathcal N(0, I)`, the empirical NTK
:math:`\sum_r \partial_{w_r} f(x)\cdot\partial_{w_r} f(x')` is
:math:`(x\cdot x')\,\frac1m\sum_r \mathbf 1[w_r\cdot x > 0]\,\mathbf 1[w_r\cdot x' > 0]`, which
tends as :math:`m \to \infty` to

.. math::

    K(x, x') = \frac{x\cdot x'\,(\pi - \arccos c)}{2\pi}, \qquad
    c = \frac{x \cdot x'}{\|x\|\,\|x'\|}.

References:
    Du, Zhai, Poczos and Singh, "Gradient descent provably optimizes over-parameterized neural
    networks", ICLR 2019 (the Gram matrix :math:`H^\infty`). Bu, Xu and Chen, AISTATS 2021.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def analytic_relu_ntk(x1: ArrayLike, x2: ArrayLike | None = None) -> jax.Array:
    r"""The limiting NTK Gram matrix of a wide two-layer ReLU net (first layer trained).

    .. math::

        K_{ij} = \frac{x_i\cdot x_j\,(\pi - \arccos c_{ij})}{2\pi}, \qquad
        c_{ij} = \frac{x_i\cdot x_j}{\|x_i\|\,\|x_j\|}.

    Args:
        x1: inputs, shape ``(n1, d)``; rows must be non-zero.
        x2: inputs, shape ``(n2, d)``; defaults to ``x1``.

    Returns:
        ``K`` of shape ``(n1, n2)``.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> [[round(float(k), 4) for k in row] for row in analytic_relu_ntk(x)]
        [[0.5, 0.0], [0.0, 0.5]]

    References:
        Du et al., ICLR 2019; Bu, Xu and Chen, AISTATS 2021, §3.
    """
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"x1 and x2 must be (n, d) matrices with the same d, got {x1.shape} and {x2.shape}"
        )
    gram = x1 @ x2.T
    norms = jnp.linalg.norm(x1, axis=1)[:, None] * jnp.linalg.norm(x2, axis=1)[None, :]
    cosine = jnp.clip(gram / norms, -1.0, 1.0)
    return gram * (jnp.pi - jnp.arccos(cosine)) / (2 * jnp.pi)
