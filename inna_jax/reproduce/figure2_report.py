"""The tables and the figure of ``inna-jax figure2``: curves per seed, the final table, the
setting's label, ``figure2.png`` and the files of :func:`inna_jax.reproduce.figure2.run`.

Every number here is read from the runs of :mod:`inna_jax.reproduce.figure2_methods`; the
mean and min-max over seeds are :func:`inna_jax.reproduce.plots.spread`'s, in the table and
in the figure's bands alike.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax.reproduce import files, plots, tables

#: The output files, in the order the command lists them.
FILES = ("grid.csv", "histories.csv", "table.csv", "table.json", "figure2.png", "summary.json")


def curves(histories: list[list[dict]], epochs: int) -> dict[str, np.ndarray]:
    """Per-seed arrays ``(seeds, epochs + 1)`` of ``train_loss``, ``test_accuracy`` and
    ``log10_train_loss``, NaN after a divergence."""
    out = {}
    for key in ("train_loss", "test_accuracy"):
        a = np.full((len(histories), epochs + 1), np.nan)
        for s, hist in enumerate(histories):
            for row in hist:
                a[s, row["epoch"]] = row[key]
        out[key] = a
    with np.errstate(divide="ignore", invalid="ignore"):
        out["log10_train_loss"] = np.log10(out["train_loss"])
    return out


def history_rows(method: str, runs: list) -> list[dict]:
    """One row per seed and evaluated epoch, as in ``histories.csv``."""
    keys = ("train_loss", "test_loss", "test_accuracy")
    return [
        {"method": method, "seed": s, "epoch": r["epoch"]} | {k: r[k] for k in keys}
        for s, run in enumerate(runs)
        for r in run.history
    ]


def table_row(method: str, gamma0: float, runs: list, c: dict, epochs: int, seeds: int) -> dict:
    """A method's row of the final table: the last epoch's mean, min and max over seeds."""
    loss, loss_lo, loss_hi = (v[-1] for v in plots.spread(c["log10_train_loss"]))
    acc, acc_lo, acc_hi = (v[-1] for v in plots.spread(c["test_accuracy"]))
    return {
        "method": method,
        "gamma0": gamma0,
        "epochs": epochs,
        "seeds": seeds,
        "log10_train_loss": float(loss),
        "log10_train_loss_min": float(loss_lo),
        "log10_train_loss_max": float(loss_hi),
        "test_accuracy": float(acc),
        "test_accuracy_min": float(acc_lo),
        "test_accuracy_max": float(acc_hi),
        "diverged_seeds": sum(r.diverged for r in runs),
    }


def setting_label(
    dataset, model_params, epochs, seeds, reduced, num_train, num_samples=None
) -> str:
    """One line naming the setting, and whether it is the paper's or a reduced one."""
    name = {"digits": "digits 8x8", "mnist1d": "mnist1d", "cifar100": "CIFAR-100"}[dataset]
    if num_samples is not None:
        name = f"{name} ({num_samples:,} generated signals)"
    model = "NiN" if dataset == "cifar100" else "small CNN"
    subset = f", first {num_train} training examples" if num_train else ""
    plural = lambda n, word: f"{n} {word}" + ("s" if n != 1 else "")  # noqa: E731
    what = (
        f"{name}{subset}, {model} ({model_params:,} params), {plural(epochs, 'epoch')}, "
        f"{plural(seeds, 'seed')}"
    )
    if reduced:
        return f"REDUCED setting, not the paper's (CIFAR-100, NiN, 200 epochs, 5 seeds): {what}"
    return f"paper setting: {what}"


def plot(path: Path, curves: dict, table: dict, label: str, batch_size: int) -> None:
    """``figure2.png``: log10 training loss and test accuracy per epoch, one band a method."""
    fig, axes = plots.figure(2, width=5.4, height=4.2)
    seeds = 0
    for method, c in curves.items():
        g0 = table[method]["gamma0"]
        seeds = c["train_loss"].shape[0]
        epochs = np.arange(c["train_loss"].shape[1])
        line = None
        for ax, key in zip(axes[0], ("log10_train_loss", "test_accuracy"), strict=True):
            line = plots.band(
                ax, epochs, c[key], label=f"{method}, $\\gamma_0$={g0:g}",
                color=None if line is None else line.get_color(),
            )  # fmt: skip
    spread = f"mean and min-max band over {seeds} seeds" if seeds > 1 else "one seed"
    axes[0, 0].set(
        xlabel="epoch", ylabel="log10 training loss", title=f"training loss (batch {batch_size})"
    )
    acc = axes[0, 1]
    acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    last = max(c["test_accuracy"].shape[1] for c in curves.values()) - 1
    if last >= 2:  # zoom to the trained epochs: epoch 0 is chance level
        acc.set_xlim(1, last)
        acc.set_title("test accuracy (from epoch 1)")
    plots.zoom(acc, [c["test_accuracy"][:, 1:] for c in curves.values()], lower=0, upper=1)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        plots.integer_ticks(ax)
    plots.legend_outside(fig, axes[0, 0], where="bottom", ncols=3)
    title = f"Figure 2 ({spread}; INNA and SGD: $\\gamma_k = \\gamma_0/\\sqrt{{k+1}}$). {label}"
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    plots.save(fig, path)


_COLUMNS = (
    ("method", "<16", ""), ("gamma0", ">8", "g"), ("log10 train loss (min..max)", ">30", ""),
    ("test accuracy (min..max)", ">28", ""), ("diverged", ">8", "d"),
)  # fmt: skip


def format_table(rows: list[dict]) -> str:
    """The final table as printed: mean (min..max) over seeds of each method."""
    cells = [
        (
            r["method"],
            r["gamma0"],
            f"{r['log10_train_loss']:+.3f} ({r['log10_train_loss_min']:+.3f}.."
            f"{r['log10_train_loss_max']:+.3f})",
            f"{r['test_accuracy']:.4f} ({r['test_accuracy_min']:.4f}.."
            f"{r['test_accuracy_max']:.4f})",
            r["diverged_seeds"],
        )
        for r in rows
    ]  # fmt: skip
    return tables.format_table(_COLUMNS, cells)


def write(out: Path, summary: dict[str, Any], grid_rows, history_rows, curves: dict) -> None:
    """Writes :data:`FILES` into ``out``; ``summary`` holds the setting, gamma0 and table."""
    rows = summary["table"]
    files.write_csv(out / "grid.csv", grid_rows)
    files.write_csv(out / "histories.csv", history_rows)
    files.write_table(out, "table", rows)
    setting = summary["setting"]
    table = {r["method"]: r for r in rows}
    plot(out / "figure2.png", curves, table, setting["label"], setting["batch_size"])
    files.write_json(out / "summary.json", summary)
