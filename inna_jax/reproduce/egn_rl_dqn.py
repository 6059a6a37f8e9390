"""DQN on gymnax for ``inna-jax egn-rl``: settings per environment, runs, table, figure.

One jitted training loop (vectorised environments, replay buffer in device arrays, target
network, :func:`inna_jax.rl.dqn_train`) with the Q-network (MLP) trained by EGN on the TD
regression of the chosen actions' values, against Adam; learning rates from small grids. The
curves show the mean undiscounted return of the training (epsilon-greedy) episodes that ended
within each chunk (a chunk in which none ended repeats the previous value); "final" is the
last 10% of training.
"""

from __future__ import annotations

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
from inna_jax.reproduce import tables
from inna_jax.reproduce.egn_rl_runs import (
    compile_chunk,
    forward_fill,
    mean_score,
    plot_best,
    run_chunks,
    scalar,
    stack,
    worse,
)

DQN_METHODS = ("egn", "adam")
CLASSIC_ENVS = ("CartPole-v1", "Acrobot-v1")
MINATAR_ENV = "Breakout-MinAtar"
ENVS = (*CLASSIC_ENVS, MINATAR_ENV)

# DQN settings per environment (ours; the EGN paper's RL settings are not reproduced here)
DQN_SETTINGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {"hidden": (64, 64), "updates": 5_000, "gamma": 0.99},
    "Acrobot-v1": {"hidden": (64, 64), "updates": 5_000, "gamma": 0.99},
    "Breakout-MinAtar": {"hidden": (64, 64), "updates": 10_000, "gamma": 0.99},
}


def dqn_config(env_name: str, updates: int, s: dict[str, Any]) -> rl.DQNConfig:
    """The DQN configuration of one environment from the command's settings ``s``."""
    return rl.DQNConfig(
        num_envs=s["dqn_num_envs"],
        buffer_size=s["dqn_buffer_size"],
        batch_size=s["dqn_batch_size"],
        gamma=DQN_SETTINGS[env_name]["gamma"],
        env_steps_per_update=1,
        learning_starts=s["dqn_learning_starts"],
        target_period=s["dqn_target_period"],
        epsilon_start=1.0,
        epsilon_end=0.05,
        epsilon_decay_updates=max(1, updates // 2),
    )


def _make_env(name: str):
    require("rl", "the DQN of inna-jax egn-rl")
    import gymnax

    return gymnax.make(name)


class _Network:
    """The environment, the Q-network and the seeds' initial parameters and keys."""

    def __init__(self, env_name: str, hidden: tuple[int, ...], seeds: int):
        self.env, self.env_params = env, env_params = _make_env(env_name)
        obs_shape = env.observation_space(env_params).shape
        num_actions = env.action_space(env_params).n
        in_features = int(np.prod(obs_shape))

        def build(seed):
            return MLP(in_features, hidden, num_actions, rngs=nnx.Rngs(seed))

        graphdef, _ = nnx.split(build(0), nnx.Param)

        def q_fn(params, obs):
            return nnx.merge(graphdef, params)(obs)

        self.q_fn = q_fn
        self.predict_fn = rl.chosen_action_value(q_fn, obs_shape, num_actions)
        self.params0 = stack([nnx.state(build(s), nnx.Param) for s in range(seeds)])
        self.keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(2), s))(jnp.arange(seeds))


def _programs(net: _Network, method, config, grids, egn_regularizer, per_chunk):
    """The jitted init and the compiled chunk of one method, and the compilation's seconds."""

    def make_tx(lr):
        if method == "egn":
            return inna_jax.egn(
                net.predict_fn, "mse", learning_rate=lr, regularizer=egn_regularizer
            )
        return optax.adam(lr)

    env, env_params = net.env, net.env_params

    def chunk(state, lr):
        return jax.vmap(
            lambda st: rl.dqn_train(
                st, env, env_params, net.q_fn, make_tx(lr), config, num_updates=per_chunk
            )
        )(state)

    init = jax.jit(
        jax.vmap(
            lambda k, p, lr: rl.dqn_init(k, env, env_params, p, make_tx(lr), config),
            in_axes=(0, 0, None),
        )
    )
    state0 = init(net.keys, net.params0, scalar(grids[method][0]))
    compiled, compile_s = compile_chunk(chunk, state0, scalar(1.0))
    return init, compiled, compile_s


