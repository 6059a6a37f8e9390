"""EGN on a zoo of models people train: the plan, exactness, EGN / Adam before and after.

Models (10 classes, softmax cross-entropy):

* ``eqx_mlp``: ``eqx.nn.MLP(64, 10, width=128, depth=3)`` (tanh), applied with ``jax.vmap``;
* ``eqx_mlp_scan``: the same with ``scan=True`` (hidden layers stacked, applied by ``lax.scan``);
* ``eqx_cnn``: Equinox ``8x8x3 -> conv 3x3: 16 -> conv 3x3 stride 2: 32 -> linear`` (ReLU);
* ``nnx_transformer``: Flax NNX, vocabulary 64, 16 tokens, width 64, 4 heads, 2 pre-norm
  blocks (LayerNorm, attention from ``nnx.Linear`` projections, a GELU MLP), a learned
  positional table, RMSNorm, mean pooling, a linear head;
* ``residual_scan``: ``64 -> 128``, 4 residual blocks ``h + tanh(h W_t + b_t)`` whose weights
  are stacked ``(4, 128, 128)`` and applied with ``lax.scan``, ``-> 10``;
* ``residual_unrolled``: its unrolled twin (a Python list of blocks, same numbers);
* ``gru``: ``nnx.RNN(nnx.GRUCell(16, 64))`` over 16 steps, the last state to a linear head.

For each model, in a worker process of its own, with this tree's ``inna_jax`` ("after") and,
with ``--before TREE``, the ``inna_jax`` of another tree (e.g. a ``git worktree`` of an older
commit), copied under the name ``inna_jax_before`` so that both run in the same process:

* the per-layer plan (``ntk_plan`` with ``columns=C-1``, as EGN uses it) of each version;
* exactness: ``ntk_gram`` against the textbook ``vmap(jacrev)`` Gram over every parameter,
  in float64, at b = 8 (relative max error);
* EGN / Adam: one jitted ``egn`` step of each version (``implementation="auto"``,
  lambda = 1, no line search) and one jitted ``optax.adam`` step, float32, b = 64, run
  interleaved (per round one untimed call of each, then ``--calls`` timed calls; the fastest
  call of all ``--repeats`` rounds, as the load of a shared machine only ever adds time;
  medians in ``--json``), so that "before" and "after" are measured side by side under the
  same load.
  ``OPENBLAS_NUM_THREADS=1`` in the worker (see ``inna_jax.egn``, "Cost").

Run by hand (minutes; the ``before`` tree is slow on the scanned models):

    git worktree add --detach /tmp/inna_before <commit>
    python benchmarks/egn_zoo.py --before /tmp/inna_before
    python benchmarks/egn_zoo.py --models gru --repeats 3      # one model, this tree only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

MODELS = (
    "eqx_mlp",
    "eqx_mlp_scan",
    "eqx_cnn",
    "nnx_transformer",
    "residual_scan",
    "residual_unrolled",
    "gru",
)
CLASSES = 10


# ---------------------------------------------------------------------------------------------
# models (imported lazily: the worker sets x64 before jax is imported)


def build(name: str, dtype, b: int, seed: int = 0):
    """(predict_fn, params, x, y) for one model, parameters and inputs in ``dtype``."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from flax import nnx

    k = jax.random.split(jax.random.key(seed), 8)
    y = jax.random.randint(k[7], (b,), 0, CLASSES)

    def cast(tree):
        return jax.tree.map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a,
            tree,
            is_leaf=lambda a: isinstance(a, jax.Array),
        )

    if name in ("eqx_mlp", "eqx_mlp_scan"):
        mlp = eqx.nn.MLP(64, CLASSES, 128, 3, jnp.tanh, scan=name == "eqx_mlp_scan", key=k[0])
        params, static = eqx.partition(mlp, eqx.is_inexact_array)
        fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731
        return fn, cast(params), jax.random.normal(k[1], (b, 64), dtype), y
    if name == "eqx_cnn":

        class CNN(eqx.Module):
            c1: eqx.nn.Conv2d
            c2: eqx.nn.Conv2d
            head: eqx.nn.Linear

            def __init__(self, key):
                a, b_, c = jax.random.split(key, 3)
                self.c1 = eqx.nn.Conv2d(3, 16, 3, padding=1, key=a)
                self.c2 = eqx.nn.Conv2d(16, 32, 3, stride=2, padding=1, key=b_)
                self.head = eqx.nn.Linear(4 * 4 * 32, CLASSES, key=c)

            def __call__(self, x):
                x = jax.nn.relu(self.c1(x))
                x = jax.nn.relu(self.c2(x))
                return self.head(x.reshape(-1))

        params, static = eqx.partition(CNN(k[0]), eqx.is_inexact_array)
        fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)  # noqa: E731
        return fn, cast(params), jax.random.normal(k[1], (b, 3, 8, 8), dtype), y
    if name in ("residual_scan", "residual_unrolled"):
        d = 128
        params = {
            "win": jax.random.normal(k[0], (64, d), dtype) / 8,
            "blocks": {
                "w": jax.random.normal(k[1], (4, d, d), dtype) / jnp.sqrt(d).astype(dtype),
                "b": jnp.zeros((4, d), dtype),
            },
            "wout": jax.random.normal(k[2], (d, CLASSES), dtype) / jnp.sqrt(d).astype(dtype),
        }
        x = jax.random.normal(k[3], (b, 64), dtype)
        if name == "residual_scan":

            def fn(p, x):
                def block(h, w):
                    return h + jnp.tanh(h @ w["w"] + w["b"]), None

                h, _ = jax.lax.scan(block, x @ p["win"], p["blocks"])
                return h @ p["wout"]

            return fn, params, x, y
        blocks = [jax.tree.map(lambda a, t=t: a[t], params["blocks"]) for t in range(4)]
        params = {**params, "blocks": blocks}

        def fn(p, x):
            h = x @ p["win"]
            for w in p["blocks"]:
                h = h + jnp.tanh(h @ w["w"] + w["b"])
            return h @ p["wout"]

        return fn, params, x, y
    kw = {"dtype": dtype, "param_dtype": dtype}
    if name == "gru":

        class GRU(nnx.Module):
            def __init__(self, rngs):
                self.rnn = nnx.RNN(nnx.GRUCell(16, 64, rngs=rngs, **kw))
                self.head = nnx.Linear(64, CLASSES, rngs=rngs, **kw)

            def __call__(self, x):
                h = self.rnn(x, initial_carry=jnp.zeros((x.shape[0], 64), dtype))
                return self.head(h[:, -1])

        graphdef, params, rest = nnx.split(GRU(nnx.Rngs(seed)), nnx.Param, ...)
        fn = lambda p, x: nnx.merge(graphdef, p, rest)(x)  # noqa: E731
        return fn, params, jax.random.normal(k[1], (b, 16, 16), dtype), y

    class Attention(nnx.Module):
        def __init__(self, d, heads, rngs):
            self.q, self.k, self.v, self.o = (nnx.Linear(d, d, rngs=rngs, **kw) for _ in "qkvo")
            self.heads = heads

        def __call__(self, x):
            b_, t, d = x.shape
            split = lambda z: z.reshape(b_, t, self.heads, d // self.heads)  # noqa: E731
            q, kk, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            scale = jnp.asarray((d // self.heads) ** -0.5, dtype)
            w = jax.nn.softmax(jnp.einsum("bthe,bshe->bhts", q, kk) * scale)
            return self.o(jnp.einsum("bhts,bshe->bthe", w, v).reshape(b_, t, d))

    class Block(nnx.Module):
        def __init__(self, d, rngs):
            self.ln1 = nnx.LayerNorm(d, rngs=rngs, **kw)
            self.att = Attention(d, 4, rngs)
            self.ln2 = nnx.LayerNorm(d, rngs=rngs, **kw)
            self.ff1 = nnx.Linear(d, 2 * d, rngs=rngs, **kw)
            self.ff2 = nnx.Linear(2 * d, d, rngs=rngs, **kw)

        def __call__(self, x):
            x = x + self.att(self.ln1(x))
            return x + self.ff2(nnx.gelu(self.ff1(self.ln2(x))))

    class Transformer(nnx.Module):
        def __init__(self, rngs, vocab=64, seq=16, d=64):
            self.embed = nnx.Embed(vocab, d, rngs=rngs, **kw)
            self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq, d), dtype))
            self.blocks = nnx.List([Block(d, rngs) for _ in range(2)])
            self.norm = nnx.RMSNorm(d, rngs=rngs, **kw)
            self.head = nnx.Linear(d, CLASSES, rngs=rngs, **kw)

        def __call__(self, tokens):
            x = self.embed(tokens) + self.pos[...]
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).mean(axis=1))

    graphdef, params = nnx.split(Transformer(nnx.Rngs(seed)), nnx.Param)
    fn = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    return fn, params, jax.random.randint(k[1], (b, 16), 0, 64), y


