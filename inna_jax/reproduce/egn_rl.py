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
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import inna_jax
from inna_jax import rl
from inna_jax._extras import require
from inna_jax.models import MLP
from inna_jax.reproduce import cli_args

LQR_METHODS = ("egn", "sgn", "sgd", "adam")
DQN_METHODS = ("egn", "adam")
LQR_MODELS = ("quadratic", "network")
CLASSIC_ENVS = ("CartPole-v1", "Acrobot-v1")
MINATAR_ENV = "Breakout-MinAtar"
ENVS = (*CLASSIC_ENVS, MINATAR_ENV)
LQR_HIDDEN = (32, 32)

# DQN settings per environment (ours; the EGN paper's RL settings are not reproduced here)
DQN_SETTINGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"hidden": (64, 64), "updates": 5_000, "gamma": 0.99},
    "Acrobot-v1": {"hidden": (64, 64), "updates": 5_000, "gamma": 0.99},
    "Breakout-MinAtar": {"hidden": (64, 64), "updates": 10_000, "gamma": 0.99},
}

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


# --------------------------------------------------------------------------- helpers


def machine_description() -> dict[str, Any]:
    """The machine, its load and the software versions, for self-describing tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_1min": round(load, 2),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
    }


def _describe(machine: dict[str, Any]) -> str:
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, 1-min load "
        f"{machine['load_1min']}, devices {', '.join(machine['devices'])}; "
        f"jax {machine['jax']}, optax {machine['optax']}"
    )


def _stack(trees: list[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _scalar(value: float) -> jax.Array:
    return jnp.asarray(value, jnp.zeros(()).dtype)


def _run_chunks(compiled, state, args: tuple, chunks: int, evaluate) -> dict[str, list]:
    """Calls ``compiled(state, *args)`` ``chunks`` times; times each call (evaluation apart)."""
    seconds, records = [0.0], [evaluate(state, None)]
    for _ in range(chunks):
        start = time.perf_counter()
        state, out = compiled(state, *args)
        jax.block_until_ready(state)
        seconds.append(seconds[-1] + time.perf_counter() - start)
        records.append(evaluate(state, out))
    return {"seconds": seconds, "records": records}


def _worse(a: float, b: float, maximize: bool) -> bool:
    """Is score ``a`` worse than ``b``? (non-finite is worst)."""
    if not math.isfinite(a):
        return True
    if not math.isfinite(b):
        return False
    return a < b if maximize else a > b


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Fills NaN rows (chunks in which no episode ended) with the previous row's values."""
    values = values.copy()
    for i in range(1, len(values)):
        values[i] = np.where(np.isfinite(values[i]), values[i], values[i - 1])
    return values


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _band_plot(ax, xs, ys, label, *, log=False):
    """Mean line and, with several seeds, a min-max band; ``ys`` is (seeds, points).

    Points where no seed has a value (no episode ended yet) are left out.
    """
    ys = np.asarray(ys, float)
    keep = np.any(np.isfinite(ys), axis=0)
    xs, ys = np.asarray(xs, float)[keep], ys[:, keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a seed without a value yet
        mean, low, high = np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
    (line,) = ax.plot(xs, mean, label=label)
    if ys.shape[0] > 1:
        ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color())
    if log:
        ax.set_yscale("log")


# --------------------------------------------------------------------------- LQR


