"""EGN in reinforcement learning: LQR policy evaluation (exact answer) and DQN on gymnax (CPU).

The EGN paper (Korbit et al. 2024, arXiv:2405.14402) reports reinforcement-learning results on
LQR policy evaluation, Acrobot and MinAtar games. This command runs both kinds of task.

* LQR policy evaluation: a random 4-state, 2-input linear system under a fixed stabilising
  linear policy, cost x'Qx + u'Ru, discount 0.9, Gaussian process noise. The value
  V(x) = x'Px + c is known in closed form (discrete Lyapunov equation). Fitted TD learns it
  from fresh sampled transitions, with a target refreshed every T steps, by EGN (MSE), SGN,
  and SGD and Adam, each with a grid of learning rates and of T, for two models: quadratic
  features (reports ||P_hat - P||_F / ||P||_F) and a tanh MLP 32-32 (reports the relative
  RMS value error on 1000 held-out states).
* DQN on gymnax (CartPole-v1 and Acrobot-v1; Breakout-MinAtar with --minatar): one jitted
  training loop (vectorised environments, replay buffer in device arrays, target network)
  with the Q-network (MLP) trained by EGN on the TD regression of the chosen actions'
  values, against Adam; learning rates from small grids. The curves show the mean
  undiscounted return of the training (epsilon-greedy) episodes that ended within each chunk
  (a chunk in which none ended repeats the previous value); "final" is the last 10% of
  training.

Every (method, learning rate) trains all seeds as one vmapped, compiled program (compiled
once per method; the learning rate is an argument, so the grid reuses it). Training runs in
chunks whose wall-clock time is measured (compilation and evaluation excluded); the seconds
are those of the whole 5-seed program. The best learning rate per method is the one with the
best mean final metric. The command prints self-describing tables (machine, load, jax
version) and writes lqr_table.csv/json, lqr_curves.csv, lqr_curves.png, dqn_table.csv/json,
dqn_curves.csv, dqn_returns.png and summary.json into --out.

The experiments live in :mod:`inna_jax.reproduce.egn_rl_lqr` and
:mod:`inna_jax.reproduce.egn_rl_dqn`, what they share in
:mod:`inna_jax.reproduce.egn_rl_runs`; this module holds the settings, :func:`run` (settings
-> runs -> tables -> plots) and the command's flags.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from inna_jax.reproduce import cli_args
from inna_jax.reproduce.egn_rl_dqn import CLASSIC_ENVS as CLASSIC_ENVS
from inna_jax.reproduce.egn_rl_dqn import DQN_METHODS as DQN_METHODS
from inna_jax.reproduce.egn_rl_dqn import DQN_SETTINGS as DQN_SETTINGS
from inna_jax.reproduce.egn_rl_dqn import ENVS as ENVS
from inna_jax.reproduce.egn_rl_dqn import MINATAR_ENV as MINATAR_ENV
from inna_jax.reproduce.egn_rl_lqr import LQR_HIDDEN as LQR_HIDDEN
from inna_jax.reproduce.egn_rl_lqr import LQR_METHODS as LQR_METHODS
from inna_jax.reproduce.egn_rl_lqr import LQR_MODELS as LQR_MODELS
from inna_jax.reproduce.files import write_csv, write_json, write_table
from inna_jax.reproduce.machine import describe, machine_description

DEFAULTS: dict[str, Any] = {
    "lqr_steps": 2_000,
    "lqr_first_order_factor": 5,
    "lqr_batch_size": 64,
    "lqr_target_periods": (10, 100, 1000),
    "lqr_chunks": 40,
    "lqr_egn_lr": (0.1, 0.3, 1.0),
    "lqr_sgn_lr": (0.3, 1.0),
    "lqr_sgd_lr": (3e-3, 1e-2, 3e-2),
    "lqr_adam_lr": (1e-3, 3e-3, 1e-2),
    "egn_regularizer": 1.0,
    "dqn_egn_lr": (0.1, 0.3),
    "dqn_adam_lr": (3e-4, 1e-3),
    "dqn_batch_size": 64,
    "dqn_num_envs": 8,
    "dqn_buffer_size": 10_000,
    "dqn_target_period": 100,
    "dqn_learning_starts": 1_000,
    "dqn_chunks": 20,
}


def run(
    *,
    out: str | Path = "out/egn_rl",
    experiments: tuple[str, ...] = ("lqr", "dqn"),
    seeds: int = 5,
    lqr_steps: int = DEFAULTS["lqr_steps"],
    lqr_first_order_factor: int = DEFAULTS["lqr_first_order_factor"],
    lqr_batch_size: int = DEFAULTS["lqr_batch_size"],
    lqr_target_periods: tuple[int, ...] = DEFAULTS["lqr_target_periods"],
    lqr_chunks: int = DEFAULTS["lqr_chunks"],
    lqr_egn_lr: tuple[float, ...] = DEFAULTS["lqr_egn_lr"],
    lqr_sgn_lr: tuple[float, ...] = DEFAULTS["lqr_sgn_lr"],
    lqr_sgd_lr: tuple[float, ...] = DEFAULTS["lqr_sgd_lr"],
    lqr_adam_lr: tuple[float, ...] = DEFAULTS["lqr_adam_lr"],
    lqr_models: tuple[str, ...] = LQR_MODELS,
    lqr_methods: tuple[str, ...] = LQR_METHODS,
    egn_regularizer: float = DEFAULTS["egn_regularizer"],
    envs: tuple[str, ...] = CLASSIC_ENVS,
    dqn_updates: dict[str, int] | None = None,
    dqn_egn_lr: tuple[float, ...] = DEFAULTS["dqn_egn_lr"],
    dqn_adam_lr: tuple[float, ...] = DEFAULTS["dqn_adam_lr"],
    dqn_methods: tuple[str, ...] = DQN_METHODS,
    dqn_batch_size: int = DEFAULTS["dqn_batch_size"],
    dqn_num_envs: int = DEFAULTS["dqn_num_envs"],
    dqn_buffer_size: int = DEFAULTS["dqn_buffer_size"],
    dqn_target_period: int = DEFAULTS["dqn_target_period"],
    dqn_learning_starts: int = DEFAULTS["dqn_learning_starts"],
    dqn_chunks: int = DEFAULTS["dqn_chunks"],
    quiet: bool = True,
    blas_threads: int = 1,
) -> dict[str, Any]:
    """Runs the LQR and DQN experiments; prints the tables; writes CSV/JSON/PNG into ``out``.

    Args:
        out: output folder.
        experiments: a subset of ``("lqr", "dqn")``.
        seeds: seeds per (method, learning rate), trained as one vmapped program.
        lqr_steps: fitted-TD optimizer steps of EGN and SGN.
        lqr_first_order_factor: SGD and Adam take this many times ``lqr_steps``.
        lqr_batch_size: transitions per step (EGN's system size).
        lqr_target_periods: steps between TD target refreshes, tried with every learning
            rate (the grid is over pairs).
        lqr_chunks: timed chunks (evaluation points) per run.
        lqr_egn_lr: EGN learning rates tried.
        lqr_sgn_lr: SGN step caps tried (Armijo line search on).
        lqr_sgd_lr: SGD learning rates tried.
        lqr_adam_lr: Adam learning rates tried.
        lqr_models: a subset of :data:`LQR_MODELS`.
        lqr_methods: a subset of :data:`LQR_METHODS`.
        egn_regularizer: EGN's :math:`\\lambda` (both experiments).
        envs: gymnax environments, from :data:`ENVS`.
        dqn_updates: DQN updates per environment (default from :data:`DQN_SETTINGS`).
        dqn_egn_lr: EGN learning rates tried for DQN.
        dqn_adam_lr: Adam learning rates tried for DQN.
        dqn_methods: a subset of :data:`DQN_METHODS`.
        dqn_batch_size: replay batch per update.
        dqn_num_envs: environments stepped in parallel.
        dqn_buffer_size: replay capacity.
        dqn_target_period: updates between target-network copies.
        dqn_learning_starts: random transitions before the first update.
        dqn_chunks: timed chunks (points of the return curves) per run.
        quiet: print only the tables.
        blas_threads: OpenBLAS/LAPACK threads during the run (``threadpoolctl``).

    Returns:
        ``{"lqr": rows, "dqn": rows, "machine": ...}``.
    """
    import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK: see inna_jax.reproduce.egn)
    from threadpoolctl import threadpool_limits

    s = dict(locals())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    print(describe(machine))
    summary: dict[str, Any] = {"machine": machine, "seeds": seeds}
    result: dict[str, Any] = {"machine": machine}
    start = time.perf_counter()
    # one LAPACK thread: OpenBLAS's threaded Cholesky spins on a busy machine (see inna_jax.egn)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        if "lqr" in experiments:
            result["lqr"], summary["lqr"] = _lqr_experiment(out, s)
        if "dqn" in experiments:
            result["dqn"], summary["dqn"] = _dqn_experiment(out, s)
    summary["wall_seconds"] = time.perf_counter() - start
    write_json(out / "summary.json", summary)
    print(f"\nwrote {out}/ in {summary['wall_seconds']:.0f} s")
    return result


def _report(out: Path, stem: str, heading: str, text: str, table, curves, draw) -> None:
    """An experiment's outputs: the heading and table printed, ``draw()`` its figure, then
    ``{stem}_table.csv``/``.json`` and ``{stem}_curves.csv``."""
    print(f"\n{heading}")
    print(text)
    draw()
    write_table(out, f"{stem}_table", table)
    write_csv(out / f"{stem}_curves.csv", curves)


def _lqr_experiment(out: Path, s: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    """LQR runs -> table -> plot and files; the table and the summary's part."""
    from inna_jax.reproduce.egn_rl_lqr import format_lqr_table, plot_lqr, run_lqr

    grids = {m: s[f"lqr_{m}_lr"] for m in ("egn", "sgn", "sgd", "adam")}
    table, curves, extra = run_lqr(
        seeds=s["seeds"],
        steps=s["lqr_steps"],
        first_order_factor=s["lqr_first_order_factor"],
        batch_size=s["lqr_batch_size"],
        target_periods=tuple(s["lqr_target_periods"]),
        chunks=s["lqr_chunks"],
        grids=grids,
        egn_regularizer=s["egn_regularizer"],
        models=tuple(s["lqr_models"]),
        methods=tuple(s["lqr_methods"]),
        quiet=s["quiet"],
    )
    title = (
        f"LQR policy evaluation by fitted TD (n=4, m=2, gamma=0.9, noise 0.1): batch "
        f"{s['lqr_batch_size']}, target every {'/'.join(map(str, s['lqr_target_periods']))} "
        f"steps (tuned), EGN lambda="
        f"{s['egn_regularizer']:g}, SGN 10 CG/damping 1e-3/Armijo\nSGD/Adam run "
        f"{s['lqr_first_order_factor']}x the steps of EGN/SGN; best lr per method; "
        f"mean and min-max over {s['seeds']} seeds"
    )
    heading = "LQR policy evaluation (fitted TD): final relative error at the best lr"
    draw = lambda: plot_lqr(out / "lqr_curves.png", curves, table, title)  # noqa: E731
    _report(out, "lqr", heading, format_lqr_table(table), table, curves, draw)
    return table, {
        "steps": s["lqr_steps"],
        "first_order_factor": s["lqr_first_order_factor"],
        "batch_size": s["lqr_batch_size"],
        "target_periods": list(s["lqr_target_periods"]),
        "grids": {k: list(v) for k, v in grids.items()},
        "egn_regularizer": s["egn_regularizer"],
        "sgn": {"regularizer": 1e-3, "cg_iterations": 10, "line_search": True},
        "network_hidden": list(LQR_HIDDEN),
        **extra,
    }


def _dqn_experiment(out: Path, s: dict[str, Any]) -> tuple[list[dict], dict[str, Any]]:
    """DQN runs per environment -> table -> plot and files; the table and the summary's part."""
    from inna_jax.reproduce.egn_rl_dqn import dqn_config, format_dqn_table, plot_dqn, run_dqn

    table, curves, config_used = [], [], {}
    grids = {"egn": s["dqn_egn_lr"], "adam": s["dqn_adam_lr"]}
    for env_name in s["envs"]:
        settings = DQN_SETTINGS[env_name]
        updates: Any = (s["dqn_updates"] or {}).get(env_name, settings["updates"])
        config = dqn_config(env_name, updates, s)
        rows, env_curves = run_dqn(
            env_name=env_name,
            seeds=s["seeds"],
            updates=updates,
            config=config,
            hidden=settings["hidden"],
            grids=grids,
            egn_regularizer=s["egn_regularizer"],
            chunks=s["dqn_chunks"],
            methods=tuple(s["dqn_methods"]),
            quiet=s["quiet"],
        )
        table += rows
        curves += env_curves
        config_used[env_name] = config._asdict() | {
            "hidden": list(settings["hidden"]),
            "updates": updates,
        }
    title = (
        f"DQN on gymnax: MLP Q-network, {s['dqn_num_envs']} envs, batch {s['dqn_batch_size']}, "
        f"buffer {s['dqn_buffer_size']}, target every {s['dqn_target_period']} updates, "
        f"eps 1->0.05 over half the updates,\nEGN lambda={s['egn_regularizer']:g}, MSE on "
        f"the chosen action's Q; best lr per method; mean and min-max over {s['seeds']} seeds"
    )
    heading = "DQN: training episode return at the best lr (final = last 10% of training)"
    draw = lambda: plot_dqn(out / "dqn_returns.png", curves, table, title)  # noqa: E731
    _report(out, "dqn", heading, format_dqn_table(table), table, curves, draw)
    return table, {
        "envs": config_used,
        "grids": {"egn": list(s["dqn_egn_lr"]), "adam": list(s["dqn_adam_lr"])},
        "egn_regularizer": s["egn_regularizer"],
    }


# --------------------------------------------------------------------------- CLI

_pint, _pfloat = cli_args.positive_int, cli_args.positive_float
_D = DEFAULTS
_LQR_FLAGS = (
    ("--lqr-steps", _pint, _D["lqr_steps"], "fitted-TD steps (EGN, SGN)"),
    ("--lqr-first-order-factor", _pint, _D["lqr_first_order_factor"],
     "SGD and Adam take this many times --lqr-steps (their steps are cheaper)"),
    ("--lqr-batch-size", _pint, _D["lqr_batch_size"], "transitions per step"),
    ("--lqr-target-periods", _pint, list(_D["lqr_target_periods"]),
     "steps between TD target refreshes, each tried with every learning rate", {"nargs": "+"}),
    ("--lqr-chunks", _pint, _D["lqr_chunks"], "timed chunks (curve points) per run"),
    ("--lqr-models", cli_args.choice(LQR_MODELS), list(LQR_MODELS),
     "value models: quadratic features and/or the MLP", {"nargs": "+"}),
    ("--lqr-methods", cli_args.choice(LQR_METHODS), list(LQR_METHODS), "optimizers compared",
     {"nargs": "+"}),
    *((f"--lqr-{m}-lr", _pfloat, list(_D[f"lqr_{m}_lr"]), f"{name} learning rates tried",
       {"nargs": "+"})
      for m, name in (("egn", "EGN"), ("sgn", "SGN"), ("sgd", "SGD"), ("adam", "Adam"))),
)  # fmt: skip
_DQN_FLAGS = (
    ("--dqn-updates", _pint, None,
     "updates per environment (default: 5000 for CartPole/Acrobot, 10000 for MinAtar)"),
    ("--dqn-egn-lr", _pfloat, list(_D["dqn_egn_lr"]), "EGN learning rates tried", {"nargs": "+"}),
    ("--dqn-adam-lr", _pfloat, list(_D["dqn_adam_lr"]), "Adam learning rates tried",
     {"nargs": "+"}),
    ("--dqn-methods", cli_args.choice(DQN_METHODS), list(DQN_METHODS), "optimizers compared",
     {"nargs": "+"}),
    ("--dqn-batch-size", _pint, _D["dqn_batch_size"],
     "replay batch per update (EGN's system size)"),
    ("--dqn-num-envs", _pint, _D["dqn_num_envs"], "environments stepped in parallel"),
    ("--dqn-buffer-size", _pint, _D["dqn_buffer_size"], "replay capacity (transitions)"),
    ("--dqn-target-period", _pint, _D["dqn_target_period"],
     "updates between target-network copies"),
    ("--dqn-learning-starts", _pint, _D["dqn_learning_starts"],
     "random transitions before the first update"),
    ("--dqn-chunks", _pint, _D["dqn_chunks"], "timed chunks (curve points) per run"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``inna-jax egn-rl``; a bad flag exits with status 2 and one line naming it."""
    parser.add_argument("--out", default="out/egn_rl", help="output folder (CSV, JSON, PNG)")
    cli_args.add_flags(parser, [
        ("--experiments", cli_args.choice(("lqr", "dqn")), ["lqr", "dqn"],
         "which experiments to run", {"nargs": "+"}),
        ("--seeds", _pint, 5, "seeds per method and learning rate"),
        ("--egn-regularizer", _pfloat, _D["egn_regularizer"], "EGN's lambda (both experiments)"),
    ])  # fmt: skip
    cli_args.add_flags(parser.add_argument_group("LQR policy evaluation"), _LQR_FLAGS)
    dqn = parser.add_argument_group("DQN on gymnax")
    dqn.add_argument(
        "--envs", nargs="+", type=cli_args.choice(ENVS), default=list(CLASSIC_ENVS),
        help="gymnax environments",
    )  # fmt: skip
    dqn.add_argument(
        "--minatar",
        action="store_true",
        help=f"add {MINATAR_ENV} (slow on CPU: EGN needs a 400-input MLP's Jacobian per "
        "update, about 10-30 min per learning rate on 2 busy cores)",
    )
    cli_args.add_flags(dqn, _DQN_FLAGS)
    parser.add_argument("--verbose", action="store_true", help="print every grid point")
    parser.add_argument("--blas-threads", type=_pint, default=1, help="OpenBLAS/LAPACK threads")


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` with the parsed flags."""
    envs = list(dict.fromkeys(args.envs + ([MINATAR_ENV] if args.minatar else [])))
    updates: dict[str, Any] | None = (
        None if args.dqn_updates is None else dict.fromkeys(envs, args.dqn_updates)
    )
    flags: dict[str, Any] = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in vars(args).items()
        if name in _RUN_ARGUMENTS
    }
    run(**flags | {"envs": tuple(envs), "dqn_updates": updates, "quiet": not args.verbose})
    return 0


_RUN_ARGUMENTS = set(run.__code__.co_varnames[: run.__code__.co_kwonlyargcount])
