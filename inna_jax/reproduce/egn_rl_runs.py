"""What the two experiments of ``inna-jax egn-rl`` share: timed chunks, the best learning
rate, and the figure of the best runs' curves.

Every (method, learning rate) trains all seeds as one vmapped, compiled program, called in
chunks whose wall-clock time is measured (:func:`run_chunks`); the best learning rate per
method is the one with the best mean final metric (:func:`worse` ranks the scores).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inna_jax.reproduce import plots


def stack(trees: list[Any]) -> Any:
    """The seeds' pytrees stacked along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def scalar(value: float) -> jax.Array:
    """``value`` as a 0-d array of the default float dtype (an argument, not a constant)."""
    return jnp.asarray(value, jnp.zeros(()).dtype)


def run_chunks(compiled, state, args: tuple, chunks: int, evaluate) -> dict[str, list]:
    """Calls ``compiled(state, *args)`` ``chunks`` times; times each call (evaluation apart)."""
    seconds, records = [0.0], [evaluate(state, None)]
    for _ in range(chunks):
        start = time.perf_counter()
        state, out = compiled(state, *args)
        jax.block_until_ready(state)
        seconds.append(seconds[-1] + time.perf_counter() - start)
        records.append(evaluate(state, out))
    return {"seconds": seconds, "records": records}


def compile_chunk(chunk, *example) -> tuple[Any, float]:
    """``chunk`` compiled for ``example``'s shapes, and the seconds it took."""
    start = time.perf_counter()
    compiled = jax.jit(chunk).lower(*example).compile()
    return compiled, time.perf_counter() - start


def worse(a: float, b: float, maximize: bool) -> bool:
    """Is score ``a`` worse than ``b``? (non-finite is worst)."""
    if not math.isfinite(a):
        return True
    if not math.isfinite(b):
        return False
    return a < b if maximize else a > b


def mean_score(final: np.ndarray) -> float:
    """The mean of the seeds' final values, NaN if one is not finite."""
    return float(np.mean(final)) if np.all(np.isfinite(final)) else float("nan")


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Fills NaN rows (chunks in which no episode ended) with the previous row's values."""
    values = values.copy()
    for i in range(1, len(values)):
        values[i] = np.where(np.isfinite(values[i]), values[i], values[i - 1])
    return values


def plot_best(path: Path, curves: list[dict], table: list[dict], figure: dict[str, Any]) -> None:
    """One row of two panels per model (or environment): each method's best run against
    optimizer progress and against wall-clock seconds, mean and min-max band over seeds.

    ``figure`` names the keys (``panel``: the row's key; ``x``: progress; ``value``: the
    curve; ``match``: the keys a curve shares with its table row) and the looks (``label``,
    ``ylabel``, ``xlabels``, ``log_y``, ``log_seconds``, ``height``, ``title``).
    """
    panel = figure["panel"]
    names = list(dict.fromkeys(r[panel] for r in table))
    fig, axes = plots.figure(2, len(names), width=6.0, height=figure["height"])
    for row, name in enumerate(names):
        for best in (r for r in table if r[panel] == name):
            want = {k: best[k] for k in figure["match"]} | {"method": best["method"].lower()}
            rows = [
                c for c in curves if c[panel] == name and all(c[k] == v for k, v in want.items())
            ]
            seeds = sorted({c["seed"] for c in rows})
            xs = sorted({c[figure["x"]] for c in rows})
            ys = np.array([[c[figure["value"]] for c in rows if c["seed"] == s] for s in seeds])
            secs = [c["seconds"] for c in rows if c["seed"] == seeds[0]]
            label = figure["label"](best)
            for ax, x in zip(axes[row], (xs, secs), strict=True):
                plots.band(ax, x, ys, label=label, skip_empty=True)
                if figure["log_y"]:
                    ax.set_yscale("log")
        for ax, xlabel in zip(axes[row], figure["xlabels"], strict=True):
            ax.set_ylabel(figure["ylabel"](name), fontsize=8)
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
        if figure["log_seconds"]:
            from matplotlib.ticker import NullFormatter

            axes[row, 1].set_xscale("log")
            # labels on the decades only: minor-tick labels overlapped on short ranges
            axes[row, 1].xaxis.set_minor_formatter(NullFormatter())
        axes[row, 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle(figure["title"], fontsize=9)
    plots.save(fig, path, dpi=110)
