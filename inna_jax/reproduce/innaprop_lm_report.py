"""The table and the figure of ``inna-jax innaprop-lm``, from the curves alone.

The mean and min-max over seeds are :func:`inna_jax.reproduce.plots.spread`'s, in the table
and in the figure's bands alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax.reproduce import plots, tables

#: The output files, in the order the command lists them.
FILES = ("curves.csv", "runs.csv", "table.csv", "table.json", "innaprop_lm.png", "summary.json")

_COLUMNS = [
    ("method", "<20", ""),
    ("val loss", ">9", ".4f"),
    ("min", ">8", ".4f"),
    ("max", ">8", ".4f"),
    ("best val", ">9", ".4f"),
    ("train loss", ">11", ".4f"),
    ("seconds", ">8", ".1f"),
]


def table_rows(curves: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per method: the final validation loss (mean, min, max over seeds), the mean
    over seeds of each seed's best validation loss, the final training-batch loss, seconds."""
    rows = []
    for method, c in curves.items():
        mean, lo, hi = (float(v[-1]) for v in plots.spread(c["val_loss"]))
        rows.append({
            "method": method,
            "val_loss": mean,
            "val_loss_min": lo,
            "val_loss_max": hi,
            "best_val_loss": float(np.mean(np.nanmin(c["val_loss"], axis=1))),
            "train_loss": float(plots.spread(c["train_loss"])[0][-1]),
            "seconds": float(c["seconds"]),
        })  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    """The printed table (validation loss in nats per byte)."""
    keys = ("method", "val_loss", "val_loss_min", "val_loss_max", "best_val_loss",
            "train_loss", "seconds")  # fmt: skip
    return tables.format_table(_COLUMNS, [[r[k] for k in keys] for r in rows])


def seed_rows(curves: Mapping[str, Mapping[str, Any]], seeds: list[int]) -> list[dict]:
    """One row per method and seed: the final validation and training losses."""
    rows = []
    for method, c in curves.items():
        for i, seed in enumerate(seeds):
            rows.append({
                "method": method,
                "seed": seed,
                "final_val_loss": float(c["val_loss"][i, -1]),
                "best_val_loss": float(np.nanmin(c["val_loss"][i])),
                "final_train_loss": float(c["train_loss"][i, -1]),
            })  # fmt: skip
    return rows


def curve_rows(curves: Mapping[str, Mapping[str, Any]], seeds: list[int]) -> list[dict]:
    """One row per method, seed and evaluation, as in ``curves.csv``."""
    return [
        {
            "method": method,
            "seed": seed,
            "step": int(step),
            "val_loss": float(c["val_loss"][i, j]),
            "train_loss": float(c["train_loss"][i, j]),
        }
        for method, c in curves.items()
        for i, seed in enumerate(seeds)
        for j, step in enumerate(c["steps"])
    ]


def plot(path: Path, curves: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """Validation loss against steps, mean and min-max band over seeds, with a zoom on the
    second half of training beside it."""
    fig, axes = plots.figure(2, width=5.0, height=3.8)
    full, late = axes[0]
    values = []
    for method, c in curves.items():
        steps, ys = c["steps"], c["val_loss"]
        line = plots.band(full, steps, ys, label=method)
        half = steps >= steps[-1] / 2
        plots.band(late, steps[half], ys[:, half], label=method, color=line.get_color())
        values.append(ys[:, half])
    plots.zoom(late, np.concatenate([v.ravel() for v in values]))
    for ax, name in ((full, "whole run"), (late, "second half")):
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats per byte)")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    plots.legend_outside(fig, late)
    plots.save(fig, path)
