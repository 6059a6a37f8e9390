"""One module per paper figure or table, plus the demo: the logic, the plots and the tables.

Each module defines ``add_arguments(parser)`` and ``main(args)``, used by :mod:`inna_jax.cli`,
and a ``run(...)`` function with keyword arguments for use from Python.
"""
