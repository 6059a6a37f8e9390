"""LQR policy evaluation by fitted TD, for ``inna-jax egn-rl``: models, runs, table, figure.

A random 4-state, 2-input linear system under a fixed stabilising linear policy, cost
x'Qx + u'Ru, discount 0.9, Gaussian process noise (:func:`inna_jax.rl.make_lqr`). The value
V(x) = x'Px + c is known in closed form (:func:`inna_jax.rl.lqr_value`). Fitted TD learns it
from fresh sampled transitions, with a target refreshed every T steps, by EGN (MSE), SGN, SGD
and Adam, each with a grid of learning rates and of T, for two models: quadratic features
(reports ||P_hat - P||_F / ||P||_F) and a tanh MLP 32-32 (the relative RMS value error on
1000 held-out states).
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
from inna_jax.models import MLP
from inna_jax.reproduce import tables
from inna_jax.reproduce.egn_rl_runs import (
    compile_chunk,
    mean_score,
    plot_best,
    run_chunks,
    scalar,
    stack,
    worse,
)

LQR_METHODS = ("egn", "sgn", "sgd", "adam")
LQR_MODELS = ("quadratic", "network")
LQR_HIDDEN = (32, 32)


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


class _Problem:
    """The LQR system, its exact value, held-out states and the error of a model's fit."""

    def __init__(self, problem_seed: int):
        self.problem = problem = rl.make_lqr(problem_seed)
        self.n = n = problem.A.shape[0]
        self.p_true, self.c_true = rl.lqr_value(problem)
        self.p_true_j = jnp.asarray(self.p_true, problem.A.dtype)
        self.x_test = jax.random.normal(jax.random.key(10_000), (1000, n), problem.A.dtype)
        self.v_test = (
            jnp.einsum("bi,ij,bj->b", self.x_test, self.p_true_j, self.x_test) + self.c_true
        )

    def error_fn(self, model: str, value_fn):
        """The relative error of ``P`` (quadratic) or of the values (MLP), for every seed."""
        p_true_j, n = self.p_true_j, self.n
        if model == "quadratic":

            def error(params):  # pyright: ignore[reportRedeclaration]
                p_hat, _ = rl.quadratic_matrix(params, n)
                return jnp.linalg.norm(p_hat - p_true_j) / jnp.linalg.norm(p_true_j)

        else:

            def error(params):
                diff = value_fn(params, self.x_test) - self.v_test
                return jnp.sqrt(jnp.mean(diff**2) / jnp.mean(self.v_test**2))

        return jax.jit(jax.vmap(lambda st: error(st.params)))

    def summary(self) -> dict[str, Any]:
        """The problem's description for ``summary.json``."""
        p = self.problem
        return {
            "P": self.p_true.tolist(),
            "c": self.c_true,
            "state_dim": self.n,
            "gamma": float(p.gamma),
        }


def _programs(problem, method, value_fn, s, per_chunk, params0, keys):
    """The jitted init and the compiled chunk of one method (learning rate and period as
    arguments), and the compilation's seconds."""

    def make_tx(lr):
        return _optimizer(method, lr, value_fn, s["egn_regularizer"])

    def chunk(state, lr, period):
        return jax.vmap(
            lambda st: rl.td_policy_evaluation(
                st, value_fn, make_tx(lr), problem, steps=per_chunk,
                batch_size=s["batch_size"], target_period=period,
            )
        )(state)  # fmt: skip

    init = jax.jit(jax.vmap(lambda p, k, lr: rl.td_init(p, make_tx(lr), k), in_axes=(0, 0, None)))
    state0 = init(params0, keys, scalar(s["grids"][method][0]))
    compiled, compile_s = compile_chunk(chunk, state0, scalar(1.0), jnp.asarray(1, jnp.int32))
    return init, compiled, compile_s


