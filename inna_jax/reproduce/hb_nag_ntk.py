"""NTK dynamics of GD, heavy ball and Nesterov on a wide two-layer ReLU net (Bu, Xu, Chen 2021).

A two-layer ReLU network f(x) = m^(-1/2) sum_r a_r relu(w_r . x), a_r = +-1 fixed, trains its
first layer W on n digits (scikit-learn's 8x8 set, inputs standardized then scaled to unit
norm, target = the digit value) with the loss L(W) = 1/2 ||f(X; W) - y||^2. Each method runs
three ways on one time axis (Bu, Xu, Chen, AISTATS 2021, §3: GD t = k eta; heavy ball
t = k sqrt(eta) with a = (1 - b)/sqrt(eta); Nesterov t = k sqrt(s)):

* the discrete method on the network (:func:`inna_jax.dynamics.discrete_path`), and its
  parameter-space ODE (:func:`inna_jax.dynamics.compare`);
* the same discrete method on the linearized network in function space, u -> K(u - y)
  (:func:`inna_jax.dynamics.discrete_path` again);
* the NTK function-space ODE with the infinite-width kernel K (analytic: Jacot et al. 2018;
  Bu, Xu, Chen 2021, §3),
  :func:`inna_jax.dynamics.solve_function_space`.

It prints and writes the fitted log-loss slopes against the predicted rates (GD -2 lambda_0,
heavy ball -2c, Nesterov log-log -r), the loss curves on semilog and log-log axes, and a width
sweep showing the network-to-NTK gap closing as m grows.

Table columns: "network" is the discrete method on the network; "NTK discr" the same discrete
method on the infinite-width NTK model u -> K(u - y); "NTK ODE" its function-space ODE;
"predicted" the asymptotic formula. Slopes are fitted on the second half of the run (semilog)
or its last three quarters (log-log, Nesterov). Two effects keep "network" away from
"predicted" at a few thousand units: (1) the smallest eigenvalues of the finite-width kernel
K_m differ from those of K by far more than lambda_0 itself (||K_m - K|| falls like m^(-1/2)),
which is why the width sweep closes the gap slowly; (2) the discrete Nesterov method at step s
carries an extra factor (1 - s lambda)^(k/2) ~ exp(-sqrt(s) lambda t / 2) per eigendirection
(the O(sqrt(s)) Hessian-damping correction of the high-resolution ODE, Shi et al. 2018), so
its log-log slopes at s = 0.05 are steeper than the ODE's -r. The GD and heavy-ball windows
are not yet asymptotic for the NTK ODE either: its slope tends to the formula only once the
modes above lambda_0 have died (HB b = 0.8 gets there within the default run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from inna_jax import ntk_gram
from inna_jax.dynamics import (
    analytic_relu_ntk,
    compare,
    discrete_path,
    fit_log_slope,
    predicted_rate,
    solve_function_space,
)
from inna_jax.reproduce import cli_args

DEFAULT_WIDTHS = (256, 1024, 4096)
FULL_WIDTHS = (256, 1024, 4096, 16384)
SWEEP_CONFIGS = (("gd", 0.0), ("heavy_ball", 0.5), ("nesterov", 3.0))


def digits_regression(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training digits: standardized pixels scaled to unit norm, target = digit value.

    Example:
        >>> x, y = digits_regression(5)
        >>> x.shape, round(float((x**2).sum(1).max()), 6), y.dtype.name
        ((5, 64), 1.0, 'float64')
    """
    from inna_jax.data import load_digits

    data = load_digits(seed=seed)
    if not 2 <= n <= len(data.x_train):
        raise ValueError(f"n must be in [2, {len(data.x_train)}], got n={n!r}")
    x = data.x_train[:n].astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x, data.y_train[:n].astype(np.float64)


