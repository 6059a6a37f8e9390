"""Training: ``fit`` (one run) and ``fit_many`` (a group of runs as one program), optimizer
specs compiled once per family, orbax checkpoints, device meshes and multi-host start-up.

No command-line parsing, plotting or data-set choice lives here: see :mod:`inna_jax.reproduce`.
"""

from inna_jax._extras import require as _require

_require("train", "inna_jax.train")  # one line naming the extra when flax & co. are missing

from inna_jax.train._checkpoint import Checkpointer as Checkpointer
from inna_jax.train._fit import FitResult as FitResult
from inna_jax.train._fit import fit as fit
from inna_jax.train._fit import fit_many as fit_many
from inna_jax.train._parallel import data_mesh as data_mesh
from inna_jax.train._parallel import initialize_distributed as initialize_distributed
from inna_jax.train._parallel import run_mesh as run_mesh
from inna_jax.train._spec import OptimizerSpec as OptimizerSpec
from inna_jax.train._step import TrainState as TrainState

__all__ = [
    "Checkpointer",
    "FitResult",
    "OptimizerSpec",
    "TrainState",
    "data_mesh",
    "fit",
    "fit_many",
    "initialize_distributed",
    "run_mesh",
]

_MOVED = {
    "add_parallel_arguments": "inna_jax.reproduce.cli_args",
    "setup_parallel": "inna_jax.reproduce.cli_args",
}


def __getattr__(name: str):
    """The command-line helpers moved to :mod:`inna_jax.reproduce.cli_args` (deprecated here)."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"inna_jax.train.{name} moved to {_MOVED[name]}.{name}; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'inna_jax.train' has no attribute {name!r}")
