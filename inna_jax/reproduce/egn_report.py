"""The tables and the figure of ``inna-jax egn``: the rows of each method's best rate, the
printed table, ``egn_curves.png`` and the files of :func:`inna_jax.reproduce.egn.run`.

Each method's group of runs (every rate and seed, :mod:`inna_jax.reproduce.egn`) becomes
one row per run and epoch in ``histories.csv`` and, for its best rate, one row of the table:
the final test metric's mean and standard deviation over seeds, the training seconds per run
(the group's wall time over its runs), the steps, and the runs stopped by a non-finite loss.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax.reproduce import files, plots, tables
from inna_jax.reproduce import registry as reg


def metric(data) -> str:
    """The test metric of a data set: ``test_accuracy`` for classes, else ``test_rmse``."""
    return "test_accuracy" if data.num_classes > 0 else "test_rmse"


def label(method: str, lr: float) -> str:
    """A method and its rate as the table and the legends name them (``"ADAM (lr=0.001)"``)."""
    return f"{reg.OPTIMIZERS[method].label.upper()} (lr={lr:g})"


def history_rows(name: str, method: str, found: Any, per_run: int, key: str) -> list[dict]:
    """One row per run (rate and seed) and epoch of a method's group on data set ``name``;
    ``time_s`` is the group's time over its ``per_run`` runs."""
    return [
        {"dataset": name, "method": method, "learning_rate": lr}
        | {"seed": s, "epoch": h["epoch"], "step": h["step"]}
        | {"time_s": h["time_s"] / per_run, "train_loss": h["train_loss"]}
        | {"metric": key, "value": h.get(key)}
        for lr, runs in found.results.items()
        for s, run in enumerate(runs)
        for h in run.history
    ]


def table_row(name: str, method: str, found: Any, per_run: int, key: str) -> dict[str, Any]:
    """The row of a method's best rate (``found.best``) on data set ``name``."""
    lr = found.best
    hists = [r.history for r in found.results[lr]]
    finals = np.array([h[-1][key] for h in hists], dtype=float)
    group_seconds = max(r.history[-1]["time_s"] for v in found.results.values() for r in v)
    return {
        "dataset": name,
        "method": label(method, lr),
        "learning_rate": lr,
        "metric": key,
        "final_mean": float(np.mean(finals)),
        "final_std": float(np.std(finals)),
        "seconds": float(group_seconds / per_run),
        "steps": int(max(h[-1]["step"] for h in hists)),
        "stopped": int(sum(r.diverged for r in found.results[lr])),
    }


def plot(
    path: Path,
    curves: dict,
    datasets: list,
    *,
    hidden: Sequence[int],
    batch_size: int,
    seeds: int,
    lam: float,
) -> None:
    """``egn_curves.png``: each data set's test metric against seconds per run and steps."""
    fig, axes = plots.figure(len(datasets), 2, width=4.4, height=3.3)
    for col, data in enumerate(datasets):
        key = metric(data)
        for name, (hist_list, per_run) in curves[data.name].items():
            n = min(len(hist) for hist in hist_list)  # a stopped run is shorter
            ys = np.array([[h[key] for h in hist[:n]] for hist in hist_list], dtype=float)
            steps = np.mean([[h["step"] for h in hist[:n]] for hist in hist_list], axis=0)
            secs = np.mean([[h["time_s"] for h in hist[:n]] for hist in hist_list], axis=0)
            line = plots.band(axes[0, col], secs / per_run, ys, label=name)
            plots.band(axes[1, col], steps, ys, label=name, color=line.get_color())
        for row, xlabel in enumerate(("wall-clock seconds per run", "steps")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(key.replace("_", " "))
            ax.grid(alpha=0.3)
            if data.num_classes == 0:
                ax.set_yscale("log")
        axes[0, col].set_title(f"{data.name} ({key.replace('test_', 'test ')})", fontsize=10)
        axes[1, col].legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False
        )
    spread = f"mean and min-max band over {seeds} seeds" if seeds > 1 else "one seed"
    title = (
        f"EGN, SGN, SGD and Adam, MLP {'-'.join(map(str, hidden))}, batch {batch_size} "
        f"({spread}); EGN λ={lam:g} with Armijo line search, SGN λ=1e-3 with 10 CG iterations; "
        "seconds per run = the group's wall time / its runs"
    )
    fig.suptitle(textwrap.fill(title, 55 * len(datasets)), fontsize=9)
    plots.save(fig, path, dpi=110)


_COLUMNS = (
    ("dataset", "<15", ""), ("method", "<17", ""), ("metric", "<14", ""),
    ("final (mean ± std)", "<22", ""), ("s/run", ">9", ".2f"), ("steps", ">8", "d"),
    ("stopped", ">9", "d"),
)  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table as printed: one line per data set and method."""
    cells = [
        (r["dataset"], r["method"], r["metric"],
         f"{r['final_mean']:.4f} ± {r['final_std']:.4f}", r["seconds"], r["steps"],
         r["stopped"])
        for r in rows
    ]  # fmt: skip
    return tables.format_table(_COLUMNS, cells, sep="")


def write(out: Path, rows: list[dict], history: list[dict], summary: dict, start: float) -> None:
    """``table.csv``, ``table.json``, ``histories.csv`` and ``summary.json`` in ``out``; the
    summary's ``wall_seconds`` is the time since ``start`` (``time.perf_counter()``)."""
    files.write_table(out, "table", rows)
    files.write_csv(out / "histories.csv", history)
    summary["wall_seconds"] = time.perf_counter() - start
    files.write_json(out / "summary.json", summary)
