"""inna_jax: inertial-Newton (INNA/DIN, INNAprop) and exact Gauss-Newton (EGN) optimizers for JAX.

The public API is exactly what is re-exported here; see ``__all__``. The subpackage
``inna_jax.dynamics`` (diffrax) is imported on first use, so that ``import inna_jax`` loads
neither diffrax nor matplotlib nor orbax. ``inna_jax.inertial`` (INNA, INNAprop) and
``inna_jax.gauss_newton`` (EGN, SGN, the Gram) hold the implementation in private modules;
their public names are the ones re-exported here.
"""

from typing import TYPE_CHECKING

from inna_jax.gauss_newton._egn import egn as egn
from inna_jax.gauss_newton._egn import egn_direction as egn_direction
from inna_jax.gauss_newton._gram import NTKPlan as NTKPlan
from inna_jax.gauss_newton._gram import NTKPlanRow as NTKPlanRow
from inna_jax.gauss_newton._gram import ntk_gram as ntk_gram
from inna_jax.gauss_newton._gram import ntk_plan as ntk_plan
from inna_jax.gauss_newton._gram_blocked import BlockPlan as BlockPlan
from inna_jax.gauss_newton._gram_blocked import ntk_block_plan as ntk_block_plan
from inna_jax.gauss_newton._gram_blocked import ntk_gram_blocked as ntk_gram_blocked
from inna_jax.gauss_newton._sgn import sgn as sgn
from inna_jax.gauss_newton._step import GaussNewtonState as GaussNewtonState
from inna_jax.inertial._inna import inna as inna
from inna_jax.inertial._inna import inna_psi0 as inna_psi0
from inna_jax.inertial._inna import inna_step as inna_step
from inna_jax.inertial._inna import transform as transform
from inna_jax.inertial._innaprop import innaprop as innaprop
from inna_jax.inertial._scale_by_inna import InnaState as InnaState
from inna_jax.inertial._scale_by_inna import scale_by_inna as scale_by_inna
from inna_jax.inertial._schedules import power_decay as power_decay

if TYPE_CHECKING:
    from inna_jax import dynamics as dynamics

__version__ = "0.1.0"

__all__ = [
    "BlockPlan",
    "GaussNewtonState",
    "InnaState",
    "NTKPlan",
    "NTKPlanRow",
    "dynamics",
    "egn",
    "egn_direction",
    "inna",
    "inna_psi0",
    "inna_step",
    "innaprop",
    "ntk_block_plan",
    "ntk_gram",
    "ntk_gram_blocked",
    "ntk_plan",
    "power_decay",
    "scale_by_inna",
    "sgn",
    "transform",
]


def __getattr__(name: str):
    """Imports ``inna_jax.dynamics`` on first access (it loads diffrax)."""
    if name == "dynamics":
        import importlib

        return importlib.import_module("inna_jax.dynamics")
    raise AttributeError(f"module 'inna_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
