"""The table and the figures of ``inna-jax dynamics-ntk``: the fitted slopes as text, the
loss curves (semilog and log-log), the slopes against their predictions and the width sweep.

The figures are pyplot figures saved with ``bbox_inches="tight"``, drawn from the rows and
curves of :mod:`inna_jax.reproduce.hb_nag_ntk_runs`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inna_jax.reproduce import tables
from inna_jax.reproduce.hb_nag_ntk_runs import label

_COLUMNS = (
    ("method", "<12", ""), ("fit", "<8", ""), ("window t", "<16", ""), ("network", ">9", ".4f"),
    ("NTK discr", ">10", ".4f"), ("NTK ODE", ">9", ".4f"), ("predicted", ">10", ".4f"),
)  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """The fitted slopes of each configuration (network, NTK model, NTK ODE) and the predicted
    rate, as printed."""
    cells = [
        (label(r["method"], r["hyper"]), r["fit"], r["window"], r["slope_discrete"],
         r["slope_linear"], r["slope_ntk_ode"], r["predicted"])
        for r in rows
    ]  # fmt: skip
    return tables.format_table(_COLUMNS, cells)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(ax, handles=None, ncol=2):
    """A legend under the axes, outside the data."""
    kwargs = {} if handles is None else {"handles": handles}
    ax.legend(
        **kwargs,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=ncol,
        fontsize=8,
        frameon=False,
    )


def _save(plt, fig, title: str, path) -> None:
    """The figure's title, a tight layout, the PNG at 120 dpi, and the figure closed."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def config_label(method: str, hyper: float, lr: float) -> str:
    """The legend label of one configuration, with heavy ball's friction a."""
    if method == "heavy_ball":
        return f"HB b={hyper:g} (a={(1 - hyper) / math.sqrt(lr):.2f})"
    return label(method, hyper)


def plot_curves(out, curves_by_config, loglog, settings):
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    panels = {"gd": axes[0], "heavy_ball": axes[1], "nesterov": axes[2]}
    titles = {
        "gd": "GD (t = kη)",
        "heavy_ball": "heavy ball (t = k√η, a = (1 − b)/√η)",
        "nesterov": "Nesterov (t = k√s, momentum (k−1)/(k+r−1))",
    }
    handles = {m: [] for m in panels}
    lr = settings["learning_rate"]
    for (method, hyper), c in curves_by_config.items():
        ax = panels[method]
        ts = c["ts"]
        keep = ts > 0 if loglog else slice(None)
        (line,) = ax.plot(ts[keep], c["discrete"][keep], label=config_label(method, hyper, lr))
        ax.plot(ts[keep], c["ntk_ode"][keep], "--", color=line.get_color())
        handles[method].append(line)
    style = [
        Line2D([], [], color="k", label=f"network, width m = {settings['width']}"),
        Line2D([], [], color="k", ls="--", label="NTK function-space ODE (m = ∞)"),
    ]
    for method, ax in panels.items():
        ax.set_yscale("log")
        if loglog:
            ax.set_xscale("log")
        ax.set_title(titles[method], fontsize=10)
        ax.set_xlabel("t")
        _legend_below(ax, handles[method] + style)
    axes[0].set_ylabel("training loss ||u − y||² / 2n")
    title = (
        f"Two-layer ReLU net on {settings['n']} digits, width {settings['width']}: "
        f"η = s = {lr:g}, {settings['steps']} steps, {settings['dtype']}"
    )
    _save(plt, fig, title, out / ("loss_loglog.png" if loglog else "loss_semilog.png"))


