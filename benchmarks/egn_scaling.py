"""EGN step time and peak memory against the parameter count P and the batch size b.

For an MLP ``32 -> h -> h -> 1`` (scalar regression, half squared error) with h chosen so
that P is about 1e3, 1e4, 1e5 or 1e6, and batches b in {16, 64, 256}, it times one jitted
step of

* Adam (``value_and_grad`` + ``optax.adam``), the reference;
* EGN, ``implementation="jacobian"`` (per-example Jacobians, Gram contraction, b x b Cholesky);
* EGN, ``implementation="matrix_free"`` (VJP/JVP columns in chunks of 16, J never held);
* SGN (10 conjugate-gradient iterations; line search off, so that only the solve is timed);
* the dense parameter-space Gauss-Newton step (P x P matrix and Cholesky) where it fits.

Times are medians over several calls after compilation (``block_until_ready``). Peak memory
is XLA's own account of the compiled step, ``memory_analysis()``: temporary buffers plus
arguments plus outputs (minus aliased bytes). Float32 throughout. Sizes whose estimated cost
exceeds ``--max-gflop`` are listed as skipped with the reason. LAPACK (OpenBLAS, which
jaxlib's CPU Cholesky calls) is limited to one thread with ``threadpoolctl``: on a busy
2-core machine its threaded ``potrf`` for n >= 256 took 175 ms instead of 0.3 ms (spinning
threads); ``--blas-threads`` changes it. Run by hand:

    python benchmarks/egn_scaling.py            # a few minutes on a 2-core CPU
    python benchmarks/egn_scaling.py --max-gflop 2000 --repeats 5
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
from threadpoolctl import threadpool_limits

import inna_jax

D_IN = 32
LAMBDA = 1.0


def width_for(p_target: int) -> int:
    """Hidden width h with P = 32h + h + h^2 + h + h + 1 closest to ``p_target``."""
    # P(h) = h^2 + 35h + 1
    return max(1, round((-35 + math.sqrt(35**2 - 4 * (1 - p_target))) / 2))


def init(h: int, key: jax.Array) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (D_IN, h)) / math.sqrt(D_IN),
        "b1": jnp.zeros(h),
        "w2": jax.random.normal(k2, (h, h)) / math.sqrt(h),
        "b2": jnp.zeros(h),
        "w3": jax.random.normal(k3, (h, 1)) / math.sqrt(h),
        "b3": jnp.zeros(1),
    }


def predict(p: dict, x: jax.Array) -> jax.Array:
    z = jnp.tanh(x @ p["w1"] + p["b1"])
    z = jnp.tanh(z @ p["w2"] + p["b2"])
    return (z @ p["w3"] + p["b3"])[:, 0]


def batch_loss(p, x, y):
    return 0.5 * jnp.mean((predict(p, x) - y) ** 2)


def make_steps(p_count: int) -> dict:
    """name -> (step(params, state, x, y) -> (params, state), init(params))."""
    adam = optax.adam(1e-3)

    def adam_step(params, state, x, y):
        grads = jax.grad(batch_loss)(params, x, y)
        updates, state = adam.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def gn_step(tx):
        def step(params, state, x, y):
            updates, state = tx.update(None, state, params, inputs=x, targets=y)
            return optax.apply_updates(params, updates), state

        return step, tx.init

    def dense_step(params, state, x, y):
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        jac = jax.jacrev(lambda f: predict(unravel(f), x))(flat)  # (b, P)
        g = jac.T @ (predict(params, x) - y) / x.shape[0]
        h = jac.T @ jac / x.shape[0] + LAMBDA * jnp.eye(flat.size, dtype=flat.dtype)
        d = -jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(h), True), g)
        return unravel(flat + d), state

    steps = {
        "adam": (adam_step, adam.init),
        "egn_jacobian": gn_step(inna_jax.egn(predict, "mse", 1.0, LAMBDA)),
        "egn_matrix_free": gn_step(
            inna_jax.egn(predict, "mse", 1.0, LAMBDA, implementation="matrix_free", chunk_size=16)
        ),
        "sgn_cg10": gn_step(inna_jax.sgn(predict, "mse", 1.0, 1e-3, line_search=False)),
        "dense_gn": (dense_step, lambda params: ()),
    }
    return steps


def estimated_gflop(name: str, p: int, b: int) -> float:
    """A rough flop count of one step, to skip what does not fit the time budget."""
    fwd = 2.0 * p * b  # one forward pass over the batch
    cost = {
        "adam": 3 * fwd,
        "egn_jacobian": 3 * fwd + 2.0 * b * b * p + b**3 / 3,
        "egn_matrix_free": 3 * fwd + b * 4 * fwd + b**3 / 3,
        "sgn_cg10": 3 * fwd + 10 * 4 * fwd,
        "dense_gn": 3 * fwd + 2.0 * b * p * p + p**3 / 3,
    }[name]
    return cost / 1e9


def dense_memory_bytes(p: int) -> int:
    return 3 * 4 * p * p  # H, its Cholesky factor and a temporary, float32


def measure(step, init_fn, params, x, y, repeats: int) -> tuple[float, int]:
    """(median seconds per step, peak bytes from memory_analysis) for one compiled step."""
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
    out = compiled(params, state, x, y)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = compiled(params, state, x, y)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--p", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6], help="target P values"
    )
    parser.add_argument("--b", type=int, nargs="+", default=[16, 64, 256], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per step")
    parser.add_argument(
        "--max-gflop", type=float, default=60.0, help="skip steps estimated above this"
    )
    parser.add_argument(
        "--max-dense-gb", type=float, default=2.0, help="skip the dense P x P solve above this"
    )
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="OpenBLAS/LAPACK threads (threadpoolctl)"
    )
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        _run(args)


def _run(args: argparse.Namespace) -> None:

    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"cpu_count={os.cpu_count()}, jax {jax.__version__}, device={jax.devices()[0]}, "
        f"blas_threads={args.blas_threads}"
    )
    rows, skipped = [], []
    for p_target in args.p:
        h = width_for(int(p_target))
        params = init(h, jax.random.key(0))
        p = sum(leaf.size for leaf in jax.tree.leaves(params))
        steps = make_steps(p)
        for b in args.b:
            kx, ky = jax.random.split(jax.random.key(b))
            x = jax.random.normal(kx, (b, D_IN))
            y = jax.random.normal(ky, (b,))
            row = {"P": p, "h": h, "b": b}
            for name, (step, init_fn) in steps.items():
                gflop = estimated_gflop(name, p, b)
                if name == "dense_gn" and dense_memory_bytes(p) > args.max_dense_gb * 1e9:
                    skipped.append(
                        f"P={p} b={b} {name}: P x P matrices need "
                        f"{dense_memory_bytes(p) / 1e9:.1f} GB > {args.max_dense_gb} GB"
                    )
                    continue
                if gflop > args.max_gflop:
                    skipped.append(
                        f"P={p} b={b} {name}: ~{gflop:.0f} GFLOP per step > --max-gflop "
                        f"{args.max_gflop:g}"
                    )
                    continue
                repeats = args.repeats if gflop < 20 else max(2, args.repeats // 2)
                seconds, peak = measure(step, init_fn, params, x, y, repeats)
                row[f"{name}_ms"] = 1e3 * seconds
                row[f"{name}_peak_mb"] = peak / 2**20
            rows.append(row)
            print(_format_row(row), flush=True)
    print("\nratios to the Adam step (time):")
    for row in rows:
        if "adam_ms" not in row:
            continue
        parts = [
            f"{name}={row[f'{name}_ms'] / row['adam_ms']:.1f}x"
            for name in ("egn_jacobian", "egn_matrix_free", "sgn_cg10", "dense_gn")
            if f"{name}_ms" in row
        ]
        print(f"  P={row['P']:>8} b={row['b']:>4}: " + ", ".join(parts))
    if skipped:
        print("\nskipped:")
        for line in skipped:
            print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "skipped": skipped}, f, indent=2)


def _format_row(row: dict) -> str:
    parts = [f"P={row['P']:>8} b={row['b']:>4}"]
    for name in ("adam", "egn_jacobian", "egn_matrix_free", "sgn_cg10", "dense_gn"):
        if f"{name}_ms" in row:
            parts.append(f"{name} {row[f'{name}_ms']:8.2f} ms {row[f'{name}_peak_mb']:8.1f} MB")
        else:
            parts.append(f"{name} {'skipped':>23}")
    return " | ".join(parts)


if __name__ == "__main__":
    main()