def _lqr_model(kind: str, n: int):
    """``(value_fn, init(seed))`` for quadratic features or the tanh MLP."""
    if kind == "quadratic":

        def value_fn(theta, x):  # pyright: ignore[reportRedeclaration]
            return rl.quadratic_features(x) @ theta

        def init(seed):
            return jnp.zeros(n * (n + 1) // 2 + 1)

        return value_fn, init

    def build(seed):
        return MLP(n, LQR_HIDDEN, 1, activation=nnx.tanh, rngs=nnx.Rngs(seed))

    graphdef, _ = nnx.split(build(0), nnx.Param)

    def value_fn(params, x):
        return nnx.merge(graphdef, params)(x)[:, 0]

    return value_fn, lambda seed: nnx.state(build(seed), nnx.Param)


def _optimizer(method: str, lr, value_fn, egn_regularizer: float):
    if method == "egn":
        return inna_jax.egn(value_fn, "mse", learning_rate=lr, regularizer=egn_regularizer)
    if method == "sgn":  # the EGN paper's SGN baseline: 10 CG iterations, damping 1e-3, Armijo
        return inna_jax.sgn(value_fn, "mse", learning_rate=lr, regularizer=1e-3)
    if method == "sgd":
        return optax.sgd(lr)
    if method == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown method {method!r}; expected one of {LQR_METHODS}")


def run_lqr(
    *,
    seeds: int,
    steps: int,
    first_order_factor: int,
    batch_size: int,
    target_periods: tuple[int, ...],
    chunks: int,
    grids: dict[str, tuple[float, ...]],
    egn_regularizer: float,
    models: tuple[str, ...] = LQR_MODELS,
    methods: tuple[str, ...] = LQR_METHODS,
    problem_seed: int = 0,
    quiet: bool = True,
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Fitted-TD LQR policy evaluation for every model, method, learning rate and target period.

    EGN and SGN take ``steps`` steps; SGD and Adam, whose steps are several times cheaper,
    take ``first_order_factor * steps``, so that every curve covers a similar wall-clock span.
    Every run is evaluated every ``steps // chunks`` steps. The target period is tuned with
    the learning rate: a method that fits each regression in a few steps (EGN) can refresh
    its targets often, while first-order methods need long periods to stay stable.

    Returns:
        ``(table_rows, curve_rows, extra)``: one table row per (model, method) at its best
        (learning rate, target period), one curve row per (model, method, lr, period, seed,
        point), and the problem's description (``P``, ``c``) for the summary.
    """
    problem = rl.make_lqr(problem_seed)
    n = problem.A.shape[0]
    p_true, c_true = rl.lqr_value(problem)
    p_true_j = jnp.asarray(p_true, problem.A.dtype)
    x_test = jax.random.normal(jax.random.key(10_000), (1000, n), problem.A.dtype)
    v_test = jnp.einsum("bi,ij,bj->b", x_test, p_true_j, x_test) + c_true
    seed_list = list(range(seeds))
    table, curves = [], []
    for model in models:
        value_fn, init_params = _lqr_model(model, n)
        params0 = _stack([init_params(s) for s in seed_list])
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(1), s))(jnp.arange(seeds))

        if model == "quadratic":

            def error(params):  # pyright: ignore[reportRedeclaration]
                p_hat, _ = rl.quadratic_matrix(params, n)
                return jnp.linalg.norm(p_hat - p_true_j) / jnp.linalg.norm(p_true_j)

        else:

            def error(params, value_fn=value_fn):
                diff = value_fn(params, x_test) - v_test
                return jnp.sqrt(jnp.mean(diff**2) / jnp.mean(v_test**2))

        error_all = jax.jit(jax.vmap(lambda st: error(st.params)))

        per_chunk = max(1, steps // chunks)
        for method in methods:
            method_steps = steps * (first_order_factor if method in ("sgd", "adam") else 1)
            num_chunks = max(1, method_steps // per_chunk)

            def make_tx(lr, method=method, value_fn=value_fn):
                return _optimizer(method, lr, value_fn, egn_regularizer)

            def chunk(state, lr, period, make_tx=make_tx, value_fn=value_fn, n=per_chunk):
                return jax.vmap(
                    lambda st: rl.td_policy_evaluation(
                        st,
                        value_fn,
                        make_tx(lr),
                        problem,
                        steps=n,
                        batch_size=batch_size,
                        target_period=period,
                    )
                )(state)

            init = jax.jit(
                jax.vmap(
                    lambda p, k, lr, make_tx=make_tx: rl.td_init(p, make_tx(lr), k),
                    in_axes=(0, 0, None),
                )  # fmt: skip
            )
            state0 = init(params0, keys, _scalar(grids[method][0]))
            start = time.perf_counter()
            period0 = jnp.asarray(1, jnp.int32)
            compiled = jax.jit(chunk).lower(state0, _scalar(1.0), period0).compile()
            compile_s = time.perf_counter() - start
            best: Any = None
            for lr in grids[method]:
                for period in target_periods:
                    state = init(params0, keys, _scalar(lr))
                    args = (_scalar(lr), jnp.asarray(period, jnp.int32))
                    result = _run_chunks(
                        compiled, state, args, num_chunks,
                        lambda st, _out, f=error_all: np.asarray(f(st)),
                    )  # fmt: skip
                    errors = np.array(result["records"])  # (points, seeds)
                    for i, (sec, errs) in enumerate(zip(result["seconds"], errors, strict=True)):
                        for s, e in enumerate(errs):
                            curves.append(
                                {"model": model, "method": method, "learning_rate": lr,
                                 "target_period": period, "seed": s, "step": i * per_chunk,
                                 "seconds": sec, "error": float(e)}
                            )  # fmt: skip
                    final = errors[-1]
                    score = float(np.mean(final)) if np.all(np.isfinite(final)) else float("nan")
                    if best is None or _worse(best[0], score, maximize=False):
                        best = (score, lr, period, errors, result["seconds"])
                    if not quiet:
                        print(
                            f"  lqr {model:<9} {method:<4} lr={lr:<8g} target every "
                            f"{period:<5d} final error {score:.4g}"
                        )
            score, lr, period, errors, seconds = best
            mean_curve = np.mean(errors, axis=1)
            reach = np.nonzero(mean_curve <= 0.1)[0]
            table.append(
                {
                    "model": model,
                    "metric": "rel. error of P" if model == "quadratic" else "rel. value error",
                    "method": method.upper(),
                    "learning_rate": lr,
                    "target_period": period,
                    "final_mean": score,
                    "final_min": float(np.min(errors[-1])),
                    "final_max": float(np.max(errors[-1])),
                    "steps_to_0.1": int(reach[0] * per_chunk) if reach.size else None,
                    "seconds_to_0.1": float(seconds[reach[0]]) if reach.size else None,
                    "seconds": float(seconds[-1]),
                    "steps": num_chunks * per_chunk,
                    "compile_seconds": compile_s,
                }
            )
    extra = {"P": p_true.tolist(), "c": c_true, "state_dim": n, "gamma": float(problem.gamma)}
    return table, curves, extra


def _plot_lqr(path: Path, curves: list[dict], table: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in table))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.5 * len(models) + 0.6), squeeze=False)
    for row, model in enumerate(models):
        for best in (r for r in table if r["model"] == model):
            method, lr = best["method"].lower(), best["learning_rate"]
            period = best["target_period"]
            rows = [
                c for c in curves
                if c["model"] == model and c["method"] == method and c["learning_rate"] == lr
                and c["target_period"] == period
            ]  # fmt: skip
            seeds = sorted({c["seed"] for c in rows})
            steps = sorted({c["step"] for c in rows})
            err = np.array([[c["error"] for c in rows if c["seed"] == s] for s in seeds])
            secs = np.array([c["seconds"] for c in rows if c["seed"] == seeds[0]])
            label = f"{best['method']} (lr={lr:g}, T={period})"
            _band_plot(axes[row, 0], steps, err, label, log=True)
            _band_plot(axes[row, 1], secs, err, label, log=True)
        ylabel = (
            r"$\|\hat P - P\|_F / \|P\|_F$ (quadratic features)"
            if model == "quadratic"
            else "relative RMS value error (MLP 32-32, held-out states)"
        )
        for col in range(2):
            axes[row, col].set_ylabel(ylabel, fontsize=8)
            axes[row, col].grid(alpha=0.3)
        axes[row, 0].set_xlabel("optimizer steps")
        axes[row, 1].set_xlabel("wall-clock seconds (all seeds, one vmapped program)")
        axes[row, 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- DQN


def _make_env(name: str):
    require("rl", "the DQN of inna-jax egn-rl")
    import gymnax

    return gymnax.make(name)


def run_dqn(
    *,
    env_name: str,
    seeds: int,
    updates: int,
    config: rl.DQNConfig,
    hidden: tuple[int, ...],
    grids: dict[str, tuple[float, ...]],
    egn_regularizer: float,
    chunks: int,
    methods: tuple[str, ...] = DQN_METHODS,
    quiet: bool = True,
) -> tuple[list[dict], list[dict]]:
    """DQN with EGN and Adam on one gymnax environment, every learning rate, all seeds.

    Returns:
        ``(table_rows, curve_rows)``.
    """
    env, env_params = _make_env(env_name)
    obs_shape = env.observation_space(env_params).shape
    num_actions = env.action_space(env_params).n
    in_features = int(np.prod(obs_shape))

    def build(seed):
        return MLP(in_features, hidden, num_actions, rngs=nnx.Rngs(seed))

    graphdef, _ = nnx.split(build(0), nnx.Param)

    def q_fn(params, obs):
        return nnx.merge(graphdef, params)(obs)

    predict_fn = rl.chosen_action_value(q_fn, obs_shape, num_actions)
    params0 = _stack([nnx.state(build(s), nnx.Param) for s in range(seeds)])
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(2), s))(jnp.arange(seeds))
    per_chunk = max(1, updates // chunks)
    chunks = updates // per_chunk
    transitions_per_update = config.num_envs * config.env_steps_per_update
    start_steps = -(-config.learning_starts // config.num_envs) * config.num_envs
    table, curves = [], []
    for method in methods:

        def make_tx(lr, method=method):
            if method == "egn":
                return inna_jax.egn(
                    predict_fn, "mse", learning_rate=lr, regularizer=egn_regularizer
                )
            return optax.adam(lr)

        def chunk(state, lr, make_tx=make_tx):
            return jax.vmap(
                lambda st: rl.dqn_train(
                    st, env, env_params, q_fn, make_tx(lr), config, num_updates=per_chunk
                )
            )(state)

        init = jax.jit(
            jax.vmap(
                lambda k, p, lr, make_tx=make_tx: rl.dqn_init(
                    k, env, env_params, p, make_tx(lr), config
                ),
                in_axes=(0, 0, None),
            )
        )
        state0 = init(keys, params0, _scalar(grids[method][0]))
        start = time.perf_counter()
        compiled = jax.jit(chunk).lower(state0, _scalar(1.0)).compile()
        compile_s = time.perf_counter() - start

        def evaluate(state, out):
            if out is None:
                return np.full(seeds, np.nan), np.full(seeds, np.nan)
            returns = np.asarray(out.return_sum).sum(axis=1)
            episodes = np.asarray(out.episodes).sum(axis=1)
            mean = np.where(episodes > 0, returns / np.maximum(episodes, 1), np.nan)
            return mean, np.asarray(out.loss).mean(axis=1)

        best: Any = None
        for lr in grids[method]:
            state = init(keys, params0, _scalar(lr))
            result = _run_chunks(compiled, state, (_scalar(lr),), chunks, evaluate)
            returns = _forward_fill(np.array([r[0] for r in result["records"][1:]]))
            losses = np.array([r[1] for r in result["records"][1:]])
            env_steps = start_steps + np.arange(1, chunks + 1) * per_chunk * transitions_per_update
            for i in range(chunks):
                for s in range(seeds):
                    curves.append(
                        {"env": env_name, "method": method, "learning_rate": lr, "seed": s,
                         "updates": (i + 1) * per_chunk, "env_steps": int(env_steps[i]),
                         "seconds": result["seconds"][i + 1],
                         "episode_return": float(returns[i, s]), "td_loss": float(losses[i, s])}
                    )  # fmt: skip
            tail = max(1, chunks // 10)  # the last 10% of training
            final = returns[-tail:].mean(axis=0)  # per seed; NaN if no episode ever ended
            score = float(np.mean(final)) if np.all(np.isfinite(final)) else float("nan")
            if best is None or _worse(best[0], score, maximize=True):
                best = (score, lr, final, returns, result["seconds"])
            if not quiet:
                print(f"  dqn {env_name:<16} {method:<4} lr={lr:<8g} final return {score:.1f}")
        score, lr, final, returns, seconds = best
        table.append(
            {
                "env": env_name,
                "method": method.upper(),
                "learning_rate": lr,
                "final_return_mean": score,
                "final_return_min": float(np.min(final)),
                "final_return_max": float(np.max(final)),
                "mean_return_over_training": float(np.nanmean(returns)),
                "env_steps": int(start_steps + chunks * per_chunk * transitions_per_update),
                "updates": chunks * per_chunk,
                "seconds": float(seconds[-1]),
                "compile_seconds": compile_s,
            }
        )
    return table, curves


def _plot_dqn(path: Path, curves: list[dict], table: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    envs = list(dict.fromkeys(r["env"] for r in table))
    fig, axes = plt.subplots(len(envs), 2, figsize=(12, 3.6 * len(envs) + 0.6), squeeze=False)
    for row, env_name in enumerate(envs):
        for best in (r for r in table if r["env"] == env_name):
            method, lr = best["method"].lower(), best["learning_rate"]
            rows = [
                c for c in curves
                if c["env"] == env_name and c["method"] == method and c["learning_rate"] == lr
            ]  # fmt: skip
            seeds = sorted({c["seed"] for c in rows})
            steps = sorted({c["env_steps"] for c in rows})
            ret = np.array([[c["episode_return"] for c in rows if c["seed"] == s] for s in seeds])
            secs = [c["seconds"] for c in rows if c["seed"] == seeds[0]]
            label = f"{best['method']} (lr={lr:g})"
            _band_plot(axes[row, 0], steps, ret, label)
            _band_plot(axes[row, 1], secs, ret, label)
        for col in range(2):
            axes[row, col].set_ylabel(f"{env_name}\nepisode return (training)")
            axes[row, col].grid(alpha=0.3)
        axes[row, 0].set_xlabel("environment steps")
        axes[row, 1].set_xlabel("wall-clock seconds (all seeds, one vmapped program; log)")
        axes[row, 1].set_xscale("log")
        # labels on the decades only: minor-tick labels overlapped on short ranges
        axes[row, 1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[row, 1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- tables


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_lqr_table(rows: list[dict]) -> str:
    """The LQR table as fixed-width text."""
    head = (
        f"{'model':<10}{'method':<7}{'lr':>8}{'T':>6}{'final error (min-max)':>32}"
        f"{'steps to 0.1':>14}{'s to 0.1':>10}{'seconds':>9}{'compile s':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        final = f"{r['final_mean']:.3e} ({r['final_min']:.2e}-{r['final_max']:.2e})"
        lines.append(
            f"{r['model']:<10}{r['method']:<7}{r['learning_rate']:>8g}{r['target_period']:>6d}"
            f"{final:>32}"
            f"{_fmt(r['steps_to_0.1'], 'd'):>14}{_fmt(r['seconds_to_0.1'], '.2f'):>10}"
            f"{r['seconds']:>9.2f}{r['compile_seconds']:>11.1f}"
        )
    return "\n".join(lines)


def format_dqn_table(rows: list[dict]) -> str:
    """The DQN table as fixed-width text."""
    head = (
        f"{'env':<18}{'method':<7}{'lr':>8}{'final return (min-max)':>28}"
        f"{'mean over training':>20}{'env steps':>11}{'seconds':>9}{'compile s':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        final = (
            f"{r['final_return_mean']:.1f} ({r['final_return_min']:.1f} to "
            f"{r['final_return_max']:.1f})"
        )
        lines.append(
            f"{r['env']:<18}{r['method']:<7}{r['learning_rate']:>8g}{final:>28}"
            f"{r['mean_return_over_training']:>20.1f}{r['env_steps']:>11d}"
            f"{r['seconds']:>9.1f}{r['compile_seconds']:>11.1f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- run


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

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    print(_describe(machine))
    summary: dict[str, Any] = {"machine": machine, "seeds": seeds}
    result: dict[str, Any] = {"machine": machine}
    start = time.perf_counter()
    # one LAPACK thread: OpenBLAS's threaded Cholesky spins on a busy machine (see inna_jax.egn)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        if "lqr" in experiments:
            grids = {"egn": lqr_egn_lr, "sgn": lqr_sgn_lr, "sgd": lqr_sgd_lr, "adam": lqr_adam_lr}
            table, curves, extra = run_lqr(
                seeds=seeds,
                steps=lqr_steps,
                first_order_factor=lqr_first_order_factor,
                batch_size=lqr_batch_size,
                target_periods=tuple(lqr_target_periods),
                chunks=lqr_chunks,
                grids=grids,
                egn_regularizer=egn_regularizer,
                models=tuple(lqr_models),
                methods=tuple(lqr_methods),
                quiet=quiet,
            )
            title = (
                f"LQR policy evaluation by fitted TD (n=4, m=2, gamma=0.9, noise 0.1): batch "
                f"{lqr_batch_size}, target every {'/'.join(map(str, lqr_target_periods))} "
                f"steps (tuned), EGN lambda="
                f"{egn_regularizer:g}, SGN 10 CG/damping 1e-3/Armijo\nSGD/Adam run "
                f"{lqr_first_order_factor}x the steps of EGN/SGN; best lr per method; "
                f"mean and min-max over {seeds} seeds"
            )
            print("\nLQR policy evaluation (fitted TD): final relative error at the best lr")
            print(format_lqr_table(table))
            _plot_lqr(out / "lqr_curves.png", curves, table, title)
            _write_csv(out / "lqr_table.csv", table)
            (out / "lqr_table.json").write_text(json.dumps(table, indent=2) + "\n")
            _write_csv(out / "lqr_curves.csv", curves)
            summary["lqr"] = {
                "steps": lqr_steps,
                "first_order_factor": lqr_first_order_factor,
                "batch_size": lqr_batch_size,
                "target_periods": list(lqr_target_periods),
                "grids": {k: list(v) for k, v in grids.items()},
                "egn_regularizer": egn_regularizer,
                "sgn": {"regularizer": 1e-3, "cg_iterations": 10, "line_search": True},
                "network_hidden": list(LQR_HIDDEN),
                **extra,
            }
            result["lqr"] = table
        if "dqn" in experiments:
            table, curves = [], []
            config_used = {}
            for env_name in envs:
                settings = DQN_SETTINGS[env_name]
                updates: Any = (dqn_updates or {}).get(env_name, settings["updates"])
                config = rl.DQNConfig(
                    num_envs=dqn_num_envs,
                    buffer_size=dqn_buffer_size,
                    batch_size=dqn_batch_size,
                    gamma=settings["gamma"],
                    env_steps_per_update=1,
                    learning_starts=dqn_learning_starts,
                    target_period=dqn_target_period,
                    epsilon_start=1.0,
                    epsilon_end=0.05,
                    epsilon_decay_updates=max(1, updates // 2),
                )
                rows, env_curves = run_dqn(
                    env_name=env_name,
                    seeds=seeds,
                    updates=updates,
                    config=config,
                    hidden=settings["hidden"],
                    grids={"egn": dqn_egn_lr, "adam": dqn_adam_lr},
                    egn_regularizer=egn_regularizer,
                    chunks=dqn_chunks,
                    methods=tuple(dqn_methods),
                    quiet=quiet,
                )
                table += rows
                curves += env_curves
                config_used[env_name] = config._asdict() | {
                    "hidden": list(settings["hidden"]),
                    "updates": updates,
                }
            title = (
                f"DQN on gymnax: MLP Q-network, {dqn_num_envs} envs, batch {dqn_batch_size}, "
                f"buffer {dqn_buffer_size}, target every {dqn_target_period} updates, "
                f"eps 1->0.05 over half the updates,\nEGN lambda={egn_regularizer:g}, MSE on "
                f"the chosen action's Q; best lr per method; mean and min-max over {seeds} seeds"
            )
            print("\nDQN: training episode return at the best lr (final = last 10% of training)")
            print(format_dqn_table(table))
            _plot_dqn(out / "dqn_returns.png", curves, table, title)
            _write_csv(out / "dqn_table.csv", table)
            (out / "dqn_table.json").write_text(json.dumps(table, indent=2) + "\n")
            _write_csv(out / "dqn_curves.csv", curves)
            summary["dqn"] = {
                "envs": config_used,
                "grids": {"egn": list(dqn_egn_lr), "adam": list(dqn_adam_lr)},
                "egn_regularizer": egn_regularizer,
            }
            result["dqn"] = table
    summary["wall_seconds"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out}/ in {summary['wall_seconds']:.0f} s")
    return result


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``inna-jax egn-rl``; a bad flag exits with status 2 and one line naming it."""
    _positive_int, _positive_float = cli_args.positive_int, cli_args.positive_float
    d = DEFAULTS
    parser.add_argument("--out", default="out/egn_rl", help="output folder (CSV, JSON, PNG)")
    parser.add_argument(
        "--experiments", nargs="+", type=cli_args.choice(("lqr", "dqn")), default=["lqr", "dqn"],
        help="which experiments to run",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=_positive_int, default=5, help="seeds per method and learning rate"
    )
    parser.add_argument(
        "--egn-regularizer", type=_positive_float, default=d["egn_regularizer"],
        help="EGN's lambda (both experiments)",
    )  # fmt: skip
    lqr = parser.add_argument_group("LQR policy evaluation")
    lqr.add_argument(
        "--lqr-steps", type=_positive_int, default=d["lqr_steps"], help="fitted-TD steps (EGN, SGN)"
    )
    lqr.add_argument(
        "--lqr-first-order-factor", type=_positive_int, default=d["lqr_first_order_factor"],
        help="SGD and Adam take this many times --lqr-steps (their steps are cheaper)",
    )  # fmt: skip
    lqr.add_argument(
        "--lqr-batch-size", type=_positive_int, default=d["lqr_batch_size"],
        help="transitions per step",
    )  # fmt: skip
    lqr.add_argument(
        "--lqr-target-periods", type=_positive_int, nargs="+",
        default=list(d["lqr_target_periods"]),
        help="steps between TD target refreshes, each tried with every learning rate",
    )  # fmt: skip
    lqr.add_argument(
        "--lqr-chunks", type=_positive_int, default=d["lqr_chunks"],
        help="timed chunks (curve points) per run",
    )  # fmt: skip
    lqr.add_argument(
        "--lqr-models", nargs="+", type=cli_args.choice(LQR_MODELS), default=list(LQR_MODELS),
        help="value models: quadratic features and/or the MLP",
    )  # fmt: skip
    lqr.add_argument(
        "--lqr-methods", nargs="+", type=cli_args.choice(LQR_METHODS), default=list(LQR_METHODS),
        help="optimizers compared",
    )  # fmt: skip
    for method, name in (("egn", "EGN"), ("sgn", "SGN"), ("sgd", "SGD"), ("adam", "Adam")):
        lqr.add_argument(
            f"--lqr-{method}-lr", type=_positive_float, nargs="+",
            default=list(d[f"lqr_{method}_lr"]), help=f"{name} learning rates tried",
        )  # fmt: skip
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
    dqn.add_argument(
        "--dqn-updates", type=_positive_int, default=None,
        help="updates per environment (default: 5000 for CartPole/Acrobot, 10000 for MinAtar)",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-egn-lr", type=_positive_float, nargs="+", default=list(d["dqn_egn_lr"]),
        help="EGN learning rates tried",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-adam-lr", type=_positive_float, nargs="+", default=list(d["dqn_adam_lr"]),
        help="Adam learning rates tried",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-methods", nargs="+", type=cli_args.choice(DQN_METHODS), default=list(DQN_METHODS),
        help="optimizers compared",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-batch-size", type=_positive_int, default=d["dqn_batch_size"],
        help="replay batch per update (EGN's system size)",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-num-envs", type=_positive_int, default=d["dqn_num_envs"],
        help="environments stepped in parallel",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-buffer-size", type=_positive_int, default=d["dqn_buffer_size"],
        help="replay capacity (transitions)",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-target-period", type=_positive_int, default=d["dqn_target_period"],
        help="updates between target-network copies",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-learning-starts", type=_positive_int, default=d["dqn_learning_starts"],
        help="random transitions before the first update",
    )  # fmt: skip
    dqn.add_argument(
        "--dqn-chunks", type=_positive_int, default=d["dqn_chunks"],
        help="timed chunks (curve points) per run",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="print every grid point")
    parser.add_argument(
        "--blas-threads", type=_positive_int, default=1, help="OpenBLAS/LAPACK threads"
    )


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` with the parsed flags."""
    envs = list(dict.fromkeys(args.envs + ([MINATAR_ENV] if args.minatar else [])))
    updates: dict[str, Any] | None = (
        None if args.dqn_updates is None else dict.fromkeys(envs, args.dqn_updates)
    )
    run(
        out=args.out,
        experiments=tuple(args.experiments),
        seeds=args.seeds,
        lqr_steps=args.lqr_steps,
        lqr_first_order_factor=args.lqr_first_order_factor,
        lqr_batch_size=args.lqr_batch_size,
        lqr_target_periods=tuple(args.lqr_target_periods),
        lqr_chunks=args.lqr_chunks,
        lqr_egn_lr=tuple(args.lqr_egn_lr),
        lqr_sgn_lr=tuple(args.lqr_sgn_lr),
        lqr_sgd_lr=tuple(args.lqr_sgd_lr),
        lqr_adam_lr=tuple(args.lqr_adam_lr),
        lqr_models=tuple(args.lqr_models),
        lqr_methods=tuple(args.lqr_methods),
        egn_regularizer=args.egn_regularizer,
        envs=tuple(envs),
        dqn_updates=updates,
        dqn_egn_lr=tuple(args.dqn_egn_lr),
        dqn_adam_lr=tuple(args.dqn_adam_lr),
        dqn_methods=tuple(args.dqn_methods),
        dqn_batch_size=args.dqn_batch_size,
        dqn_num_envs=args.dqn_num_envs,
        dqn_buffer_size=args.dqn_buffer_size,
        dqn_target_period=args.dqn_target_period,
        dqn_learning_starts=args.dqn_learning_starts,
        dqn_chunks=args.dqn_chunks,
        quiet=not args.verbose,
        blas_threads=args.blas_threads,
    )
    return 0
