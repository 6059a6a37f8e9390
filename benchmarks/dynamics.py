"""Speed of the discrete INNA scan, the DIN solve, and a 64-point (alpha, beta) grid of solves.

Run by hand: ``python benchmarks/dynamics.py [--repeats 7] [--x64]``. On Figure 1's nonsmooth
loss J(theta) = 100 (theta2 - |theta1|)^2 + |1 - theta1| from (-1, 1.5), it times, after
compilation and with ``block_until_ready``:

1. a 10,000-step discrete INNA trajectory (``inna_jax.inna`` in ``lax.scan``, gamma = 1e-3);
2. the DIN solve to t = 20 with ``solve_din``'s kink-safe defaults (Tsit5 + PID with
   dtmin = 1e-4, force_dtmin=True);
3. a 64-point (alpha, beta) grid of DIN solves to t = 10 (s = beta), with the default adaptive
   controller and with fixed steps dt = 1e-3, four ways: a Python loop over the points (one
   compiled solve reused), a plain ``jax.vmap`` of the solve, ``inna_jax.dynamics.solve_grid``
   (its automatic strategy: ``lax.map`` for adaptive steps, ``vmap`` for fixed ones), and
   ``solve_grid(..., strategy="map", batch_size=8)``.

The grid candidates are timed round-robin (one call of each per round, ``--repeats`` rounds),
so that a change in the machine's load hits them alike; it prints the medians, the ratios,
the largest difference to the loop's final points (adaptive lanes under ``vmap`` take other
steps, and on this nonsmooth loss in float32 that shows) and the load average of the machine
before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax


def _median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile (and warm up)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement")
    parser.add_argument("--x64", action="store_true", help="run in float64")
    args = parser.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp
    import optax

    import inna_jax
    from inna_jax.dynamics import solve_din, solve_grid
    from inna_jax.reproduce.figure1 import loss

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(f"jax {jax.__version__}, devices {jax.devices()}, x64={args.x64}; load {_load()}")
    theta0 = jnp.array([-1.0, 1.5])

    # 1. discrete INNA, 10,000 steps
    steps = 10_000
    tx = inna_jax.inna(1e-3, 0.5, 0.1)
    grad = jax.grad(loss)

    @jax.jit
    def inna_path(theta):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(grad(params), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        return jax.lax.scan(body, (theta, tx.init(theta)), None, length=steps)[1]

    t_inna = _median_time(lambda: inna_path(theta0), args.repeats)
    final = inna_path(theta0)[-1]
    print(f"INNA, {steps:,} steps (lax.scan):       {t_inna * 1e3:8.2f} ms  "
          f"({t_inna / steps * 1e6:.2f} us/step), final {final}")  # fmt: skip

    # 2. DIN solve to t = 20
    def din(alpha, beta, t1, **options):
        return solve_din(loss, theta0, alpha=alpha, beta=beta, t1=t1, ts=jnp.array([t1]),
                         **options)  # fmt: skip

    sol = din(0.5, 0.1, 20.0)
    t_din = _median_time(lambda: din(0.5, 0.1, 20.0).theta, args.repeats)
    print(f"DIN solve to t = 20 (Tsit5, dtmin):   {t_din * 1e3:8.2f} ms  "
          f"({int(sol.num_steps):,} solver steps), final {sol.theta[-1]}")  # fmt: skip

    # 3. 64-point (alpha, beta) grid: loop, vmap, solve_grid; adaptive and fixed steps
    alphas = jnp.linspace(0.3, 2.0, 8)
    betas = jnp.geomspace(0.01, 0.5, 8)
    aa, bb = (x.ravel() for x in jnp.meshgrid(alphas, betas, indexing="ij"))
    grid = {"alpha": alphas[:, None], "beta": betas[None, :]}
    t_end = jnp.array([10.0])
    counts = solve_grid(solve_din, loss, theta0, grid=grid, t1=10.0, ts=t_end).num_steps
    print(
        f"grid solver steps per point (adaptive): max {int(counts.max()):,}, "
        f"mean {float(counts.mean()):,.0f}, min {int(counts.min()):,}"
    )
    controllers = {
        "adaptive (default)": {},
        "fixed dt = 1e-3": {"stepsize_controller": diffrax.ConstantStepSize(), "dt0": 1e-3},
    }
    print(f"load average before the grid: {_load()}")
    for name, options in controllers.items():
        point = lambda a, b, options=options: din(a, b, 10.0, **options).theta[-1]
        vmapped = jax.jit(jax.vmap(point))
        single = jax.jit(point)

        def on_grid(options=options, **kw):
            return solve_grid(solve_din, loss, theta0, grid=grid, t1=10.0, ts=t_end, **kw,
                              **options).theta[..., -1, :]  # fmt: skip

        candidates = {
            "loop": lambda single=single: jnp.stack(
                [single(a, b) for a, b in zip(aa, bb, strict=True)]
            ),
            "vmap": lambda vmapped=vmapped: vmapped(aa, bb),
            "solve_grid": on_grid,
            "solve_grid map, batch 8": lambda on_grid=on_grid: on_grid(
                strategy="map", batch_size=8
            ),
        }
        times = _round_robin(candidates, args.repeats)
        loop_out = candidates["loop"]()
        t_loop = times["loop"]
        print(
            f"64-point grid to t = 10, {name} (median; loop / candidate; max |candidate - loop|):"
        )
        for k, v in times.items():
            diff = float(jnp.max(jnp.abs(candidates[k]().reshape(64, 2) - loop_out)))
            print(f"  {k:<24} {v * 1e3:8.1f} ms  {t_loop / v:5.2f}x  {diff:.1e}")
    print(f"load average after the grid: {_load()}")
    print(
        "note: under vmap an adaptive solve runs every lane until the slowest one is done, "
        "so lanes that chatter on the kink set the cost; solve_grid runs adaptive lanes one "
        "after the other (lax.map) and vmaps fixed-step lanes, which stay in lockstep."
    )


def _round_robin(candidates, repeats):
    """Median time of each candidate, timed one call each per round (after compiling)."""
    for fn in candidates.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in candidates}
    for _ in range(repeats):
        for k, fn in candidates.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _load():
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min), {fifteen:.2f} (15 min)"


if __name__ == "__main__":
    main()
