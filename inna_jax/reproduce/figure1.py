"""Figure 1 of the INNA paper: INNA and DIN on a nonsmooth toy loss, three (alpha, beta) panels.

The loss is J(θ) = 100 (θ₂ − |θ₁|)² + |1 − θ₁|, started at (−1, 1.5), with minimiser (1, 1)
(Castera, Bolte, Févotte, Pauwels, JMLR 2021, Figure 1). Three panels, (α, β) = (0.5, 0.01),
(0.5, 0.1) and (1.3, 0.1), draw the discrete INNA path and the DIN solution on the contours
of J; a fourth plots J against time t_k = kγ on a log scale. The paper does not publish its
step size or number of iterations; we use a constant γ = 1e-3 for 20,000 iterations
(t = 20), the initial speed s = β of ``inna_jax.inna``, and ``inna_jax.dynamics.solve_din``
with its kink-safe defaults. Writes figure1.png, figure1.csv and figure1.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from inna_jax.dynamics import compare
from inna_jax.reproduce import files
from inna_jax.reproduce.cli_args import nonnegative_float, positive_float, positive_int

#: The three (alpha, beta) panels of the paper.
PANELS: tuple[tuple[float, float], ...] = ((0.5, 0.01), (0.5, 0.1), (1.3, 0.1))
#: The start and the minimiser of the paper.
THETA0 = (-1.0, 1.5)
MINIMIZER = (1.0, 1.0)
#: Our step size and number of iterations (the paper does not publish its own).
LEARNING_RATE = 1e-3
STEPS = 20_000


def loss(theta: jax.Array) -> jax.Array:
    r"""Figure 1's nonsmooth loss :math:`J(\theta) = 100(\theta_2 - |\theta_1|)^2 + |1 - \theta_1|`.

    Args:
        theta: a point of shape ``(2,)`` (or ``(..., 2)``).

    Returns:
        :math:`J(\theta)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.reproduce.figure1 import loss
        >>> float(loss(jnp.array([-1.0, 1.5])))
        27.0
    """
    return 100.0 * (theta[..., 1] - jnp.abs(theta[..., 0])) ** 2 + jnp.abs(1.0 - theta[..., 0])


def run(
    *,
    out: str | Path | None = "results/figure1",
    learning_rate: float = LEARNING_RATE,
    steps: int = STEPS,
    panels: Sequence[tuple[float, float]] = PANELS,
    initial_speed: float | None = None,
    plot: bool = True,
) -> list[dict]:
    r"""Runs INNA and DIN for each :math:`(\alpha, \beta)` panel; writes CSV, JSON and PNG.

    Each panel is one :func:`inna_jax.dynamics.compare` call ("inna"): the discrete INNA path
    (``inna_jax.inna`` in ``lax.scan``, constant step) and the DIN solution at the same
    times :math:`t_k = k\gamma`, from the same :math:`\psi_0`. The call is compiled once and
    reused for every panel.

    Args:
        out: output folder (created), or ``None`` to write nothing.
        learning_rate: constant step :math:`\gamma > 0`.
        steps: number of INNA iterations; the DIN horizon is ``steps * learning_rate``.
        panels: the :math:`(\alpha, \beta)` pairs.
        initial_speed: :math:`s` in :math:`\dot\theta(0) = -s\nabla J(\theta_0)`; ``None``
            means :math:`s = \beta`.
        plot: whether to draw ``figure1.png`` (needs ``out``).

    Returns:
        One dict per panel: ``alpha``, ``beta``, the final points of INNA and DIN, their
        distances to :math:`(1, 1)`, the final losses and the maximum INNA–DIN gap.

    Example:
        >>> from inna_jax.reproduce.figure1 import run
        >>> rows = run(out=None, learning_rate=0.01, steps=2000, panels=[(0.5, 0.1)])
        >>> round(rows[0]["inna_distance"], 2), round(rows[0]["din_distance"], 2)
        (0.0, 0.0)
    """
    if not (learning_rate > 0):
        raise ValueError(f"learning_rate must be > 0, got learning_rate={learning_rate!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive integer, got steps={steps!r}")
    theta0 = jnp.asarray(THETA0)
    target = np.asarray(MINIMIZER)
    rows, paths = [], []
    for alpha, beta in panels:
        res = compare(
            "inna",
            loss,
            theta0,
            steps=int(steps),
            learning_rate=learning_rate,
            alpha=alpha,
            beta=beta,
            initial_speed=initial_speed,
        )
        discrete, continuous = np.asarray(res.discrete), np.asarray(res.continuous)
        paths.append((np.asarray(res.ts), discrete, continuous))
        rows.append(
            {
                "alpha": alpha,
                "beta": beta,
                "inna_final": discrete[-1].tolist(),
                "din_final": continuous[-1].tolist(),
                "inna_distance": float(np.linalg.norm(discrete[-1] - target)),
                "din_distance": float(np.linalg.norm(continuous[-1] - target)),
                "inna_final_loss": float(loss(jnp.asarray(discrete[-1]))),
                "din_final_loss": float(loss(jnp.asarray(continuous[-1]))),
                "max_gap": float(res.gap),
            }
        )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        settings = {
            "loss": "100 (theta2 - |theta1|)^2 + |1 - theta1|",
            "theta0": list(THETA0),
            "learning_rate": learning_rate,
            "steps": int(steps),
            "t1": learning_rate * int(steps),
            "initial_speed": "beta" if initial_speed is None else initial_speed,
            "din_solver": "diffrax Tsit5, PIDController(rtol=1e-6, atol=1e-9, dtmin=1e-4, "
            "force_dtmin=True)",
        }
        files.write_json(
            out / "figure1.json", {"settings": settings, "panels": rows}, newline=False
        )
        columns = ("alpha", "beta", "inna_distance", "din_distance", "max_gap")
        files.write_csv(out / "figure1.csv", [{k: row[k] for k in columns} for row in rows])
        if plot:
            _plot(out / "figure1.png", panels, paths, learning_rate, int(steps), initial_speed)
    return rows


def _plot(path: Path, panels, paths, learning_rate: float, steps: int, initial_speed) -> None:
    from inna_jax.reproduce import plots

    x1, x2 = np.meshgrid(np.linspace(-1.6, 1.6, 300), np.linspace(-0.4, 1.9, 300))
    grid = np.asarray(loss(jnp.stack([jnp.asarray(x1), jnp.asarray(x2)], axis=-1)))
    fig, axes = plots.figure(4, width=4.5, height=4.2)
    axes = axes[0]
    colors = ["tab:blue", "tab:orange", "tab:green"]
    speed = "s = β" if initial_speed is None else f"s = {initial_speed:g}"
    for ax, (alpha, beta), (_, discrete, continuous) in zip(axes[:3], panels, paths, strict=False):
        ax.contour(x1, x2, np.log10(grid + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
        ax.plot(discrete[:, 0], discrete[:, 1], color="tab:red", lw=1.6, label="INNA (discrete)")
        ax.plot(continuous[:, 0], continuous[:, 1], "k--", lw=1.0, label="DIN (diffrax)")
        ax.plot(*THETA0, "ko", ms=5, ls="none", label="start (−1, 1.5)")
        ax.plot(*MINIMIZER, "r*", ms=12, ls="none", label="minimiser (1, 1)")
        ax.set_title(f"α = {alpha:g}, β = {beta:g}, {speed}", fontsize=10)
        ax.set_xlabel("θ₁")
        ax.set_ylabel("θ₂")
    plots.legend_outside(fig, axes[0], where="bottom", ncols=4)
    ax = axes[3]
    # INNA curves first, then DIN: the two legend columns read INNA | DIN
    for which, style in ((1, {"lw": 1.5}), (2, {"ls": "--", "lw": 1.0})):
        for color, (alpha, beta), run_paths in zip(colors, panels, paths, strict=False):
            ax.semilogy(
                run_paths[0],
                np.asarray(loss(jnp.asarray(run_paths[which]))),
                color=color,
                label=f"{'INNA' if which == 1 else 'DIN'}, α = {alpha:g}, β = {beta:g}",
                **style,
            )
    ax.set_xlabel("time t = kγ")
    ax.set_ylabel("J(θ)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title("loss along the paths", fontsize=10)
    fig.suptitle(
        f"Figure 1: INNA (γ = {learning_rate:g}, {steps:,} iterations, {speed}) and DIN "
        f"(diffrax Tsit5, t₁ = {learning_rate * steps:g}) on J(θ) = 100(θ₂ − |θ₁|)² + |1 − θ₁|",
        fontsize=10,
    )
    plots.save(fig, path, dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of ``inna-jax figure1``."""
    parser.add_argument("--out", default="results/figure1", help="output folder")
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=LEARNING_RATE,
        help="constant INNA step size gamma",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=STEPS,
        help="number of INNA iterations (DIN to steps*gamma)",
    )
    parser.add_argument(
        "--initial-speed",
        type=nonnegative_float,
        default=None,
        help="initial speed s in dtheta(0) = -s grad J(theta0); default: s = beta",
    )


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` from parsed arguments and prints one line per panel."""
    rows = run(
        out=args.out,
        learning_rate=args.learning_rate,
        steps=args.steps,
        initial_speed=args.initial_speed,
    )
    print(
        f"gamma = {args.learning_rate:g}, {args.steps:,} iterations, "
        f"t1 = {args.learning_rate * args.steps:g}"
    )
    for row in rows:
        print(
            f"(alpha, beta) = ({row['alpha']}, {row['beta']}): |INNA - (1,1)| = "
            f"{row['inna_distance']:.2e}, |DIN - (1,1)| = {row['din_distance']:.2e}, "
            f"max gap = {row['max_gap']:.3f}"
        )
    print(f"wrote {Path(args.out) / 'figure1.png'}")
    return 0