def plot_slopes(out, rows, settings):
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.0))
    titles = {
        "semilog": "semilog slopes (GD, heavy ball): d log L / dt",
        "log-log": "log-log slopes (Nesterov): d log L / d log t",
    }
    for ax, kind in zip(axes, ("semilog", "log-log"), strict=True):
        sel = [r for r in rows if r["fit"] == kind]
        ax.set_title(titles[kind], fontsize=10)
        if not sel:
            continue
        pred = np.array([r["predicted"] for r in sel])
        names = {
            "slope_discrete": f"network (width {settings['width']})",
            "slope_ntk_ode": "NTK ODE",
        }
        for key, marker in (("slope_discrete", "o"), ("slope_ntk_ode", "x")):
            ax.scatter(pred, [r[key] for r in sel], marker=marker, label=names[key])
        for r in sel:
            ax.annotate(
                label(r["method"], r["hyper"]),
                (r["predicted"], r["slope_discrete"]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
            )
        lo = min(pred.min(), *(min(r["slope_discrete"], r["slope_ntk_ode"]) for r in sel))
        ax.plot([lo, 0.0], [lo, 0.0], "k:", lw=1, label="measured = predicted")
        ax.set_xlabel("predicted asymptotic slope")
        ax.set_ylabel(f"fitted {kind} slope of the loss")
        _legend_below(ax, ncol=3)
    title = (
        f"Fitted against predicted loss slopes: {settings['n']} digits, η = s = "
        f"{settings['learning_rate']:g}, {settings['steps']} steps"
    )
    _save(plt, fig, title, out / "slopes.png")


def plot_width(out, sweep_rows, settings):
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    configs = list(dict.fromkeys((r["method"], r["hyper"]) for r in sweep_rows))
    lr = settings["learning_rate"]
    color_handles = []
    for i, (method, hyper) in enumerate(configs):
        sel = [r for r in sweep_rows if (r["method"], r["hyper"]) == (method, hyper)]
        widths = [r["width"] for r in sel]
        color = f"C{i}"
        axes[0].loglog(widths, [r["gap_network_vs_linear"] for r in sel], "o-", color=color)
        axes[0].loglog(widths, [r["gap_param_ode_vs_ntk_ode"] for r in sel], "x--", color=color)
        axes[1].loglog(widths, [r["final_loss_network"] for r in sel], "o-", color=color)
        axes[1].axhline(sel[0]["final_loss_ntk_ode"], color=color, ls=":")
        color_handles.append(Line2D([], [], color=color, label=config_label(method, hyper, lr)))
    gap_style = [
        Line2D([], [], color="k", marker="o", label="network vs NTK model (discrete)"),
        Line2D([], [], color="k", marker="x", ls="--", label="parameter ODE vs NTK ODE"),
    ]
    loss_style = [
        Line2D([], [], color="k", marker="o", label="network"),
        Line2D([], [], color="k", ls=":", label="NTK ODE (m = ∞)"),
    ]
    kernel_rows = {r["width"]: r["kernel_error"] for r in sweep_rows}
    axes[2].loglog(list(kernel_rows), list(kernel_rows.values()), "o-", label="||K_m − K|| / ||K||")
    ref = np.array(list(kernel_rows))
    axes[2].loglog(ref, kernel_rows[ref[0]] * np.sqrt(ref[0] / ref), "k:", label="∝ m^(−1/2)")
    axes[0].set_title("max_t |log loss − log loss of the NTK model|", fontsize=10)
    axes[1].set_title(f"training loss after {settings['sweep_steps']} steps", fontsize=10)
    axes[2].set_title("empirical NTK at init against the analytic kernel", fontsize=10)
    for ax in axes:
        ax.set_xlabel("width m")
        ax.set_xticks(ref, [str(w) for w in ref])
        ax.xaxis.set_minor_formatter(NullFormatter())
    _legend_below(axes[0], color_handles + gap_style)
    _legend_below(axes[1], color_handles + loss_style)
    _legend_below(axes[2])
    title = (
        f"Width sweep: {settings['n']} digits, η = s = {lr:g}, {settings['sweep_steps']} steps, "
        f"widths {', '.join(str(w) for w in kernel_rows)}"
    )
    _save(plt, fig, title, out / "width_sweep.png")
