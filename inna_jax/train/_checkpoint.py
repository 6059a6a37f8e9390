"""Orbax checkpoints of the whole training state: parameters, optimizer state, step, history.

A checkpoint at step ``k`` holds everything the next step reads: the parameters, the other
model variables (batch statistics, RNG streams), the optimizer state, and a JSON part with the
step, the metrics so far and the run's settings. The data order is a pure function of
``(seed, epoch, step)`` (:mod:`inna_jax.data`), so no sampler state is needed: a resumed run
replays exactly the batches that the uninterrupted run would have drawn. Orbax writes each
step to a temporary folder and renames it when complete, so a run killed while writing leaves
the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    """Typed PRNG keys to their raw ``uint32`` data, which orbax can store."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _data_to_keys(tree: Any, like: Any) -> Any:
    """Inverse of :func:`_keys_to_data`, with the key implementation read from ``like``."""
    return jax.tree.map(
        lambda x, ref: (
            jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x
        ),
        tree,
        like,
    )


class Checkpointer:
    """A thin wrapper of ``orbax.checkpoint.CheckpointManager`` for :func:`~inna_jax.train.fit`.

    Args:
        directory: the checkpoint folder (created if missing).
        max_to_keep: how many recent checkpoints to keep.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> from inna_jax.train import Checkpointer
        >>> ckpt = Checkpointer(tempfile.mkdtemp())
        >>> ckpt.save(7, {"w": jnp.arange(3.0)}, {"epoch": 1})
        >>> ckpt.wait()
        >>> state, meta = ckpt.restore(ckpt.latest_step(), {"w": jnp.zeros(3)})
        >>> state["w"].tolist(), meta
        ([0.0, 1.0, 2.0], {'epoch': 1})
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp  # imported when used: it takes about a second

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves ``state`` (a pytree of arrays) and ``meta`` (JSON-able) at ``step``."""
        ocp = self._ocp
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_keys_to_data(state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """Restores step ``step`` into the structure, dtypes and shardings of ``like``."""
        ocp = self._ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _keys_to_data(like))
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return _data_to_keys(restored.state, like), dict(restored.meta)

    def wait(self) -> None:
        """Blocks until pending asynchronous writes are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending writes and releases the manager."""
        self._manager.close()