# ---------------------------------------------------------------------------------------------
# the worker: one model, both versions of the package in one process


def _versions(before: str | None) -> dict:
    """label -> the package module: ``after`` is this tree's ``inna_jax``; ``before`` is the
    ``inna_jax`` of another tree, copied under the name ``inna_jax_before`` (every
    ``inna_jax`` in its sources renamed) so that both live in one process."""
    import importlib
    import re
    import shutil
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    versions = {"after": importlib.import_module("inna_jax")}
    if before is None:
        return versions
    root = tempfile.mkdtemp(prefix="egn_zoo_")
    target = os.path.join(root, "inna_jax_before")
    shutil.copytree(os.path.join(before, "inna_jax"), target)
    for folder, _, files in os.walk(target):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    text = re.sub(r"\binna_jax\b", "inna_jax_before", fh.read())
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
    sys.path.insert(0, root)
    versions["before"] = importlib.import_module("inna_jax_before")
    return versions


def _exactness(name: str, versions: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    fn, params, x, _ = build(name, jnp.float64, 8)
    leaves, tree = jax.tree.flatten(params)

    def one(xi):
        xi = jax.tree.map(lambda a: a[None], xi)
        jac = jax.jacrev(lambda ls: fn(jax.tree.unflatten(tree, ls), xi)[0])(leaves)
        return jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)

    jac = jax.jit(jax.vmap(one))(x)
    jac = jac.reshape(-1, jac.shape[-1])
    ref = np.asarray(jac @ jac.T)
    out = {}
    for label, mod in versions.items():
        got = np.asarray(jax.jit(lambda p, xx, m=mod: m.ntk_gram(fn, p, xx))(params, x))
        out[label] = float(np.max(np.abs(got.reshape(ref.shape) - ref)) / np.max(np.abs(ref)))
    return out