def two_layer_relu(params: jax.Array, inputs: jax.Array, signs: jax.Array) -> jax.Array:
    r""":math:`f(x) = m^{-1/2}\sum_r a_r\,\mathrm{relu}(w_r\cdot x)`; ``params`` is W, (m, d).

    Example:
        >>> import jax.numpy as jnp
        >>> w = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> two_layer_relu(w, jnp.array([[2.0, -1.0]]), jnp.array([1.0, -1.0])).round(4)
        Array([1.4142], dtype=float32)
    """
    return jax.nn.relu(inputs @ params.T) @ signs / jnp.sqrt(signs.shape[0])


def init_network(key: jax.Array, width: int, dim: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """W ~ N(0, I) of shape (width, dim) and fixed output signs a_r = +-1.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w, signs = init_network(jax.random.PRNGKey(0), 8, 3, jnp.float32)
        >>> w.shape, sorted(set(signs.tolist())) in ([-1.0, 1.0], [-1.0], [1.0])
        ((8, 3), True)
    """
    key_w, key_a = jax.random.split(key)
    w = jax.random.normal(key_w, (width, dim), dtype)
    signs = jax.random.rademacher(key_a, (width,)).astype(dtype)
    return w, signs


def _configs(momenta: Sequence[float], dampings: Sequence[float]) -> list[tuple[str, float]]:
    return (
        [("gd", 0.0)]
        + [("heavy_ball", float(b)) for b in momenta]
        + [("nesterov", float(r)) for r in dampings]
    )


def _label(method: str, hyper: float) -> str:
    return {"gd": "GD", "heavy_ball": f"HB b={hyper:g}", "nesterov": f"NAG r={hyper:g}"}[method]


class _Problem:
    """One width: the network, its loss, and the linearized (function-space) loss, jitted once."""

    def __init__(self, x, y, width, seed, dtype):
        self.x, self.y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        self.w0, signs = init_network(jax.random.PRNGKey(seed), width, x.shape[1], dtype)
        predict = jax.tree_util.Partial(two_layer_relu, signs=signs)
        self.predict = predict
        xs, ys = self.x, self.y
        # one loss object per width: compare() compiles once per (method, loss_fn, steps)
        self.loss_fn = jax.tree_util.Partial(_network_loss, predict, xs, ys)
        self.u0 = predict(self.w0, xs)
        self.path_loss = jax.jit(
            lambda path: jax.lax.map(
                lambda w: _network_loss(predict, xs, ys, w), path, batch_size=64
            )
        )


def _network_loss(predict, x, y, w):
    return 0.5 * jnp.sum((predict(w, x) - y) ** 2)


def _kernel_loss(kernel, y, u):
    """A function-space loss whose gradient is the NTK drive K (u - y)."""
    return 0.5 * (u - y) @ (kernel @ (u - y))


def _method_args(method: str, hyper: float, lr: float) -> dict[str, Any]:
    """The method's hyperparameter in the vocabulary of :mod:`inna_jax.dynamics`: heavy ball's
    momentum b becomes its friction a = (1 - b)/sqrt(eta); Nesterov's r is its damping."""
    if method == "heavy_ball":
        return {"friction": (1 - hyper) / math.sqrt(lr)}
    if method == "nesterov":
        return {"damping": hyper}
    return {}


def _run_one(problem, method, hyper, lr, steps, kernel, *, param_ode):
    """Losses on one time axis: discrete network, its parameter ODE (if ``param_ode``), the
    discrete method on the linearized network, and the NTK function-space ODE."""
    args = _method_args(method, hyper, lr)
    n = problem.y.shape[0]
    dt = lr if method == "gd" else math.sqrt(lr)
    ts = dt * np.arange(steps + 1)
    curves = {"ts": ts}
    if param_ode:
        # one Tsit5 step per iterate: the ReLU kinks make adaptive steps crawl at dtmin
        ode = {"stepsize_controller": diffrax.ConstantStepSize(), "dt0": dt}
        res = compare(
            method, problem.loss_fn, problem.w0, steps=steps, learning_rate=lr, **args, **ode
        )
        curves["discrete"] = np.asarray(problem.path_loss(res.discrete), np.float64) / n
        curves["param_ode"] = np.asarray(problem.path_loss(res.continuous), np.float64) / n
        w_last = res.discrete[-1]
        del res
    else:
        # the discrete runner of inna_jax.dynamics, keeping only the loss of each iterate
        net = discrete_path(
            method,
            problem.loss_fn,
            problem.w0,
            steps=steps,
            learning_rate=lr,
            record=problem.loss_fn,
            **args,
        )
        curves["discrete"] = np.asarray(net.values, np.float64) / n
        w_last = net.final
    lin_loss = jax.tree_util.Partial(_kernel_loss, jnp.asarray(kernel, problem.u0.dtype), problem.y)
    lin = discrete_path(method, lin_loss, problem.u0, steps=steps, learning_rate=lr, **args)
    u_lin = np.asarray(lin.values, np.float64)
    curves["linear"] = 0.5 * np.sum((u_lin - np.asarray(problem.y)) ** 2, axis=1) / n
    ntk = solve_function_space(method, kernel, problem.u0, problem.y, ts, **args)
    curves["ntk_ode"] = np.asarray(ntk.loss, np.float64) / n
    u_last = np.asarray(problem.predict(w_last, problem.x), np.float64)
    curves["final_prediction_gap"] = float(np.linalg.norm(u_last - u_lin[-1]))
    return curves


def _slopes(method, hyper, lr, ts, curves, lambda0):
    """Fitted slopes on the second half of the run against the predicted asymptotic rate."""
    t_end = ts[-1]
    row = {"method": method, "hyper": hyper}
    loglog = method == "nesterov"
    t_min = t_end / 4 if loglog else t_end / 2
    for key in ("discrete", "linear", "ntk_ode"):
        row[f"slope_{key}"] = fit_log_slope(
            ts, curves[key], t_min=t_min, t_max=t_end, loglog=loglog
        )
    if method == "gd":
        row["predicted"] = -2 * predicted_rate("gd", lambda0)
        row["friction"] = float("nan")
    elif method == "heavy_ball":
        a = (1 - hyper) / math.sqrt(lr)
        row["predicted"] = -2 * predicted_rate("heavy_ball", lambda0, friction=a)
        row["friction"] = a
    else:
        row["predicted"] = -2 * predicted_rate("nesterov", lambda0, damping=hyper)
        row["friction"] = float("nan")
        early = fit_log_slope(ts, curves["discrete"], t_min=t_end / 8, t_max=t_end / 4)
        late = fit_log_slope(ts, curves["discrete"], t_min=t_end / 2, t_max=t_end)
        row["semilog_flattening"] = early / late
    row["fit"] = "log-log" if loglog else "semilog"
    row["window"] = f"[{t_min:.3g}, {t_end:.3g}]"
    dt = lr if method == "gd" else math.sqrt(lr)
    row["slope_per_step"] = row["slope_discrete"] * (1.0 if loglog else dt)
    return row


def _log_gap(a: np.ndarray, b: np.ndarray) -> float:
    """max_k |log a_k - log b_k|: the largest ratio between two loss curves, in log units."""
    return float(np.max(np.abs(np.log(a) - np.log(b))))


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'method':<12} {'fit':<8} {'window t':<16} {'network':>9} {'NTK discr':>10} "
        f"{'NTK ODE':>9} {'predicted':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{_label(r['method'], r['hyper']):<12} {r['fit']:<8} {r['window']:<16} "
            f"{r['slope_discrete']:>9.4f} {r['slope_linear']:>10.4f} "
            f"{r['slope_ntk_ode']:>9.4f} {r['predicted']:>10.4f}"
        )
    return "\n".join(lines)


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


