"""The progress bar of a call: one tqdm bar that says "compiling" until the first step ran."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks


class Progress:
    """One tqdm bar; until the first step of this call has run it says "compiling"."""

    def __init__(self, *, total, start, desc, disable):
        self.total, self.desc, self.disable = total, desc, disable
        self.bar = tqdm(
            total=total,
            initial=min(start, total),
            desc=f"{desc} (compiling)",
            unit="step",
            disable=disable,
            dynamic_ncols=True,
            leave=False,
        )
        self.compiling = True

    def started(self, done: int) -> None:
        """The first step is done: a fresh bar whose clock (and ETA) starts now."""
        self.bar.close()
        self.compiling = False
        self.bar = tqdm(
            total=self.total,
            initial=done,
            desc=self.desc,
            unit="step",
            disable=self.disable,
            dynamic_ncols=True,
        )

    def show(self, epoch: int, losses: np.ndarray, alive: list[int], group: bool) -> None:
        """The epoch and the median loss of the runs still going (and how many, for a group)."""
        shown = float(np.median(losses[alive]))
        postfix = {"epoch": epoch, "loss": f"{shown:.4g}"}
        if group:
            postfix["alive"] = f"{len(alive)}/{len(losses)}"
        self.bar.set_postfix(postfix)

    def close(self) -> None:
        """Closes the bar."""
        self.bar.close()
