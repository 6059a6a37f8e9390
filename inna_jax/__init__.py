"""inna_jax: inertial-Newton (INNA/DIN) and exact Gauss-Newton (EGN) optimizers for JAX.

The public API is exactly what is re-exported here; see ``__all__``.
"""

from inna_jax import dynamics as dynamics
from inna_jax._inna import InnaState as InnaState
from inna_jax._inna import inna as inna
from inna_jax._inna import inna_psi0 as inna_psi0
from inna_jax._inna import inna_step as inna_step
from inna_jax._inna import transform as transform
from inna_jax._schedules import power_decay as power_decay

__version__ = "0.1.0"

__all__ = [
    "InnaState",
    "dynamics",
    "inna",
    "inna_psi0",
    "inna_step",
    "power_decay",
    "transform",
]
