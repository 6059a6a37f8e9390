"""When the loop stops: a non-finite loss or parameter, or a cancellation.

A run whose loss or updated parameters are not finite keeps its last finite state (the step
drops the update, :mod:`inna_jax.train._step`) and stops; the other runs of a group go on.
The message says at which step and epoch, where the last good checkpoint is, and, for a loss
not finite already at the initial parameters, that the loss, targets or model are the likely
culprits rather than the learning rate. ``on_nonfinite`` then decides: warn, record or raise.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from inna_jax.train import _checks
from inna_jax.train._group import GroupState
from inna_jax.train._resume import Resume

_CANCEL = threading.local()


@contextlib.contextmanager
def cancel_on(event: threading.Event) -> Iterator[None]:
    """In this block and this thread, ``fit``/``fit_many`` stop once ``event`` is set.

    They check it before every step and then raise ``KeyboardInterrupt`` (their progress bar
    and checkpointer closed, the checkpoints written so far kept). Groups trained in threads
    use it to stop together on Ctrl-C or on another group's error
    (:func:`inna_jax.reproduce.protocol.run_concurrently`).
    """
    previous = getattr(_CANCEL, "event", None)
    _CANCEL.event = event
    try:
        yield
    finally:
        _CANCEL.event = previous


def cancel_event() -> threading.Event | None:
    """The event of the innermost :func:`cancel_on` block of this thread, if any."""
    return getattr(_CANCEL, "event", None)


class Stopping:
    """The stopping rules of one call: which runs stop, and whether the loop ends."""

    def __init__(self, *, spe, seeds, group, loss, on_nonfinite, resume: Resume):
        self.spe, self.seeds, self.group, self.loss = spe, seeds, group, loss
        self.on_nonfinite, self.resume = on_nonfinite, resume

    def check(self, state: GroupState, ok: np.ndarray, bad: np.ndarray, skip: list[bool],
              finite_at_start: Callable[[int], bool]) -> bool:  # fmt: skip
        """Stops the runs whose last step was not finite; ``True`` when the loop must end."""
        stopped = state.stopped
        for r in range(len(stopped)):
            if stopped[r] is None and not bool(ok[r]):
                never = int(bad[r]) == 0 and not finite_at_start(r)
                stopped[r] = self._message(int(bad[r]), r, never)
                skip[r] = True
        if all(s is not None for s in stopped) or (not self.group and stopped[0]):
            return True
        return any(s is not None for s in stopped) and self.on_nonfinite == "raise"

    def _message(self, bad: int, run: int, never: bool) -> str:
        """Why run ``run`` stopped at step ``bad + 1``."""
        seed, where = self.seeds[run], self.resume.where()
        if never:
            return _never_finite_message(self.loss, run, seed, self.group, where)
        what = f"non-finite loss or parameters at step {bad + 1} (epoch {bad // self.spe + 1})"
        if not self.group:
            return (
                f"{what}: training stopped; the model keeps the parameters of step {bad}, the "
                f"last finite ones; {where}. Lower the learning rate or check the data."
            )
        kept = "; the group's later checkpoints hold them" if self.resume.ckpt is not None else ""
        return (
            f"run {run} (seed {seed}): {what}: this run stopped and keeps the parameters of "
            f"step {bad}, the last finite ones{kept}; the other runs went on. Lower the "
            "learning rate or check the data."
        )

    def report(self, stopped: list[str | None], stacklevel: int) -> None:
        """Raises (``"raise"``) or warns (``"stop"``) for each stopped run, in order."""
        for message in stopped:
            if message is None:
                continue
            if self.on_nonfinite == "raise":
                raise FloatingPointError(message)
            if self.on_nonfinite == "stop":
                warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


def _never_finite_message(loss, run, seed, group, where) -> str:
    """A run whose loss was not finite at its initial parameters: not a step-size problem."""
    what = "non-finite loss at step 1 (epoch 1), already at the initial parameters"
    if group:
        what = f"run {run} (seed {seed}): {what}: this run stopped and keeps its initial "
        what += "parameters; the other runs went on"
    else:
        what += f": training stopped; the model keeps its initial parameters; {where}"
    return (
        f"{what}. A lower learning rate will not help: the loss "
        f"(loss={_checks.describe(loss)}), the targets or the model are likely wrong, or the "
        "inputs hold NaN or inf."
    )
