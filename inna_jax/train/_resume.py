"""Checkpoints of a call with ``checkpoint_dir``: resume from the newest, save as it goes.

A checkpoint (:class:`~inna_jax.train.Checkpointer`, orbax) holds the runs' states and a JSON
part: the step, the training time so far, the histories, the stop messages and the settings
that fix the batch order (seeds, batch size, training-set size; for a group its runs and
their hyperparameters). A resumed call refuses a checkpoint made with other settings.
"""

from __future__ import annotations

from typing import Any, cast

from inna_jax.train._checkpoint import Checkpointer
from inna_jax.train._group import GroupState, Runs


def _config(batch_size, n, seeds, run_info, padded, group) -> dict[str, Any]:
    """The settings a checkpoint must share with the call that resumes it."""
    config: dict[str, Any] = {"batch_size": int(batch_size), "num_train": int(n)}
    if group:
        config |= {"seeds": [int(s) for s in seeds], "runs": len(run_info), "padded_runs": padded}
        config["hyperparams"] = [info["hyperparams"] for info in run_info]
    else:
        config["seed"] = int(seeds[0])
    return config


class Resume:
    """The checkpoint folder of a call (or none), and the step last saved there."""

    def __init__(self, settings, *, n, seeds, run_info, padded, group):
        self.group = group
        self.config = _config(settings.batch_size, n, seeds, run_info, padded, group)
        directory = settings.checkpoint_dir
        self.ckpt = Checkpointer(directory, max_to_keep=settings.max_to_keep) if directory else None
        self.last_saved: int | None = None

    def restore(self, runs: Runs) -> GroupState:
        """The state to start from: the newest checkpoint's, or a fresh one."""
        state = GroupState.fresh(runs.count)
        ckpt = self.ckpt
        if ckpt is None or ckpt.latest_step() is None:
            return state
        like = runs.checkpoint_state(self.group)
        saved, meta = ckpt.restore(cast(int, ckpt.latest_step()), like=like)
        for key, value in self.config.items():
            if meta["config"].get(key) != value:
                raise ValueError(
                    f"checkpoint in {ckpt.directory} comes from a run with {key}="
                    f"{meta['config'].get(key)!r}, but this run has {key}={value!r}; use "
                    "another checkpoint_dir or the same settings"
                )
        runs.load_checkpoint_state(saved, self.group)
        state.start, state.time_before = int(meta["step"]), meta["time_s"]
        if self.group:
            state.histories = [list(h) for h in meta["histories"]]
            state.stopped = list(meta["stopped"])
        else:
            state.histories = [list(meta["history"])]
        runs.skip = [s is not None for s in state.stopped]
        self.last_saved = state.start
        return state

    def due(self, done: int, every: int) -> bool:
        """Whether a checkpoint is written after step ``done``."""
        return self.ckpt is not None and done % every == 0

    def save(self, step: int, runs: Runs, state: GroupState, time_s: float) -> None:
        """Writes the runs' states and the histories at ``step``."""
        meta: dict[str, Any] = {"step": step, "time_s": time_s, "config": self.config}
        if self.group:
            meta |= {"histories": state.histories, "stopped": state.stopped}
        else:
            meta["history"] = state.histories[0]
        cast(Checkpointer, self.ckpt).save(step, runs.checkpoint_state(self.group), meta)
        self.last_saved = step

    def where(self) -> str:
        """Where the last good checkpoint is, for a stop message."""
        if self.ckpt is not None and self.last_saved is not None:
            return f"the last good checkpoint is step {self.last_saved} in {self.ckpt.directory}"
        return "no checkpoint was written"

    def close(self) -> None:
        """Waits for the writes and closes the folder."""
        if self.ckpt is not None:
            self.ckpt.close()
