r"""A small decoder-only transformer (GPT-style, pre-norm) for byte-level language models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class _Block(nnx.Module):
    """One pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads, in_features=width, decode=False, rngs=rngs
        )
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.down = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x), mask=mask, decode=False)
        return x + self.down(nnx.gelu(self.up(self.ln2(x))))


class CausalTransformer(nnx.Module):
    r"""A decoder-only transformer: token and position embeddings, causal blocks, read-out.

    For tokens :math:`x_1, \dots, x_T` (integers in ``[0, vocab_size)``) the model computes

    .. math::

        h^{(0)}_t &= E[x_t] + P_t, \\
        a^{(l)} &= h^{(l-1)} + \mathrm{Attn}\big(\mathrm{LN}(h^{(l-1)})\big), \qquad
        h^{(l)} = a^{(l)} + W_2\, \mathrm{GELU}\big(W_1 \mathrm{LN}(a^{(l)})\big), \\
        f_t &= W_o\, \mathrm{LN}(h^{(L)}_t),

    where each attention head weighs position :math:`s` at position :math:`t` by
    :math:`\mathrm{softmax}_s(q_t \cdot k_s / \sqrt{d_h})` over :math:`s \le t` only (the
    causal mask, :func:`flax.nnx.make_causal_mask`): the logits :math:`f_t` at position
    :math:`t` depend on :math:`x_1, \dots, x_t` alone, so that :math:`f_t` predicts
    :math:`x_{t+1}`. The masked weights are exactly zero, so that changing a later token
    leaves the earlier logits unchanged bit for bit. The blocks are pre-norm as in GPT-2
    (Radford et al. 2019, Section 2.3), with an MLP of ``mlp_ratio * width`` units, no
    dropout, and an untied read-out :math:`W_o`.

    Args:
        vocab_size: number of token values (256 for bytes).
        context: the longest sequence (number of learned positions :math:`P_t`).
        width: the model width :math:`d` (a multiple of ``heads``).
        depth: number of blocks :math:`L`.
        heads: attention heads per block (head size :math:`d_h = d / \text{heads}`).
        mlp_ratio: hidden units of each block's MLP per unit of width.
        rngs: Flax NNX random streams.

    Raises:
        ValueError: for a ``width`` that is not a multiple of ``heads``, or a size < 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from inna_jax.models import CausalTransformer, count_params
        >>> model = CausalTransformer(256, 16, width=32, depth=2, heads=4, rngs=nnx.Rngs(0))
        >>> tokens = jnp.zeros((3, 16), jnp.int32)
        >>> model(tokens).shape, count_params(model)
        ((3, 16, 256), 42624)

    References:
        Vaswani et al., "Attention is all you need", NeurIPS 2017, Section 3.2 (scaled
        dot-product attention and its mask); Radford et al., "Language models are
        unsupervised multitask learners", OpenAI 2019, Section 2.3 (the pre-norm GPT-2 block).
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        *,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        rngs: nnx.Rngs,
    ):
        sizes = {"vocab_size": vocab_size, "context": context, "width": width, "depth": depth,
                 "heads": heads, "mlp_ratio": mlp_ratio}  # fmt: skip
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if width % heads:
            raise ValueError(
                f"width must be a multiple of heads, got width={width!r}, heads={heads!r}"
            )
        self.context = context
        self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
        self.position = nnx.Embed(context, width, rngs=rngs)
        self.blocks = nnx.List([_Block(width, heads, mlp_ratio, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab_size, rngs=rngs)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """The logits ``(batch, T, vocab_size)`` of integer ``tokens`` ``(batch, T)``,
        ``T <= context``."""
        length = tokens.shape[-1]
        if length > self.context:
            raise ValueError(
                f"tokens must have at most context={self.context} positions, got {length}"
            )
        x = self.embed(tokens) + self.position(jnp.arange(length))
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))
