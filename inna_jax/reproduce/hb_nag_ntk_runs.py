"""The runs of ``inna-jax dynamics-ntk``: the data, the two-layer ReLU network, one method
run three ways on one time axis, the fitted slopes, and the two sweeps.

Each configuration is a method (``"gd"``, ``"heavy_ball"`` or ``"nesterov"``) and its
hyperparameter (heavy ball's momentum b, Nesterov's damping r), run by :func:`run_one` as
the discrete method on the network (:func:`inna_jax.dynamics.discrete_path`, or with its
parameter-space ODE, :func:`inna_jax.dynamics.compare`), the same discrete method on the
linearized network u -> K(u - y), and the NTK function-space ODE
(:func:`inna_jax.dynamics.solve_function_space`); Bu, Xu, Chen, AISTATS 2021, Section 3.
:func:`method_sweep` runs every configuration at one width, :func:`width_sweep` a few
configurations at several widths. :mod:`inna_jax.reproduce.hb_nag_ntk` reads the settings
and writes the files; :mod:`inna_jax.reproduce.hb_nag_ntk_plots` draws the figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from inna_jax import ntk_gram
from inna_jax.dynamics import (
    compare,
    discrete_path,
    fit_log_slope,
    predicted_rate,
    solve_function_space,
)


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


def configs(momenta: Sequence[float], dampings: Sequence[float]) -> list[tuple[str, float]]:
    """The method sweep's configurations: GD, heavy ball per momentum, Nesterov per damping."""
    return (
        [("gd", 0.0)]
        + [("heavy_ball", float(b)) for b in momenta]
        + [("nesterov", float(r)) for r in dampings]
    )


def label(method: str, hyper: float) -> str:
    """A configuration's short name in tables and legends (``"HB b=0.5"``, ``"NAG r=3"``)."""
    return {"gd": "GD", "heavy_ball": f"HB b={hyper:g}", "nesterov": f"NAG r={hyper:g}"}[method]


class Problem:
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


def run_one(problem, method, hyper, lr, steps, kernel, *, param_ode):
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


def slopes(method, hyper, lr, ts, curves, lambda0):
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


def log_gap(a: np.ndarray, b: np.ndarray) -> float:
    """max_k |log a_k - log b_k|: the largest ratio between two loss curves, in log units."""
    return float(np.max(np.abs(np.log(a) - np.log(b))))


def method_sweep(problem, kernel, lambda0, momenta, dampings, lr, steps, verbose):
    """Every configuration of :func:`configs` at one width.

    Returns:
        ``(curves_by_config, rows, curve_rows)``: :func:`run_one`'s curves per
        ``(method, hyper)``, one row of :func:`slopes` per configuration, and the curves
        thinned to about 200 points per configuration (the rows of ``curves.csv``).
    """
    curves_by_config, rows, curve_rows = {}, [], []
    for method, hyper in configs(momenta, dampings):
        t_run = time.perf_counter()
        curves = run_one(problem, method, hyper, lr, steps, kernel, param_ode=False)
        curves_by_config[(method, hyper)] = curves
        rows.append(slopes(method, hyper, lr, curves["ts"], curves, lambda0))
        stride = max(1, steps // 200)
        for i in range(0, steps + 1, stride):
            curve_rows.append(
                {"method": method, "hyper": hyper, "t": curves["ts"][i]}
                | {k: curves[k][i] for k in ("discrete", "linear", "ntk_ode")}
            )
        if verbose:
            width = problem.w0.shape[0]
            print(f"  {label(method, hyper):<10} m={width}: {time.perf_counter() - t_run:.1f} s")
    return curves_by_config, rows, curve_rows


def width_sweep(x, y, kernel, widths, sweep_configs, lr, steps, seed, dtype, verbose):
    """The configurations ``sweep_configs`` at each width of ``widths``, each with its
    parameter-space ODE: one row per (width, configuration) with the log-gaps between the
    network, its ODE and the NTK model, the final losses, and the empirical kernel's
    relative distance to the analytic one."""
    sweep_rows = []
    for m in widths:
        problem = Problem(x, y, m, seed, dtype)
        k_m = np.asarray(ntk_gram(problem.predict, problem.w0, problem.x), np.float64)
        kernel_error = float(np.linalg.norm(k_m - kernel) / np.linalg.norm(kernel))
        for method, hyper in sweep_configs:
            t_run = time.perf_counter()
            c = run_one(problem, method, hyper, lr, steps, kernel, param_ode=True)
            sweep_rows.append(
                {
                    "width": m,
                    "method": method,
                    "hyper": hyper,
                    "kernel_error": kernel_error,
                    "gap_network_vs_linear": log_gap(c["discrete"], c["linear"]),
                    "gap_network_vs_ntk_ode": log_gap(c["discrete"], c["ntk_ode"]),
                    "gap_param_ode_vs_ntk_ode": log_gap(c["param_ode"], c["ntk_ode"]),
                    "final_prediction_gap": c["final_prediction_gap"],
                    "final_loss_network": float(c["discrete"][-1]),
                    "final_loss_param_ode": float(c["param_ode"][-1]),
                    "final_loss_ntk_ode": float(c["ntk_ode"][-1]),
                }
            )
            if verbose:
                r = sweep_rows[-1]
                print(
                    f"  width {m:>6} {label(method, hyper):<10} gap(network, NTK discr)="
                    f"{r['gap_network_vs_linear']:.2e} gap(param ODE, NTK ODE)="
                    f"{r['gap_param_ode_vs_ntk_ode']:.2e} |K_m-K|/|K|={kernel_error:.3f} "
                    f"({time.perf_counter() - t_run:.1f} s)"
                )
    return sweep_rows
