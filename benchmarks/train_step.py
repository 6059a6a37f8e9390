"""Time one INNA training step against one SGD step on the Network-in-Network.

Both steps are the same jitted function: forward, cross-entropy, backward, optimizer
update, ``optax.apply_updates``; only the optax transformation differs. INNA is
``inna_jax.inna(power_decay(0.1), 0.5, 0.1)`` and SGD is ``optax.sgd(power_decay(0.1))``,
as in the paper's Figure 2. After compilation, the two steps are timed in alternation
(``block_until_ready`` after each block of steps), and the median time per step of each is
reported with the ratio INNA / SGD. Target: INNA <= 1.03 x SGD.

    python benchmarks/train_step.py                 # CPU: batch 32, a few steps
    python benchmarks/train_step.py --steps 50 --repeats 11 --batch-size 128   # GPU

With ``--runs R`` it times instead one step of a group of R runs (INNA, each run its own
weights and batch): one ``jax.vmap``-ped program over the stacked runs against R calls of
the single-run program, for ``--model nin``, ``cnn`` (the small CNN of the reduced Figure 2)
or ``mlp`` (the EGN experiment's MLP 32-64-32). On XLA:CPU a vmapped convolution over
per-run kernels becomes a grouped convolution, which is why ``inna_jax.train.fit_many``
loops over the runs of convolutional models on CPU; on a GPU the vmapped program is the one
to use.

    python benchmarks/train_step.py --runs 6 --model cnn
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
from flax import nnx

import inna_jax
from inna_jax.models import NiN, count_params


def make_step(graphdef, tx):
    """The jitted pure step ``(params, opt_state, x, y) -> (params, opt_state, loss)``."""

    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def _group_model(name: str, seed: int):
    from inna_jax.models import MLP, SmallCNN

    rngs = nnx.Rngs(seed)
    if name == "nin":
        return NiN(100, rngs=rngs), (32, 32, 3), 100
    if name == "cnn":
        return SmallCNN((8, 8, 1), 10, rngs=rngs), (64,), 10
    return MLP(64, (32, 64, 32), 10, rngs=rngs), (64,), 10


def group_main(args: argparse.Namespace) -> None:
    """One group step: vmap over R stacked runs against R single-run calls."""
    models = [_group_model(args.model, s) for s in range(args.runs)]
    graphdef = nnx.split(models[0][0], nnx.Param)[0]
    shape, classes = models[0][1], models[0][2]
    tx = inna_jax.inna(inna_jax.power_decay(0.1, 0.5), alpha=0.5, beta=0.1)
    params = [nnx.state(m, nnx.Param) for m, _, _ in models]
    key = jax.random.key(0)
    xs = jax.random.normal(key, (args.runs, args.batch_size, *shape), jnp.float32)
    ys = jax.random.randint(key, (args.runs, args.batch_size), 0, classes)

    single = make_step(graphdef, tx)
    states = [(p, tx.init(p)) for p in params]

    def one(p, s, x, y):
        def loss_fn(q):
            logits = nnx.merge(graphdef, q)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    batched = jax.jit(jax.vmap(one), donate_argnums=(0, 1))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[p for p, _ in states])
    stacked = (stacked, jax.vmap(tx.init)(stacked))
    out = batched(*stacked, xs, ys)
    jax.block_until_ready(out)
    stacked = out[:2]
    for r in range(args.runs):
        out = single(*states[r], xs[r], ys[r])
        states[r] = out[:2]
    jax.block_until_ready(states)
    times = {"vmap": [], "loop": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            out = batched(*stacked, xs, ys)
            stacked = out[:2]
        jax.block_until_ready(stacked)
        times["vmap"].append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        for _ in range(args.steps):
            for r in range(args.runs):
                out = single(*states[r], xs[r], ys[r])
                states[r] = out[:2]
        jax.block_until_ready(states)
        times["loop"].append((time.perf_counter() - start) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model: {args.model}, {args.runs} runs, batch {args.batch_size} per run")
    for k, v in med.items():
        print(f"{k:4s}: {v * 1e3:8.2f} ms per group step ({v * 1e3 / args.runs:.3f} ms per run)")
    print(f"loop / vmap = {med['loop'] / med['vmap']:.2f} (> 1: the vmapped group is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per optimizer")
    parser.add_argument("--classes", type=int, default=100, help="NiN outputs (CIFAR-100)")
    parser.add_argument(
        "--runs", type=int, default=0, help="time a group of this many runs (vmap vs loop)"
    )
    parser.add_argument(
        "--model", choices=("nin", "cnn", "mlp"), default="nin", help="model of --runs"
    )
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.runs:
        group_main(args)
        return
    model = NiN(args.classes, rngs=nnx.Rngs(0))
    graphdef, params0 = nnx.split(model, nnx.Param)
    print(
        f"model: NiN, {count_params(model):,} parameters; batch {args.batch_size}, "
        f"{args.steps} steps x {args.repeats} repeats per optimizer"
    )
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (args.batch_size, 32, 32, 3), jnp.float32)
    y = jax.random.randint(ky, (args.batch_size,), 0, args.classes)

    schedule = inna_jax.power_decay(0.1, 0.5)
    optimizers = {
        "SGD": optax.sgd(schedule),
        "INNA": inna_jax.inna(schedule, alpha=0.5, beta=0.1),
    }
    runs = {}
    for name, tx in optimizers.items():
        params = jax.tree.map(jnp.copy, params0)
        step = make_step(graphdef, tx)
        state = (params, tx.init(params))
        p, s, loss = step(*state, x, y)  # compile and warm up
        jax.block_until_ready((p, s, loss))
        runs[name] = [step, (p, s), []]

    for _ in range(args.repeats):
        for name in optimizers:  # alternate, so that drift on a shared machine hits both
            step, state, times = runs[name]
            start = time.perf_counter()
            for _ in range(args.steps):
                p, s, loss = step(*state, x, y)
                state = (p, s)
            jax.block_until_ready(state)
            times.append((time.perf_counter() - start) / args.steps)
            runs[name][1] = state

    medians = {name: statistics.median(run[2]) for name, run in runs.items()}
    for name, t in medians.items():
        spread = f"min {min(runs[name][2]) * 1e3:.2f}, max {max(runs[name][2]) * 1e3:.2f}"
        print(f"{name:5s} step: median {t * 1e3:8.2f} ms ({spread})")
    ratio = medians["INNA"] / medians["SGD"]
    verdict = "meets" if ratio <= 1.03 else "misses"
    print(f"ratio INNA / SGD = {ratio:.3f} (medians; {verdict} the target <= 1.03)")
    fastest = min(runs["INNA"][2]) / min(runs["SGD"][2])
    print(f"ratio INNA / SGD = {fastest:.3f} (fastest blocks; robust on a shared machine)")


if __name__ == "__main__":
    main()
