"""The commands and the paper reproductions, over :mod:`inna_jax.train` and the dynamics.

One module per command (``demo``, ``train``, ``figure1``, ``figure2``, ``egn``,
``hb_nag_ntk``), each with ``add_arguments(parser)`` and ``main(args)`` for
:mod:`inna_jax.cli` and a ``run(...)`` function with keyword arguments for use from Python;
and the pieces they share: :mod:`~inna_jax.reproduce.registry` (data sets, models,
optimizers), :mod:`~inna_jax.reproduce.protocol` (groups of runs, grid search),
:mod:`~inna_jax.reproduce.plots` (band plots) and :mod:`~inna_jax.reproduce.cli_args`
(flags and usage errors). Importing this package imports nothing heavy.
"""

from inna_jax._extras import require as _require

_require("reproduce", "inna_jax.reproduce")  # one line naming the extra when one is missing
