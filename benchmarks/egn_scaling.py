"""EGN step time and peak memory against Adam, for MLPs of 1e3 to 1e6 parameters and a small CNN.

Models (float32):

* MLP ``32 -> h -> h -> C`` (tanh), h chosen so that P is about 1e3, 1e4, 1e5 or 1e6, with
  C = 1 (half squared error, "mse") and C = 10 (softmax cross-entropy, "ce");
* a Flax NNX CNN ``8x8x3 -> conv 3x3: 16 -> conv 3x3 stride 2: 32 -> dense 64 -> C`` (ReLU,
  P about 38k), C = 1 (mse) and C = 10 (ce).

Steps, each one jitted ``params, state, x, y -> params, state``:

* ``adam``: ``value_and_grad`` + ``optax.adam`` update + ``apply_updates`` (the reference);
* ``egn``: ``inna_jax.egn`` with the default ``implementation="auto"`` (layers found in the
  traced model, per-layer choice printed below the table), lambda = 1, no line search;
* ``egn_jacobian``, ``egn_matrix_free`` (chunks of 64 columns): the other implementations;
* ``sgn``: ``inna_jax.sgn``, 10 conjugate-gradient iterations, no line search;
* ``dense_gn``: the textbook parameter-space Gauss-Newton step (P x P matrix and Cholesky),
  MSE only, where it fits.

The steps of one model run interleaved (per round: one untimed call of a step, then
``--calls`` timed ones; ``--repeats`` rounds) and the table gives medians over rounds, so
that the load of a shared machine hits every step alike; ratios are to the Adam step of the
same rounds. Peak memory is XLA's own account of the compiled
step (``memory_analysis()``: temporaries + arguments + outputs - aliased). LAPACK (OpenBLAS,
behind jaxlib's CPU Cholesky) is limited to one thread with ``threadpoolctl``: on a busy 2-core
machine its threaded ``potrf`` spins (``--blas-threads`` changes it). Steps estimated above
``--max-gflop`` are skipped and listed. Run by hand:

    python benchmarks/egn_scaling.py                    # the targets' rows, a few minutes
    python benchmarks/egn_scaling.py --p 1e3 1e4 1e5 1e6 --b 16 64 256 --all
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK, for threadpoolctl below)
from flax import nnx
from threadpoolctl import threadpool_limits

import inna_jax

D_IN = 32
LAMBDA = 1.0
STEPS = ("adam", "egn", "egn_jacobian", "egn_matrix_free", "sgn", "dense_gn")


def width_for(p_target: float, c: int) -> int:
    """Hidden width h with P = 32h + h + h^2 + h + hC + C closest to ``p_target``."""
    b_coef = 34 + c
    return max(1, round((-b_coef + math.sqrt(b_coef**2 - 4 * (c - p_target))) / 2))


def mlp_params(h: int, c: int, key: jax.Array) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (D_IN, h)) / math.sqrt(D_IN),
        "b1": jnp.zeros(h),
        "w2": jax.random.normal(k2, (h, h)) / math.sqrt(h),
        "b2": jnp.zeros(h),
        "w3": jax.random.normal(k3, (h, c)) / math.sqrt(h),
        "b3": jnp.zeros(c),
    }


def mlp_predict(p: dict, x: jax.Array) -> jax.Array:
    z = jnp.tanh(x @ p["w1"] + p["b1"])
    z = jnp.tanh(z @ p["w2"] + p["b2"])
    return z @ p["w3"] + p["b3"]


class BenchCNN(nnx.Module):
    """8x8x3 -> conv 3x3: 16 -> conv 3x3 stride 2: 32 -> dense 64 -> C (ReLU)."""

    def __init__(self, c: int, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 16, (3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), padding="SAME", rngs=rngs)
        self.dense = nnx.Linear(4 * 4 * 32, 64, rngs=rngs)
        self.head = nnx.Linear(64, c, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
        return self.head(x)


def make_problem(model: str, p_target: float, c: int, b: int):
    """(name, predict_fn, params, x, y, loss)."""
    kx, ky = jax.random.split(jax.random.key(b + c))
    loss = "mse" if c == 1 else "cross_entropy"
    if model == "mlp":
        params = mlp_params(width_for(p_target, c), c, jax.random.key(0))
        predict = mlp_predict
        x = jax.random.normal(kx, (b, D_IN))
    else:
        graphdef, params = nnx.split(BenchCNN(c, nnx.Rngs(0)), nnx.Param)

        def predict(p, x):
            return nnx.merge(graphdef, p)(x)

        x = jax.random.normal(kx, (b, 8, 8, 3))
    fn = (lambda p, x: predict(p, x)[:, 0]) if c == 1 else predict
    if c == 1:
        y = jax.random.normal(ky, (b,))
    else:
        y = jax.random.randint(ky, (b,), 0, c)
    p_count = sum(leaf.size for leaf in jax.tree.leaves(params))
    name = f"{model} P={p_count} C={c} b={b}"
    return name, fn, params, x, y, loss


def make_steps(fn, loss: str, names: tuple[str, ...]) -> dict:
    """name -> (step(params, state, x, y) -> (params, state), init(params))."""
    adam = optax.adam(1e-3)

    def batch_loss(p, x, y):
        out = fn(p, x)
        if loss == "mse":
            return 0.5 * jnp.mean((out - y) ** 2)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))

    def adam_step(params, state, x, y):
        _, grads = jax.value_and_grad(batch_loss)(params, x, y)
        updates, state = adam.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def gn_step(tx):
        def step(params, state, x, y):
            updates, state = tx.update(None, state, params, inputs=x, targets=y)
            return optax.apply_updates(params, updates), state

        return step, tx.init

    def dense_step(params, state, x, y):
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        jac = jax.jacrev(lambda f: fn(unravel(f), x))(flat)  # (b, P)
        g = jac.T @ (fn(params, x) - y) / x.shape[0]
        h = jac.T @ jac / x.shape[0] + LAMBDA * jnp.eye(flat.size, dtype=flat.dtype)
        d = -jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), g)
        return unravel(flat + d), state

    all_steps = {
        "adam": lambda: (adam_step, adam.init),
        "egn": lambda: gn_step(inna_jax.egn(fn, loss, 1.0, LAMBDA)),
        "egn_jacobian": lambda: gn_step(
            inna_jax.egn(fn, loss, 1.0, LAMBDA, implementation="jacobian")
        ),
        "egn_matrix_free": lambda: gn_step(
            inna_jax.egn(fn, loss, 1.0, LAMBDA, implementation="matrix_free", chunk_size=64)
        ),
        "sgn": lambda: gn_step(inna_jax.sgn(fn, loss, 1.0, 1e-3, line_search=False)),
        "dense_gn": lambda: (dense_step, lambda params: ()),
    }
    return {name: all_steps[name]() for name in names}


def estimated_gflop(name: str, p: int, b: int, c: int) -> float:
    """A rough flop count of one step, to skip what does not fit the time budget."""
    fwd = 2.0 * p * b
    n = b * c
    cost = {
        "adam": 3 * fwd,
        "egn": 3 * fwd * c + 2.0 * n * n * math.sqrt(p) * 3,
        "egn_jacobian": 3 * fwd + 2.0 * n * n * p,
        "egn_matrix_free": 3 * fwd + n * 4 * fwd + n**3 / 3,
        "sgn": 3 * fwd + 10 * 4 * fwd,
        "dense_gn": 3 * fwd + 2.0 * b * p * p + p**3 / 3,
    }[name]
    return cost / 1e9


def compile_step(step, init_fn, params, x, y):
    """(compiled, state, peak bytes from memory_analysis)."""
    state = init_fn(params)
    compiled = jax.jit(step).lower(params, state, x, y).compile()
    mem = compiled.memory_analysis()
    peak = -1
    if mem is not None:
        peak = (
            mem.temp_size_in_bytes
            + mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            - mem.alias_size_in_bytes
        )
    jax.block_until_ready(compiled(params, state, x, y))
    return compiled, state, peak


def run_problem(args, model, p_target, c, b, skipped) -> dict:
    name, fn, params, x, y, loss = make_problem(model, p_target, c, b)
    p = sum(leaf.size for leaf in jax.tree.leaves(params))
    wanted = ("adam", "egn") + (
        ("egn_jacobian", "egn_matrix_free", "sgn", "dense_gn") if args.all else ()
    )
    if loss != "mse":
        wanted = tuple(s for s in wanted if s != "dense_gn")
    compiled = {}
    row = {"problem": name, "model": model, "P": p, "C": c, "b": b}
    for step_name, (step, init_fn) in make_steps(fn, loss, wanted).items():
        gflop = estimated_gflop(step_name, p, b, c)
        if step_name == "dense_gn" and 12.0 * p * p > args.max_dense_gb * 1e9:
            skipped.append(f"{name} {step_name}: P x P matrices need {12.0 * p * p / 1e9:.1f} GB")
            continue
        if gflop > args.max_gflop:
            skipped.append(f"{name} {step_name}: ~{gflop:.0f} GFLOP > --max-gflop")
            continue
        compiled[step_name] = compile_step(step, init_fn, params, x, y)
        row[f"{step_name}_peak_mb"] = compiled[step_name][2] / 2**20
    times = {k: [] for k in compiled}
    for _ in range(args.repeats):
        for k, (fn_c, state, _) in compiled.items():
            # one untimed call first: what the previous step left running (threads, caches)
            # does not land on this one
            jax.block_until_ready(fn_c(params, state, x, y))
            t0 = time.perf_counter()
            for _ in range(args.calls):
                jax.block_until_ready(fn_c(params, state, x, y))
            times[k].append((time.perf_counter() - t0) / args.calls)
    for k, ts in times.items():
        row[f"{k}_ms"] = 1e3 * statistics.median(ts)
    for k in times:
        row[f"{k}_ratio"] = row[f"{k}_ms"] / row["adam_ms"]
    if args.plans:
        cols = c - 1 if loss == "cross_entropy" else c
        row["plan"] = str(inna_jax.ntk_plan(fn, params, x, columns=cols))
    return row


TARGETS = {  # (model, P target, C) -> EGN / Adam target
    ("mlp", 1e5, 1): 1.5,
    ("mlp", 1e6, 1): 1.5,
    ("mlp", 1e5, 10): 12.0,
    ("mlp", 1e6, 10): 7.0,
    ("cnn", 0, 1): 2.0,
    ("cnn", 0, 10): 15.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=float, nargs="+", default=[1e5, 1e6], help="MLP P targets")
    parser.add_argument("--c", type=int, nargs="+", default=[1, 10], help="outputs C")
    parser.add_argument("--b", type=int, nargs="+", default=[64], help="batch sizes")
    parser.add_argument("--no-cnn", action="store_true", help="skip the small CNN")
    parser.add_argument("--all", action="store_true", help="also the other implementations")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per step and round")
    parser.add_argument("--max-gflop", type=float, default=60.0, help="skip steps above this")
    parser.add_argument("--max-dense-gb", type=float, default=2.0, help="dense P x P limit")
    parser.add_argument("--no-plans", dest="plans", action="store_false", help="no NTK plans")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    parser.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads")
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"cpu_count={os.cpu_count()}, load average {load[0]:.1f}, jax {jax.__version__}, "
        f"device={jax.devices()[0]}, blas_threads={args.blas_threads}, "
        f"repeats={args.repeats}"
    )
    problems = [("mlp", p, c, b) for p in args.p for c in args.c for b in args.b]
    if not args.no_cnn:
        problems += [("cnn", 0, c, b) for c in args.c for b in args.b]
    rows, skipped = [], []
    for problem in problems:
        row = run_problem(args, *problem, skipped)
        rows.append(row)
        print(_format_row(row), flush=True)
    print("\nEGN / Adam (time), with the targets where one is set:")
    for row in rows:
        key = (row["model"], _p_target(row, args), row["C"])
        target = TARGETS.get(key) if row["b"] == 64 else None
        verdict = ""
        if target is not None:
            ok = row["egn_ratio"] <= target
            verdict = f"  target <= {target:g}x: {'met' if ok else 'NOT met'}"
        others = ", ".join(
            f"{k}={row[f'{k}_ratio']:.1f}x" for k in STEPS[2:] if f"{k}_ratio" in row
        )
        print(f"  {row['problem']:<28} egn={row['egn_ratio']:.2f}x{verdict}  {others}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"(load average at the end: {load[0]:.1f})")
    if args.plans:
        print("\nper-layer choices of implementation='auto' (m = C - 1 columns for ce):")
        seen = set()
        for row in rows:
            key = (row["model"], row["P"], row["C"])
            if key in seen:
                continue
            seen.add(key)
            print(f"\n{row['problem']}\n{row['plan']}")
    if args.plans:
        print("\nper-layer choices of 'auto' for the models of inna_jax.models (b = 32,")
        print("cross-entropy, m = C - 1 columns; traced on abstract arrays, nothing is run):")
        for title, make, shape in _model_zoo():
            graphdef, params = nnx.split(make(), nnx.Param)
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
            x = jax.ShapeDtypeStruct((32, *shape), jnp.float32)

            def predict(p, xx, g=graphdef):
                return nnx.merge(g, p)(xx)

            out = jax.eval_shape(predict, abstract, x)
            plan = inna_jax.ntk_plan(predict, abstract, x, columns=out.shape[1] - 1)
            print(f"\n{title}\n{plan}")
    if skipped:
        print("\nskipped:")
        for line in skipped:
            print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "skipped": skipped}, f, indent=2)


def _model_zoo():
    """(title, constructor, input shape) of the package's models, as the reproductions use them."""
    from inna_jax.models import MLP, NiN, SmallCNN

    return [
        ("MLP 64-32-64-32-10 (digits)", lambda: MLP(64, (32, 64, 32), 10, rngs=nnx.Rngs(0)), (64,)),
        ("SmallCNN 8x8x1 -> 10 (digits)", lambda: SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(0)), (64,)),
        ("NiN 32x32x3 -> 100 (CIFAR-100)", lambda: NiN(100, rngs=nnx.Rngs(0)), (32, 32, 3)),
    ]


def _p_target(row: dict, args: argparse.Namespace) -> float:
    if row["model"] == "cnn":
        return 0
    return min(args.p, key=lambda t: abs(math.log(t) - math.log(row["P"])))


def _format_row(row: dict) -> str:
    parts = [f"{row['problem']:<28}"]
    for name in STEPS:
        if f"{name}_ms" in row:
            parts.append(f"{name} {row[f'{name}_ms']:7.2f} ms {row[f'{name}_peak_mb']:7.1f} MB")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
