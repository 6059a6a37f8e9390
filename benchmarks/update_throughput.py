"""Throughput of one jitted optimizer update: INNA and INNAprop against SGD-momentum and Adam.

Every step is ``(params, state, grads) -> (params', state')`` under ``jax.jit`` with the
parameters and the optimizer state donated, so XLA may update them in place. The
"bandwidth floor" is a fused kernel that reads and writes as many bytes as INNA must
(read theta, psi, g; write theta, psi) and does nothing else. SGD with momentum moves the
same bytes (read theta, m, g; write theta, m). Adam (read theta, m, v, g; write theta, m, v)
and INNAprop (read theta, z, v, g; write theta, z, v) move seven arrays; the GB/s column
counts, for each method, the arrays it must move at least.

XLA:CPU does not fuse kernels with two outputs, so on CPU that literal floor kernel pays two
buffer copies. The script therefore also reports an ideal floor: five array passes at the
streaming bandwidth of a one-output in-place kernel (read theta, psi, g; write theta), i.e.
that kernel's time times 5/4.

The methods are timed in interleaved rounds in one process, and the script prints the median
time per update and the ratios. Run it by hand:

    python benchmarks/update_throughput.py            # 1M and 10M float32 parameters
    python benchmarks/update_throughput.py --sizes 1e6 --rounds 50
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import inna_jax


def make_params(size: int, leaves: int) -> dict[str, jax.Array]:
    """A dict of ``leaves`` float32 vectors holding ``size`` parameters in all."""
    per_leaf = size // leaves
    sizes = [per_leaf] * (leaves - 1) + [size - per_leaf * (leaves - 1)]
    keys = jax.random.split(jax.random.key(0), leaves)
    return {
        f"w{i}": jax.random.normal(k, (n,), jnp.float32)
        for i, (k, n) in enumerate(zip(keys, sizes, strict=True))
    }


def optax_step(tx: optax.GradientTransformation):
    """A donated, jitted ``(params, state, grads) -> (params, state)`` for an optax optimizer."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def floor_step():
    """Reads theta, psi, g and writes theta, psi, with the fewest flops: the bandwidth floor."""

    def step(params, psi, grads):
        new_params = jax.tree.map(lambda t, p, g: t + 0.1 * p - 0.01 * g, params, psi, grads)
        new_psi = jax.tree.map(lambda t, p: p + 0.1 * t, params, psi)
        return new_params, new_psi

    return jax.jit(step, donate_argnums=(0, 1))


def one_output_step():
    """Reads theta, psi, g and writes theta in place (4 array passes): streaming bandwidth."""

    def step(params, psi, grads):
        new_params = jax.tree.map(lambda t, p, g: t + 0.1 * p - 0.01 * g, params, psi, grads)
        return new_params, psi

    return jax.jit(step, donate_argnums=(0, 1))


def bench(size: int, leaves: int, rounds: int, inner: int) -> dict[str, float]:
    """Median seconds per update for each method, measured in interleaved rounds."""
    grads = make_params(size, leaves)
    grads = jax.tree.map(lambda g: 1e-3 * g, grads)
    methods = {
        "inna": inna_jax.inna(0.1, 0.5, 0.1),
        "sgd_momentum": optax.sgd(0.1, momentum=0.9),
        "innaprop": inna_jax.innaprop(1e-3),  # default decoupled weight decay 0.01
        "adam": optax.adam(1e-3),
        "adamw": optax.adamw(1e-3, weight_decay=0.01),
    }
    runners = {}
    for name, tx in methods.items():
        params = make_params(size, leaves)
        runners[name] = [optax_step(tx), params, tx.init(params)]
    params = make_params(size, leaves)
    runners["floor"] = [floor_step(), params, jax.tree.map(jnp.zeros_like, params)]
    params = make_params(size, leaves)
    runners["one_output"] = [one_output_step(), params, jax.tree.map(jnp.zeros_like, params)]

    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(rounds + 1):  # round 0 compiles and warms up
        for name, runner in runners.items():
            step, params, state = runner
            start = time.perf_counter()
            for _ in range(inner):
                params, state = step(params, state, grads)
            jax.block_until_ready((params, state))
            elapsed = (time.perf_counter() - start) / inner
            runner[1], runner[2] = params, state
            if round_index:
                times[name].append(elapsed)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med["ideal_floor"] = med.pop("one_output") * 5 / 4
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[1e6, 1e7], help="parameter counts"
    )
    parser.add_argument("--leaves", type=int, default=8, help="number of arrays in the pytree")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--inner", type=int, default=10, help="updates per timed round")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, {platform.processor() or '?'}")
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, "
        f"device: {device.device_kind} ({device.platform})"
    )
    print(
        f"float32 parameters in {args.leaves} arrays; "
        f"median of {args.rounds} rounds x {args.inner} updates\n"
    )
    header = (
        f"{'params':>8} {'method':>13} {'ms/update':>10} {'arrays':>7} {'GB/s':>7} "
        f"{'vs SGD-m':>9} {'vs Adam':>8} {'vs floor':>9} {'vs ideal':>9}"
    )
    print(header)
    print("-" * len(header))
    arrays = {"adam": 7, "adamw": 7, "innaprop": 7}  # the others: 5
    for size in (int(s) for s in args.sizes):
        med = bench(size, args.leaves, args.rounds, args.inner)
        for name in ["inna", "sgd_momentum", "innaprop", "adam", "adamw", "floor", "ideal_floor"]:
            t = med[name]
            moved = arrays.get(name, 5) * 4 * size  # bytes the method must move at least
            print(
                f"{size:>8.0e} {name:>13} {1e3 * t:>10.3f} {arrays.get(name, 5):>7} "
                f"{moved / t / 1e9:>7.1f} {t / med['sgd_momentum']:>9.3f} "
                f"{t / med['adam']:>8.3f} {t / med['floor']:>9.3f} {t / med['ideal_floor']:>9.3f}"
            )
        print()


if __name__ == "__main__":
    main()