def _evaluate(seeds: int):
    def evaluate(state, out):
        if out is None:
            return np.full(seeds, np.nan), np.full(seeds, np.nan)
        returns = np.asarray(out.return_sum).sum(axis=1)
        episodes = np.asarray(out.episodes).sum(axis=1)
        mean = np.where(episodes > 0, returns / np.maximum(episodes, 1), np.nan)
        return mean, np.asarray(out.loss).mean(axis=1)

    return evaluate


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
    net = _Network(env_name, hidden, seeds)
    per_chunk = max(1, updates // chunks)
    chunks = updates // per_chunk
    per_update = config.num_envs * config.env_steps_per_update
    start_steps = -(-config.learning_starts // config.num_envs) * config.num_envs
    env_steps = start_steps + np.arange(1, chunks + 1) * per_chunk * per_update
    table, curves = [], []
    for method in methods:
        init, compiled, compile_s = _programs(
            net, method, config, grids, egn_regularizer, per_chunk
        )
        best: Any = None
        for lr in grids[method]:
            state = init(net.keys, net.params0, scalar(lr))
            result = run_chunks(compiled, state, (scalar(lr),), chunks, _evaluate(seeds))
            returns = forward_fill(np.array([r[0] for r in result["records"][1:]]))
            losses = np.array([r[1] for r in result["records"][1:]])
            curves += [
                {"env": env_name, "method": method, "learning_rate": lr, "seed": s,
                 "updates": (i + 1) * per_chunk, "env_steps": int(env_steps[i]),
                 "seconds": result["seconds"][i + 1],
                 "episode_return": float(returns[i, s]), "td_loss": float(losses[i, s])}
                for i in range(chunks) for s in range(seeds)
            ]  # fmt: skip
            final = returns[-max(1, chunks // 10) :].mean(axis=0)  # the last 10% of training
            score = mean_score(final)  # per seed above; NaN if no episode ever ended
            if best is None or worse(best[0], score, maximize=True):
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
                "env_steps": int(start_steps + chunks * per_chunk * per_update),
                "updates": chunks * per_chunk,
                "seconds": float(seconds[-1]),
                "compile_seconds": compile_s,
            }
        )
    return table, curves


def plot_dqn(path: Path, curves: list[dict], table: list[dict], title: str) -> None:
    """The best runs' return curves against environment steps and seconds, one row per
    environment."""
    plot_best(path, curves, table, {
        "panel": "env", "x": "env_steps", "value": "episode_return", "match": ("learning_rate",),
        "label": lambda b: f"{b['method']} (lr={b['learning_rate']:g})",
        "ylabel": lambda env_name: f"{env_name}\nepisode return (training)",
        "xlabels": ("environment steps",
                    "wall-clock seconds (all seeds, one vmapped program; log)"),
        "log_y": False, "log_seconds": True, "height": 3.6, "title": title,
    })  # fmt: skip


_DQN_COLUMNS = (
    ("env", "<18", ""), ("method", "<7", ""), ("lr", ">8", "g"),
    ("final return (min-max)", ">28", ""), ("mean over training", ">20", ".1f"),
    ("env steps", ">11", "d"), ("seconds", ">9", ".1f"), ("compile s", ">11", ".1f"),
)  # fmt: skip


def format_dqn_table(rows: list[dict]) -> str:
    """The DQN table as fixed-width text."""
    cells = [
        (r["env"], r["method"], r["learning_rate"],
         f"{r['final_return_mean']:.1f} ({r['final_return_min']:.1f} to "
         f"{r['final_return_max']:.1f})",
         r["mean_return_over_training"], r["env_steps"], r["seconds"], r["compile_seconds"])
        for r in rows
    ]  # fmt: skip
    return tables.format_table(_DQN_COLUMNS, cells, sep="")
