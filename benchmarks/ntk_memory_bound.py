"""A kernel that does not fit in one block: ``ntk_gram_blocked`` under a memory bound.

An MLP 32-512-512-10 (ReLU, float32) on N = 1024 random inputs: its full empirical NTK is
(10 N) x (10 N) = 10240 x 10240, 400 MiB in float32. With ``--max-memory 64`` (MiB),
:func:`inna_jax.ntk_block_plan` picks the largest power-of-two block B whose compiled block
program (XLA's ``memory_analysis``: arguments + outputs + temporaries) fits, and
:func:`inna_jax.ntk_gram_blocked` computes the blocks q >= p of the symmetric kernel. The same
kernel is then computed as one block (B = N, ``max_memory=None``), and both are compared.

Each configuration runs in a worker subprocess of its own, so that its peak RSS (``ru_maxrss``,
which includes the 400 MiB host array both fill) is its own. Printed per configuration: the
block size, blocks computed / blocks in the grid, XLA's per-block memory, wall time of the
plan and of the kernel (the first call compiles), and peak RSS; then the largest difference
between the two kernels.

Run by hand::

    python benchmarks/ntk_memory_bound.py                          # N = 1024, 64 MiB
    python benchmarks/ntk_memory_bound.py --n 2048 --max-memory 128
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time


def model(n: int):
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [32, 512, 512, 10]
    params = [
        (
            jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
            jnp.asarray(rng.standard_normal(b) * 0.1, jnp.float32),
        )
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]

    def predict(p, x):
        for w, bias in p[:-1]:
            x = jnp.maximum(x @ w + bias, 0)
        w, bias = p[-1]
        return x @ w + bias

    x = jnp.asarray(rng.standard_normal((n, 32)), jnp.float32)
    return predict, params, x


def worker(args) -> None:
    import numpy as np

    import inna_jax

    predict, params, x = model(args.n)
    bound = None if args.max_memory <= 0 else args.max_memory * 2**20
    t0 = time.perf_counter()
    plan = inna_jax.ntk_block_plan(predict, params, x, max_memory=bound)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    kernel = inna_jax.ntk_gram_blocked(predict, params, x, max_memory=bound, progress=False)
    t_kernel = time.perf_counter() - t0
    np.save(args.save, kernel)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "max_memory_mib": args.max_memory if bound else None,
        "block_size": plan.block_size,
        "blocks": plan.blocks,
        "grid": plan.row_blocks * plan.column_blocks,
        "block_mib": plan.block_bytes / 2**20,
        "plan_s": t_plan,
        "kernel_s": t_kernel,
        "rss_peak_mib": rss,
        "shape": list(kernel.shape),
        "kernel_mib": kernel.nbytes / 2**20,
    }
    print(json.dumps(out))


def machine() -> str:
    from inna_jax.reproduce.machine import cpu_name

    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}, load {os.getloadavg()[0]:.1f}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="examples (default 1024)")
    parser.add_argument(
        "--max-memory", type=float, default=64, help="the bound per block in MiB (default 64)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # --max-memory 0: one block
        worker(args)
        return
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if not args.max_memory > 0:
        parser.error(f"--max-memory must be > 0 MiB, got {args.max_memory}")
    import numpy as np

    print(f"machine: {machine()}")
    print(f"MLP 32-512-512-10, N = {args.n}: kernel {10 * args.n} x {10 * args.n} float32")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    rows, kernels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for bound in (args.max_memory, 0):
            save = pathlib.Path(tmp) / f"k{len(rows)}.npy"
            cmd = [sys.executable, __file__, "--worker", "--n", str(args.n)]
            cmd += ["--max-memory", str(bound), "--save", str(save)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(lines[-1]))
            kernels.append(np.load(save, mmap_mode="r"))
        diff = float(np.max(np.abs(kernels[0] - kernels[1])))
        scale = float(np.max(np.abs(kernels[1])))
    print(
        f"{'bound':>9} {'B':>5} {'blocks':>8} {'MiB/block':>10} {'plan s':>7} {'kernel s':>9}"
        f" {'peak RSS MiB':>13}"
    )
    for r in rows:
        bound = "none" if r["max_memory_mib"] is None else f"{r['max_memory_mib']:g} MiB"
        print(
            f"{bound:>9} {r['block_size']:>5} {r['blocks']:>3}/{r['grid']:<4} "
            f"{r['block_mib']:>10.1f} {r['plan_s']:>7.2f} {r['kernel_s']:>9.2f} "
            f"{r['rss_peak_mib']:>13.0f}"
        )
    print(
        f"kernel {rows[0]['shape'][0]} x {rows[0]['shape'][1]} ({rows[0]['kernel_mib']:.0f} MiB);"
        f" blocked vs one block: max |diff| / max |K| = {diff / scale:.1e}"
    )


if __name__ == "__main__":
    main()
