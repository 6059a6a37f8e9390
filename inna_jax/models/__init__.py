"""Flax NNX models: MLP, small CNN, Network-in-Network and a causal transformer."""

from inna_jax._extras import require as _require

_require("train", "inna_jax.models")  # one line naming the extra when flax is missing

from inna_jax.models._cnn import SmallCNN as SmallCNN
from inna_jax.models._cnn import count_params as count_params
from inna_jax.models._mlp import MLP as MLP
from inna_jax.models._nin import NiN as NiN
from inna_jax.models._transformer import CausalTransformer as CausalTransformer

__all__ = ["MLP", "CausalTransformer", "NiN", "SmallCNN", "count_params"]