def _config_label(method: str, hyper: float, lr: float) -> str:
    """The legend label of one configuration, with heavy ball's friction a."""
    if method == "heavy_ball":
        return f"HB b={hyper:g} (a={(1 - hyper) / math.sqrt(lr):.2f})"
    return _label(method, hyper)


def _plot_curves(out, curves_by_config, loglog, settings):
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
        (line,) = ax.plot(ts[keep], c["discrete"][keep], label=_config_label(method, hyper, lr))
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
    fig.suptitle(
        f"Two-layer ReLU net on {settings['n']} digits, width {settings['width']}: "
        f"η = s = {lr:g}, {settings['steps']} steps, {settings['dtype']}",
        fontsize=11,
    )
    fig.tight_layout()
    name = "loss_loglog.png" if loglog else "loss_semilog.png"
    fig.savefig(out / name, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plot_slopes(out, rows, settings):
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
                _label(r["method"], r["hyper"]),
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
    fig.suptitle(
        f"Fitted against predicted loss slopes: {settings['n']} digits, η = s = "
        f"{settings['learning_rate']:g}, {settings['steps']} steps",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out / "slopes.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _plot_width(out, sweep_rows, settings):
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
        color_handles.append(Line2D([], [], color=color, label=_config_label(method, hyper, lr)))
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
    fig.suptitle(
        f"Width sweep: {settings['n']} digits, η = s = {lr:g}, {settings['sweep_steps']} steps, "
        f"widths {', '.join(str(w) for w in kernel_rows)}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out / "width_sweep.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")


def _check_settings(n, width, widths, steps, sweep_steps, lr, momenta, dampings, configs):
    """One-line errors for the settings of :func:`run` (its argument names)."""
    _check_int("n", n, 2)
    _check_int("width", width, 1)
    if len(widths) == 0:
        raise ValueError("widths must hold at least one width, got widths=()")
    for w in widths:
        _check_int("widths", w, 1)
    _check_int("steps", steps, 8)  # the slope windows [T/8, T/4] need two iterates
    _check_int("sweep_steps", sweep_steps, 1)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got learning_rate={lr!r}")
    for b in momenta:
        if not (isinstance(b, int | float) and 0 <= b < 1):
            raise ValueError(f"momenta must be numbers in [0, 1), got {b!r} in momenta")
    for r in dampings:
        if not (isinstance(r, int | float) and math.isfinite(r) and r > 0):
            raise ValueError(f"dampings must be finite numbers > 0, got {r!r} in dampings")
    for config in configs:
        method, hyper = config
        ok = {"gd": True, "heavy_ball": 0 <= hyper < 1, "nesterov": hyper > 0}.get(method)
        if not ok:
            raise ValueError(
                "sweep_configs must be (method, hyperparameter) pairs: ('gd', 0), ('heavy_ball', "
                f"b in [0, 1)) or ('nesterov', r > 0), got {config!r}"
            )


def run(
    *,
    out: str | pathlib.Path = "results/hb_nag_ntk",
    n: int = 500,
    width: int = 1024,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    steps: int = 1000,
    sweep_steps: int = 200,
    learning_rate: float = 0.05,
    momenta: Sequence[float] = (0.2, 0.5, 0.8),
    dampings: Sequence[float] = (2.0, 3.0, 6.0, 8.0),
    sweep_configs: Sequence[tuple[str, float]] = SWEEP_CONFIGS,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs the method sweep at one width and the width sweep; writes CSV, JSON and PNG.

    Args:
        out: output folder.
        n: number of training digits.
        width: hidden width m of the method sweep (GD, HB for each momentum, NAG for each r).
        widths: widths of the width sweep.
        steps: iterations of the method sweep.
        sweep_steps: iterations of the width sweep.
        learning_rate: eta for GD and heavy ball, s for Nesterov (sum-of-squares loss).
        momenta: heavy-ball momenta b (friction a = (1 - b)/sqrt(eta)).
        dampings: Nesterov damping constants r (momentum (k-1)/(k+r-1)).
        sweep_configs: ``(method, momentum or r)`` pairs of the width sweep.
        seed: seed of the data split and of the network initialisation.
        verbose: print progress and the table.

    Returns:
        A summary dict: lambda_0, lambda_max, the rate rows and the width-sweep rows.

    Raises:
        ValueError: one line naming the argument, for a bad count, width, step, momentum,
            damping or sweep configuration (before anything is computed).
    """
    _check_settings(n, width, widths, steps, sweep_steps, learning_rate, momenta, dampings,
                    sweep_configs)  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    start = time.perf_counter()
    x, y = digits_regression(n, seed=seed)
    kernel = np.asarray(analytic_relu_ntk(x), np.float64)
    eigenvalues = np.linalg.eigvalsh(kernel)
    lambda0, lambda_max = float(eigenvalues[0]), float(eigenvalues[-1])
    if verbose:
        print(
            f"digits regression: n={n}, d={x.shape[1]}; analytic NTK lambda_0={lambda0:.4g}, "
            f"lambda_max={lambda_max:.4g}; eta={learning_rate} (eta*lambda_max="
            f"{learning_rate * lambda_max:.3g}); dtype={jnp.dtype(dtype).name}"
        )

    # 1. method sweep at one width
    problem = _Problem(x, y, width, seed, dtype)
    curves_by_config, rows, curve_rows = {}, [], []
    for method, hyper in _configs(momenta, dampings):
        t_run = time.perf_counter()
        curves = _run_one(problem, method, hyper, learning_rate, steps, kernel, param_ode=False)
        curves_by_config[(method, hyper)] = curves
        rows.append(_slopes(method, hyper, learning_rate, curves["ts"], curves, lambda0))
        stride = max(1, steps // 200)
        for i in range(0, steps + 1, stride):
            curve_rows.append(
                {"method": method, "hyper": hyper, "t": curves["ts"][i]}
                | {k: curves[k][i] for k in ("discrete", "linear", "ntk_ode")}
            )
        if verbose:
            print(f"  {_label(method, hyper):<10} m={width}: {time.perf_counter() - t_run:.1f} s")
    _write_csv(out / "curves.csv", curve_rows)
    _write_csv(out / "rates.csv", rows)
    settings = {
        "n": n,
        "width": width,
        "steps": steps,
        "sweep_steps": sweep_steps,
        "learning_rate": learning_rate,
        "dtype": jnp.dtype(dtype).name,
    }
    _plot_curves(out, curves_by_config, loglog=False, settings=settings)
    _plot_curves(out, curves_by_config, loglog=True, settings=settings)
    _plot_slopes(out, rows, settings)
    table = _format_table(rows)
    if verbose:
        print("\nfitted slopes of log(loss) against the predicted asymptotic rates")
        print("(semilog: d log L / dt; log-log: d log L / d log t; predicted: -2 lambda_0,")
        print(" -2c with c = (a - sqrt(max(a^2 - 4 lambda_0, 0)))/2, and -r for Nesterov)")
        print(table)
        for r in rows:
            if r["method"] == "nesterov":
                print(
                    f"  {_label('nesterov', r['hyper'])}: semilog slope flattens by "
                    f"{r['semilog_flattening']:.2f}x from t in [T/8, T/4] to [T/2, T] "
                    "(pure power law: 4x; linear convergence: 1x)"
                )

    # 2. width sweep
    sweep_rows = []
    for m in widths:
        problem = _Problem(x, y, m, seed, dtype)
        k_m = np.asarray(ntk_gram(problem.predict, problem.w0, problem.x), np.float64)
        kernel_error = float(np.linalg.norm(k_m - kernel) / np.linalg.norm(kernel))
        for method, hyper in sweep_configs:
            t_run = time.perf_counter()
            c = _run_one(problem, method, hyper, learning_rate, sweep_steps, kernel, param_ode=True)
            sweep_rows.append(
                {
                    "width": m,
                    "method": method,
                    "hyper": hyper,
                    "kernel_error": kernel_error,
                    "gap_network_vs_linear": _log_gap(c["discrete"], c["linear"]),
                    "gap_network_vs_ntk_ode": _log_gap(c["discrete"], c["ntk_ode"]),
                    "gap_param_ode_vs_ntk_ode": _log_gap(c["param_ode"], c["ntk_ode"]),
                    "final_prediction_gap": c["final_prediction_gap"],
                    "final_loss_network": float(c["discrete"][-1]),
                    "final_loss_param_ode": float(c["param_ode"][-1]),
                    "final_loss_ntk_ode": float(c["ntk_ode"][-1]),
                }
            )
            if verbose:
                r = sweep_rows[-1]
                print(
                    f"  width {m:>6} {_label(method, hyper):<10} gap(network, NTK discr)="
                    f"{r['gap_network_vs_linear']:.2e} gap(param ODE, NTK ODE)="
                    f"{r['gap_param_ode_vs_ntk_ode']:.2e} |K_m-K|/|K|={kernel_error:.3f} "
                    f"({time.perf_counter() - t_run:.1f} s)"
                )
    _write_csv(out / "width_sweep.csv", sweep_rows)
    _plot_width(out, sweep_rows, settings)
    summary = {
        "n": n,
        "dim": int(x.shape[1]),
        "width": width,
        "widths": list(widths),
        "steps": steps,
        "sweep_steps": sweep_steps,
        "learning_rate": learning_rate,
        "lambda_0": lambda0,
        "lambda_max": lambda_max,
        "dtype": jnp.dtype(dtype).name,
        "rates": rows,
        "width_sweep": sweep_rows,
        "seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if verbose:
        print(
            f"\nwrote {out}/ (rates.csv, curves.csv, width_sweep.csv, summary.json, PNGs) "
            f"in {summary['seconds']:.0f} s"
        )
    summary["table"] = table
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax dynamics-ntk``."""
    parser.add_argument("--out", default="results/hb_nag_ntk", help="output folder")
    pos_int, pos_float = cli_args.positive_int, cli_args.positive_float
    parser.add_argument(
        "--n", type=cli_args.int_at_least(2), default=500, help="number of training digits"
    )
    parser.add_argument(
        "--width", type=pos_int, default=1024, help="hidden width of the method sweep"
    )
    parser.add_argument(
        "--widths",
        type=pos_int,
        nargs="+",
        default=list(DEFAULT_WIDTHS),
        help="widths of the sweep",
    )
    parser.add_argument(
        "--steps",
        type=cli_args.int_at_least(8),
        default=1000,
        help="iterations of the method sweep (at least 8: the rate is fitted on [T/8, T/4])",
    )
    parser.add_argument(
        "--sweep-steps", type=pos_int, default=200, help="iterations of the width sweep"
    )
    parser.add_argument(
        "--lr", type=pos_float, default=0.05, help="eta (GD, heavy ball) and s (Nesterov)"
    )
    parser.add_argument(
        "--momenta",
        type=cli_args.float_in(0.0, 1.0),
        nargs="+",
        default=[0.2, 0.5, 0.8],
        help="heavy-ball momenta b, in [0, 1)",
    )
    parser.add_argument(
        "--dampings",
        type=pos_float,
        nargs="+",
        default=[2.0, 3.0, 6.0, 8.0],
        help="Nesterov damping constants r",
    )
    parser.add_argument(
        "--seed", type=cli_args.nonnegative_int, default=0, help="seed of data split and init"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="the full sweep: widths 256..16384, width 4096 for the method sweep, 2000 steps "
        "(overrides --widths, --width, --steps, --sweep-steps; float64; about an hour on CPU)",
    )


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` from parsed command-line flags."""
    from inna_jax.data import load_digits

    available = len(load_digits(seed=args.seed).x_train)
    if args.n > available:
        raise cli_args.UsageError(f"--n {args.n}: must be at most the {available} training digits")
    kwargs = dict(
        out=args.out,
        n=args.n,
        width=args.width,
        widths=args.widths,
        steps=args.steps,
        sweep_steps=args.sweep_steps,
        learning_rate=args.lr,
        momenta=args.momenta,
        dampings=args.dampings,
        seed=args.seed,
    )
    if args.full:
        jax.config.update("jax_enable_x64", True)
        kwargs.update(width=4096, widths=FULL_WIDTHS, steps=2000, sweep_steps=1000)
    run(**kwargs)
    return 0
