"""The plots shared by the protocols: mean curves with min-max bands, legends, zoomed axes.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state: the commands work from
notebooks without changing their backend) with a constrained layout, so that a legend placed
outside the axes never covers a curve.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def preload() -> threading.Thread:
    """Imports matplotlib's figure and PNG modules in a background thread, and returns it.

    ``inna-jax figure2`` calls it as it starts, so that the imports overlap the loading of
    its data, the compilation of its first programs and its training, and the figure drawn
    at the end no longer waits for them (0.3 s of the 0.5 s that the default run spent on
    its figure, on a 2-core CPU).
    Importing twice is harmless: Python imports each module once, under its own lock.
    """

    def load() -> None:
        import matplotlib.backends.backend_agg  # noqa: F401  (savefig's PNG canvas)
        import matplotlib.figure  # noqa: F401

    thread = threading.Thread(target=load, name="inna_jax-preload-matplotlib")
    thread.start()
    return thread


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.8):
    """A constrained-layout figure and its axes (a 2-D array, ``squeeze=False``)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def spread(ys: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean, min and max over the rows of ``ys`` (one row per seed), ignoring NaN.

    A column where every row is NaN (all seeds stopped) gives NaN, without a warning. The
    band of :func:`band` and the commands' final tables (mean and min-max over seeds) both
    read these three curves.

    Example:
        >>> import numpy as np
        >>> from inna_jax.reproduce.plots import spread
        >>> [a.tolist() for a in spread([[1.0, np.nan], [3.0, np.nan]])]
        [[2.0, nan], [1.0, nan], [3.0, nan]]
    """
    ys = np.atleast_2d(np.asarray(ys, float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after a divergence
        return np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def band(
    ax: Any,
    x: Sequence[float],
    ys: Any,
    *,
    label: str,
    color: Any = None,
    skip_empty: bool = False,
    **kwargs,
):
    """Plots the mean over the rows of ``ys`` against ``x``, and its min-max band.

    ``ys`` has one row per seed (NaN where a run has stopped, or has no value yet). The band
    is drawn only when at least two rows have a value at some point: one seed has no spread
    to show. ``skip_empty`` leaves out the points where no row has a value (a curve that
    starts late, such as episode returns before the first episode ends).

    Returns:
        The line of the mean.
    """
    xs, ys = np.asarray(x, float), np.atleast_2d(np.asarray(ys, float))
    if skip_empty:
        keep = np.any(np.isfinite(ys), axis=0)
        xs, ys = xs[keep], ys[:, keep]
    mean, lo, hi = spread(ys)
    (line,) = ax.plot(xs, mean, label=label, color=color, **kwargs)
    if (np.sum(np.isfinite(ys), axis=0) >= 2).any():
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def zoom(ax: Any, values: Any, *, lower: float | None = None, upper: float | None = None):
    """Sets the y-range to the finite ``values`` with a 6 % margin, within ``[lower, upper]``.

    For accuracies, ``zoom(ax, acc, lower=0, upper=1)`` shows curves between 0.95 and 0.99
    at that scale instead of on the whole unit interval.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.02, 1e-3)
    lo, hi = lo - pad, hi + pad
    if lower is not None:
        lo = max(lo, lower)
    if upper is not None:
        hi = min(hi, upper)
    ax.set_ylim(lo, hi)


def integer_ticks(ax: Any) -> None:
    """Integer ticks on the x-axis (epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_outside(fig: Any, ax: Any, *, where: str = "right", ncols: int = 1, **kwargs) -> None:
    """One legend for the figure, outside the axes (``where``: ``"right"`` or ``"bottom"``)."""
    handles, labels = ax.get_legend_handles_labels()
    loc = "outside right upper" if where == "right" else "outside lower center"
    fig.legend(handles, labels, loc=loc, ncols=ncols, fontsize=8, frameon=False, **kwargs)


def save(fig: Any, path: str | Path, *, dpi: int = 120) -> None:
    """Writes the figure as PNG."""
    fig.savefig(path, dpi=dpi)
