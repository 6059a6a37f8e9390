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
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inna_jax.dynamics import analytic_relu_ntk
from inna_jax.reproduce import cli_args, files
from inna_jax.reproduce import hb_nag_ntk_plots as figures
from inna_jax.reproduce.hb_nag_ntk_runs import (
    Problem,
    digits_regression,
    init_network,
    label,
    method_sweep,
    two_layer_relu,
    width_sweep,
)

#: The network and its data come from :mod:`~inna_jax.reproduce.hb_nag_ntk_runs`, re-exported.
__all__ = [
    "DEFAULT_WIDTHS",
    "FULL_WIDTHS",
    "SWEEP_CONFIGS",
    "add_arguments",
    "digits_regression",
    "init_network",
    "main",
    "run",
    "two_layer_relu",
]

DEFAULT_WIDTHS = (256, 1024, 4096)
FULL_WIDTHS = (256, 1024, 4096, 16384)
SWEEP_CONFIGS = (("gd", 0.0), ("heavy_ball", 0.5), ("nesterov", 3.0))


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
    problem = Problem(x, y, width, seed, dtype)
    curves_by_config, rows, curve_rows = method_sweep(
        problem, kernel, lambda0, momenta, dampings, learning_rate, steps, verbose
    )
    files.write_csv(out / "curves.csv", curve_rows)
    files.write_csv(out / "rates.csv", rows)
    settings = {
        "n": n,
        "width": width,
        "steps": steps,
        "sweep_steps": sweep_steps,
        "learning_rate": learning_rate,
        "dtype": jnp.dtype(dtype).name,
    }
    figures.plot_curves(out, curves_by_config, loglog=False, settings=settings)
    figures.plot_curves(out, curves_by_config, loglog=True, settings=settings)
    figures.plot_slopes(out, rows, settings)
    table = figures.format_table(rows)
    if verbose:
        _print_rates(table, rows)

    # 2. width sweep
    sweep_rows = width_sweep(x, y, kernel, widths, sweep_configs, learning_rate, sweep_steps,
                             seed, dtype, verbose)  # fmt: skip
    files.write_csv(out / "width_sweep.csv", sweep_rows)
    figures.plot_width(out, sweep_rows, settings)
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
    files.write_json(out / "summary.json", summary, newline=False, default=float)
    if verbose:
        print(
            f"\nwrote {out}/ (rates.csv, curves.csv, width_sweep.csv, summary.json, PNGs) "
            f"in {summary['seconds']:.0f} s"
        )
    summary["table"] = table
    return summary


def _print_rates(table: str, rows: list[dict[str, Any]]) -> None:
    """The table of fitted slopes, with how far each Nesterov run is from a power law."""
    print("\nfitted slopes of log(loss) against the predicted asymptotic rates")
    print("(semilog: d log L / dt; log-log: d log L / d log t; predicted: -2 lambda_0,")
    print(" -2c with c = (a - sqrt(max(a^2 - 4 lambda_0, 0)))/2, and -r for Nesterov)")
    print(table)
    for r in rows:
        if r["method"] == "nesterov":
            print(
                f"  {label('nesterov', r['hyper'])}: semilog slope flattens by "
                f"{r['semilog_flattening']:.2f}x from t in [T/8, T/4] to [T/2, T] "
                "(pure power law: 4x; linear convergence: 1x)"
            )


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
