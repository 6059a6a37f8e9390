"""The inertial side of inna_jax: INNA, INNAprop, their scaling transformation and schedules.

This subpackage is the implementation's home, not a second public API: the public names
(:func:`inna_jax.inna`, :func:`inna_jax.transform`, :func:`inna_jax.inna_step`,
:func:`inna_jax.inna_psi0`, :func:`inna_jax.innaprop`, :func:`inna_jax.scale_by_inna`,
:class:`inna_jax.InnaState`, :func:`inna_jax.power_decay`) are imported from ``inna_jax``
itself, and every module here is private (its name starts with ``_``):

- ``_scale_by_inna``: INNA's state and transformation (optionally RMS-scaled), the lower layer.
- ``_inna``: the pure INNA step, ψ₀, and the aliases ``inna`` and ``transform``.
- ``_innaprop``: INNAprop (INNA with RMSprop scaling and decoupled weight decay).
- ``_schedules``: ``power_decay``.
"""

__all__: list[str] = []