def _compile(step, init, params, x, y):
    import jax

    state = init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, state, x, y).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    peak = (
        mem.temp_size_in_bytes
        + mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    jax.block_until_ready(compiled(params, state, x, y))
    return compiled, state, compile_s, peak


def _timing(name: str, b: int, repeats: int, calls: int, versions: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    fn, params, x, y = build(name, jnp.float32, b)
    adam = optax.adam(1e-3)

    def adam_step(params, state, x, y):
        loss = lambda p: jnp.mean(  # noqa: E731
            optax.softmax_cross_entropy_with_integer_labels(fn(p, x), y)
        )
        updates, state = adam.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    def egn_step(tx):
        def step(params, state, x, y):
            updates, state = tx.update(None, state, params, inputs=x, targets=y)
            return optax.apply_updates(params, updates), state

        return step, tx.init

    steps = {"adam": _compile(adam_step, adam.init, params, x, y)}
    for label, mod in versions.items():
        step, init = egn_step(mod.egn(fn, "cross_entropy", 1.0, 1.0))
        steps[f"egn_{label}"] = _compile(step, init, params, x, y)
    times: dict = {k: [] for k in steps}
    for _ in range(repeats):
        for k, (compiled, state, _, _) in steps.items():
            jax.block_until_ready(compiled(params, state, x, y))
            for _ in range(calls):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(params, state, x, y))
                times[k].append(time.perf_counter() - t0)
    row: dict = {"P": int(sum(a.size for a in jax.tree.leaves(params)))}
    for k, (_, _, compile_s, peak) in steps.items():
        row[f"{k}_ms"] = 1e3 * min(times[k])
        row[f"{k}_median_ms"] = 1e3 * statistics.median(times[k])
        row[f"{k}_compile_s"] = compile_s
        row[f"{k}_peak_mb"] = peak / 2**20
    for label, mod in versions.items():
        row[f"ratio_{label}"] = row[f"egn_{label}_ms"] / row["adam_ms"]
        plan = mod.ntk_plan(fn, params, x, columns=CLASSES - 1)
        row[f"plan_{label}"] = str(plan)
        row[f"per_leaf_{label}"] = sum(r.kind == "per-leaf Jacobian" for r in plan.rows)
    return row


def worker(args) -> None:
    versions = _versions(args.before)
    if args.worker == "exactness":
        import jax

        jax.config.update("jax_enable_x64", True)
        print(json.dumps(_exactness(args.models[0], versions)))
    else:
        print(json.dumps(_timing(args.models[0], args.b, args.repeats, args.calls, versions)))


# ---------------------------------------------------------------------------------------------
# the driver


def _run(what: str, name: str, args) -> dict:
    env = dict(os.environ)
    # OpenBLAS's threaded Cholesky spins on systems of size >= 256 on a busy machine (see
    # inna_jax.egn, "Cost"): set before the worker's Python starts
    env["OPENBLAS_NUM_THREADS"] = "1"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", what, "--models", name]
    cmd += ["--b", str(args.b), "--repeats", str(args.repeats), "--calls", str(args.calls)]
    if args.before:
        cmd += ["--before", os.path.abspath(args.before)]
    out = subprocess.run(
        cmd, env=env, cwd="/", capture_output=True, text=True, check=False, timeout=args.timeout
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    from inna_jax.reproduce.machine import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--before", default=None, help="a source tree to compare with")
    parser.add_argument("--b", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import jax

    print(f"machine: {_machine()}; jax {jax.__version__}; b={args.b}, float32 timings")
    labels = ["before", "after"] if args.before else ["after"]
    rows = []
    for name in args.models:
        row = {"model": name, **_run("timing", name, args)}
        row["rel_error"] = _run("exactness", name, args)
        rows.append(row)
        if "error" in row:
            print(f"{name}: {row['error']}", flush=True)
            continue
        line = f"{name:<18} P={row['P']:>7} Adam {row['adam_ms']:6.2f} ms"
        for label in labels:
            line += (
                f" | {label}: EGN {row[f'egn_{label}_ms']:8.2f} ms "
                f"({row[f'ratio_{label}']:7.1f}x Adam), per-leaf {row[f'per_leaf_{label}']:>2}, "
                f"err {row['rel_error'].get(label, float('nan')):.1e}"
            )
        print(line, flush=True)
    head = "| model | P | Adam | " + " | ".join(f"EGN {lb} (× Adam)" for lb in labels)
    head += " | gain | per-leaf Jacobians | rel. error (float64) |"
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for row in rows:
        if "error" in row:
            continue
        cells = [row["model"], str(row["P"]), f"{row['adam_ms']:.2f} ms"]
        cells += [f"{row[f'egn_{lb}_ms']:.1f} ms ({row[f'ratio_{lb}']:.1f}×)" for lb in labels]
        gain = row["egn_before_ms"] / row["egn_after_ms"] if args.before else float("nan")
        cells.append(f"{gain:.1f}×" if args.before else "-")
        cells.append(" → ".join(str(row[f"per_leaf_{lb}"]) for lb in labels))
        cells.append(" / ".join(f"{row['rel_error'].get(lb, float('nan')):.0e}" for lb in labels))
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        for label in labels:
            print(f"\n{row['model']} ({label}):\n{row.get(f'plan_{label}', '')}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
