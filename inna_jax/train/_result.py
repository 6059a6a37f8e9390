"""What :func:`~inna_jax.train.fit` returns, and :func:`~inna_jax.train.fit_many` per run."""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns, and :func:`fit_many` for each run.

    Attributes:
        history: one dict per evaluated epoch (epoch 0 = before training) with keys ``epoch``,
            ``step``, ``train_loss``, ``test_loss``, ``test_accuracy`` (classification) or
            ``test_rmse`` (regression), and ``time_s`` (wall time since the first step of
            the call had run, so without the compilation, summed over resumed runs; for a
            group, the group's time).
        model: the trained model (the same object that was passed in, updated in place).
        opt_state: the final optimizer state.
        steps: the number of optimizer steps taken in total.
        stopped: ``None`` for a run that finished, else the message explaining why it stopped
            (a non-finite loss or parameter).
        seed: the seed of the run's batch order.
        hyperparams: the run's hyperparameters (those of its
            :class:`~inna_jax.train.OptimizerSpec`; empty for a plain optax optimizer).
    """

    history: list[dict]
    model: nnx.Module
    opt_state: Any
    steps: int
    stopped: str | None = None
    seed: int = 0
    hyperparams: dict = dataclasses.field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """``True`` if the run stopped on a non-finite loss or parameter."""
        return self.stopped is not None
