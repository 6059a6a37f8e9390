"""Flax NNX models: MLP, small CNN and Network-in-Network."""

from inna_jax.models._mlp import MLP as MLP

__all__ = ["MLP"]
