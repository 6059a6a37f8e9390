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

For each model, in its own worker process (``--worker``), once with the package of the
current tree and once with another tree on ``PYTHONPATH`` (``--before``, e.g. a
``git worktree`` of an older commit):

* the per-layer plan (``inna_jax.ntk_plan`` with ``columns=C-1``, as EGN uses it);
* exactness: ``inna_jax.ntk_gram`` against the textbook ``vmap(jacrev)`` Gram over every
  parameter, in float64, at b = 8 (relative max error);
* EGN / Adam: one jitted ``inna_jax.egn`` step (``implementation="auto"``, lambda = 1, no line
  search) and one jitted ``optax.adam`` step, float32, b = 64, run interleaved in the worker
  (per round one untimed call of each, then ``--calls`` timed calls; the fastest of
  ``--repeats`` rounds, as the load of a shared machine only ever adds time; the medians are
  in ``--json``). The worker's ratio is what is compared across trees: Adam is the yardstick
  measured beside EGN.

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
# the worker: one model, one tree


def _exactness(name: str) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import inna_jax

    fn, params, x, _ = build(name, jnp.float64, 8)
    leaves, tree = jax.tree.flatten(params)

    def one(xi):
        xi = jax.tree.map(lambda a: a[None], xi)
        jac = jax.jacrev(lambda ls: fn(jax.tree.unflatten(tree, ls), xi)[0])(leaves)
        return jnp.concatenate([j.reshape(j.shape[0], -1) for j in jac], axis=1)

    jac = jax.jit(jax.vmap(one))(x)
    jac = jac.reshape(-1, jac.shape[-1])
    ref = np.asarray(jac @ jac.T)
    got = np.asarray(jax.jit(lambda p, xx: inna_jax.ntk_gram(fn, p, xx))(params, x))
    return float(np.max(np.abs(got.reshape(ref.shape) - ref)) / np.max(np.abs(ref)))


def _timing(name: str, b: int, repeats: int, calls: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    import inna_jax

    fn, params, x, y = build(name, jnp.float32, b)
    adam = optax.adam(1e-3)
    egn = inna_jax.egn(fn, "cross_entropy", 1.0, 1.0)

    def adam_step(params, state, x, y):
        loss = lambda p: jnp.mean(  # noqa: E731
            optax.softmax_cross_entropy_with_integer_labels(fn(p, x), y)
        )
        updates, state = adam.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    def egn_step(params, state, x, y):
        updates, state = egn.update(None, state, params, inputs=x, targets=y)
        return optax.apply_updates(params, updates), state

    steps = {}
    for key, step, init in (("adam", adam_step, adam.init), ("egn", egn_step, egn.init)):
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
        steps[key] = (compiled, state, compile_s, peak)
    times: dict = {k: [] for k in steps}
    for _ in range(repeats):
        for k, (compiled, state, _, _) in steps.items():
            jax.block_until_ready(compiled(params, state, x, y))
            t0 = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(compiled(params, state, x, y))
            times[k].append((time.perf_counter() - t0) / calls)
    row = {"P": int(sum(a.size for a in jax.tree.leaves(params)))}
    for k, (_, _, compile_s, peak) in steps.items():
        row[f"{k}_ms"] = 1e3 * min(times[k])
        row[f"{k}_median_ms"] = 1e3 * statistics.median(times[k])
        row[f"{k}_compile_s"] = compile_s
        row[f"{k}_peak_mb"] = peak / 2**20
    row["ratio"] = row["egn_ms"] / row["adam_ms"]
    plan = inna_jax.ntk_plan(fn, params, x, columns=CLASSES - 1)
    row["plan"] = str(plan)
    row["per_leaf"] = sum(r.kind == "per-leaf Jacobian" for r in plan.rows)
    return row


def worker(args) -> None:
    if args.worker == "exactness":
        import jax

        jax.config.update("jax_enable_x64", True)
        print(json.dumps({"rel_error": _exactness(args.models[0])}))
    else:
        print(json.dumps(_timing(args.models[0], args.b, args.repeats, args.calls)))


# ---------------------------------------------------------------------------------------------
# the driver


def _run(tree: str | None, what: str, name: str, args) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", what, "--models", name]
    cmd += ["--b", str(args.b), "--repeats", str(args.repeats), "--calls", str(args.calls)]
    # the worker runs from a neutral folder: the tree on PYTHONPATH is the package imported
    out = subprocess.run(
        cmd, env=env, cwd="/", capture_output=True, text=True, check=False, timeout=args.timeout
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--before", default=None, help="a source tree to compare with")
    parser.add_argument("--b", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"after": here} if args.before is None else {"before": args.before, "after": here}
    import jax

    print(f"machine: {_machine()}; jax {jax.__version__}; b={args.b}, float32 timings")
    rows = []
    for name in args.models:
        row: dict = {"model": name}
        for label, tree in trees.items():
            row[label] = {
                **_run(tree, "timing", name, args),
                **_run(tree, "exactness", name, args),
            }
        rows.append(row)
        after = row["after"]
        line = f"{name:<18} P={after.get('P', '?'):>7}"
        for label in trees:
            r = row[label]
            if "error" in r:
                line += f" | {label}: {r['error'][:60]}"
                continue
            line += (
                f" | {label}: EGN {r['egn_ms']:8.2f} ms, Adam {r['adam_ms']:6.2f} ms, "
                f"EGN/Adam {r['ratio']:7.1f}x, per-leaf {r['per_leaf']:>2}, "
                f"err {r['rel_error']:.1e}"
            )
        if "before" in row and "ratio" in row["before"] and "ratio" in after:
            line += f" | {row['before']['ratio'] / after['ratio']:.1f}x cheaper"
        print(line, flush=True)
    print(
        "\n| model | P | EGN/Adam before | EGN/Adam after | gain | per-leaf before/after "
        "| rel. error (float64) after |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        a, b = row["after"], row.get("before", {})
        before = f"{b['ratio']:.1f}×" if "ratio" in b else "-"
        gain = f"{b['ratio'] / a['ratio']:.1f}×" if "ratio" in b and "ratio" in a else "-"
        after = f"{a['ratio']:.1f}×" if "ratio" in a else "-"
        print(
            f"| {row['model']} | {a.get('P', '?')} | {before} | {after} "
            f"| {gain} | {b.get('per_leaf', '-')}/{a.get('per_leaf', '-')} "
            f"| {a.get('rel_error', float('nan')):.0e} |"
        )
    for row in rows:
        for label in trees:
            print(f"\n{row['model']} ({label}):\n{row[label].get('plan', '')}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