def _method_runs(lqr: _Problem, model, method, value_fn, error_all, s, params0, keys, curves):
    """Every (learning rate, target period) of one method; appends the curves and returns the
    table row of the best pair."""
    per_chunk = max(1, s["steps"] // s["chunks"])
    method_steps = s["steps"] * (s["first_order_factor"] if method in ("sgd", "adam") else 1)
    num_chunks = max(1, method_steps // per_chunk)
    init, compiled, compile_s = _programs(
        lqr.problem, method, value_fn, s, per_chunk, params0, keys
    )
    best: Any = None
    for lr in s["grids"][method]:
        for period in s["target_periods"]:
            state = init(params0, keys, scalar(lr))
            args = (scalar(lr), jnp.asarray(period, jnp.int32))
            result = run_chunks(
                compiled, state, args, num_chunks, lambda st, _out: np.asarray(error_all(st))
            )
            errors = np.array(result["records"])  # (points, seeds)
            for i, (sec, errs) in enumerate(zip(result["seconds"], errors, strict=True)):
                curves += [
                    {"model": model, "method": method, "learning_rate": lr,
                     "target_period": period, "seed": seed, "step": i * per_chunk,
                     "seconds": sec, "error": float(e)}
                    for seed, e in enumerate(errs)
                ]  # fmt: skip
            score = mean_score(errors[-1])
            if best is None or worse(best[0], score, maximize=False):
                best = (score, lr, period, errors, result["seconds"])
            if not s["quiet"]:
                print(
                    f"  lqr {model:<9} {method:<4} lr={lr:<8g} target every "
                    f"{period:<5d} final error {score:.4g}"
                )
    return _table_row(model, method, best, per_chunk, num_chunks, compile_s)


def _table_row(model, method, best, per_chunk, num_chunks, compile_s) -> dict[str, Any]:
    score, lr, period, errors, seconds = best
    reach = np.nonzero(np.mean(errors, axis=1) <= 0.1)[0]
    return {
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
    s = dict(locals())
    lqr = _Problem(problem_seed)
    table, curves = [], []
    for model in models:
        value_fn, init_params = _lqr_model(model, lqr.n)
        params0 = stack([init_params(seed) for seed in range(seeds)])
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(1), i))(jnp.arange(seeds))
        error_all = lqr.error_fn(model, value_fn)
        for method in methods:
            row = _method_runs(lqr, model, method, value_fn, error_all, s, params0, keys, curves)
            table.append(row)
    return table, curves, lqr.summary()


def plot_lqr(path: Path, curves: list[dict], table: list[dict], title: str) -> None:
    """The best runs' error curves against steps and seconds, one row per model."""
    plot_best(path, curves, table, {
        "panel": "model", "x": "step", "value": "error",
        "match": ("learning_rate", "target_period"),
        "label": lambda b: f"{b['method']} (lr={b['learning_rate']:g}, T={b['target_period']})",
        "ylabel": lambda model: (
            r"$\|\hat P - P\|_F / \|P\|_F$ (quadratic features)" if model == "quadratic"
            else "relative RMS value error (MLP 32-32, held-out states)"
        ),
        "xlabels": ("optimizer steps", "wall-clock seconds (all seeds, one vmapped program)"),
        "log_y": True, "log_seconds": False, "height": 3.5, "title": title,
    })  # fmt: skip


_LQR_COLUMNS = (
    ("model", "<10", ""), ("method", "<7", ""), ("lr", ">8", "g"), ("T", ">6", "d"),
    ("final error (min-max)", ">32", ""), ("steps to 0.1", ">14", ""), ("s to 0.1", ">10", ""),
    ("seconds", ">9", ".2f"), ("compile s", ">11", ".1f"),
)  # fmt: skip


def format_lqr_table(rows: list[dict]) -> str:
    """The LQR table as fixed-width text."""
    cells = [
        (r["model"], r["method"], r["learning_rate"], r["target_period"],
         f"{r['final_mean']:.3e} ({r['final_min']:.2e}-{r['final_max']:.2e})",
         tables.or_dash(r["steps_to_0.1"], "d"), tables.or_dash(r["seconds_to_0.1"], ".2f"),
         r["seconds"], r["compile_seconds"])
        for r in rows
    ]  # fmt: skip
    return tables.format_table(_LQR_COLUMNS, cells, sep="")
