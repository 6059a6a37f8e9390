"""Training: the Flax NNX loop ``fit``, orbax checkpoints, data parallelism on a device mesh."""

from inna_jax.train._checkpoint import Checkpointer as Checkpointer
from inna_jax.train._command import add_parallel_arguments as add_parallel_arguments
from inna_jax.train._command import setup_parallel as setup_parallel
from inna_jax.train._fit import FitResult as FitResult
from inna_jax.train._fit import fit as fit
from inna_jax.train._parallel import data_mesh as data_mesh
from inna_jax.train._parallel import initialize_distributed as initialize_distributed
from inna_jax.train._step import TrainState as TrainState

__all__ = [
    "Checkpointer",
    "FitResult",
    "TrainState",
    "add_parallel_arguments",
    "data_mesh",
    "fit",
    "initialize_distributed",
    "setup_parallel",
]
