"""Step-size schedules used by the INNA papers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from inna_jax._validation import check_nonnegative


def power_decay(init_value: ArrayLike, power: ArrayLike = 0.5) -> optax.Schedule:
    r"""The power-decay schedule :math:`\gamma_k = \gamma_0 (k + 1)^{-q}`.

    This is the step size of the INNA papers, where ``k`` counts iterations from 0. The
    experiments of Castera et al. use :math:`q = 1/2`; the JMLR version also compares
    :math:`q \in \{1/2, 1/4, 1/8, 1/16\}`. ``power=0`` gives a constant step. The theory
    asks for :math:`\sum_k \gamma_k = \infty` and :math:`\gamma_k = o(1/\log k)`, which holds
    for :math:`q \in (0, 1]`.

    Args:
        init_value: :math:`\gamma_0 \ge 0`.
        power: :math:`q \ge 0`.

    Returns:
        An ``optax.Schedule``: a function of the step count.

    Example:
        >>> import inna_jax
        >>> schedule = inna_jax.power_decay(0.1, power=0.5)
        >>> [round(float(schedule(k)), 4) for k in range(4)]
        [0.1, 0.0707, 0.0577, 0.05]

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Assumption 1 and Section 5.
    """
    check_nonnegative("init_value", init_value)
    check_nonnegative("power", power)

    def schedule(count: ArrayLike) -> jax.Array:
        k = jnp.asarray(count)
        dtype = jnp.result_type(init_value, float)
        return jnp.asarray(init_value * jnp.power(k.astype(dtype) + 1, -jnp.asarray(power, dtype)))

    return schedule
