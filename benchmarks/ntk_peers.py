"""inna_jax's empirical NTK against neural-tangents 0.6.5: time, memory and agreement.

neural-tangents 0.6.5 (its last release) imports only on jax <= 0.4.25 with numpy < 2, and its
``__init__`` imports tensorflow and tf2jax, so it cannot share inna_jax's venv. This script
creates a venv of its own for it (``--venv``, by default ``~/.cache/inna_jax/ntk-peers-venv``)
with::

    neural-tangents==0.6.5 jax==0.4.25 jaxlib==0.4.25 "numpy<2" tensorflow-cpu==2.17.*
    tf2jax==0.3.6

and runs the same models, written in plain ``jax.numpy``/``lax`` with the same NumPy-seeded
parameters, in worker subprocesses of both venvs, alternating (inna_jax, neural-tangents,
inna_jax, ... per model and round). Every worker also times two yardsticks, a 1024 x 1024
float32 matmul and the gradient of a 1e6-parameter MLP, so that the ratio can be read with
the difference between the two jax versions in view (the table prints both yardsticks' ratio).

Models (b = 64 unless said, float32 timings; ``--models``):

* ``mlp512-10``, ``mlp512-1``: MLP 32-512-512-C (ReLU);
* ``mlp1e6-10``, ``mlp1e6-1``: MLP 32-983-983-C, P about 1e6;
* ``cnn-10``, ``cnn-1``: 8x8x3 -> conv 3x3 16 -> conv 3x3 stride 2 32 -> dense C, b = 32.

Kernels (``--kinds``): ``gram`` K(x, x) with all outputs; ``cross`` K(x1, x2), a second batch
of the same size; ``trace`` K(x, x) traced over the outputs. inna_jax's implementations
``auto``, ``structured``, ``jacobian``, ``matrix_free`` against neural-tangents'
``STRUCTURED_DERIVATIVES``, ``JACOBIAN_CONTRACTION`` and ``NTK_VECTOR_PRODUCTS``
(``trace_axes=()`` or ``(-1,)``, ``vmap_axes=0``), and the vector products with
``vmap_axes=None`` (``vector_products_batch``: no independence of the examples assumed, as in
inna_jax's ``matrix_free``). Time: median of ``--calls`` calls after one
untimed call, each worker being one process per model. Memory: XLA's ``memory_analysis`` of the
compiled kernel (arguments + outputs + temporaries) and the worker's peak RSS over its start.
Agreement: the same kernels in float64 (``--agreement``), max |K - K_NT| / max |K_NT| against
neural-tangents' structured derivatives (neural-tangents' trace is a mean over outputs: it is
multiplied by C before comparing).

Run by hand::

    python benchmarks/ntk_peers.py                 # creates the venv once, then the table
    python benchmarks/ntk_peers.py --models mlp512-10 cnn-1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

NT_REQUIREMENTS = [
    "neural-tangents==0.6.5",
    "jax==0.4.25",
    "jaxlib==0.4.25",
    "numpy<2",
    "tensorflow-cpu==2.17.*",
    "tf2jax==0.3.6",
]
DEFAULT_VENV = pathlib.Path.home() / ".cache" / "inna_jax" / "ntk-peers-venv"
MODELS = ("mlp512-10", "mlp512-1", "mlp1e6-10", "mlp1e6-1", "cnn-10", "cnn-1")
OURS = ("auto", "structured", "jacobian", "matrix_free")
THEIRS = ("structured", "jacobian", "vector_products", "vector_products_batch")
COUNTERPART = {"structured": "structured", "jacobian": "jacobian", "matrix_free": "vector_products"}
KINDS = ("gram", "cross", "trace")


# --------------------------------------------------------------------------------------------
# the models, the same code under both jax versions


def model(name, dtype):
    """(predict_fn(params, x), params, x1, x2) with NumPy-seeded parameters and inputs."""
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    kind, c = name.rsplit("-", 1)
    c = int(c)
    rng = np.random.default_rng(0)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.standard_normal(shape) * scale, dtype)

    if kind.startswith("mlp"):
        h = 512 if kind == "mlp512" else 983
        sizes = [32, h, h, c]
        params = [
            (normal(a, b, scale=1 / np.sqrt(a)), normal(b, scale=0.1))
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]

        def predict(p, x):
            for w, bias in p[:-1]:
                x = jnp.maximum(x @ w + bias, 0)
            w, bias = p[-1]
            out = x @ w + bias
            return out[:, 0] if c == 1 else out

        batch = 64
        shape = (32,)
    else:
        params = [
            (normal(3, 3, 3, 16, scale=1 / np.sqrt(27)), normal(16, scale=0.1)),
            (normal(3, 3, 16, 32, scale=1 / np.sqrt(144)), normal(32, scale=0.1)),
            (normal(512, c, scale=1 / np.sqrt(512)), normal(c, scale=0.1)),
        ]

        def predict(p, x):
            dn = ("NHWC", "HWIO", "NHWC")
            (k1, b1), (k2, b2), (w, bias) = p
            y = lax.conv_general_dilated(x, k1, (1, 1), "SAME", dimension_numbers=dn)
            y = jnp.maximum(y + b1, 0)
            y = lax.conv_general_dilated(y, k2, (2, 2), "SAME", dimension_numbers=dn)
            y = jnp.maximum(y + b2, 0).reshape(x.shape[0], -1)
            out = y @ w + bias
            return out[:, 0] if c == 1 else out

        batch = 32
        shape = (8, 8, 3)
    x1 = normal(batch, *shape)
    x2 = normal(batch, *shape)
    return predict, params, x1, x2, c


def kernel_fn(side, impl, kind, predict, c):
    """A jittable (params, x1, x2) -> kernel in inna_jax's layout, rows (i, c)."""
    if side == "ours":
        import inna_jax

        def fn(p, x1, x2):
            return inna_jax.ntk_gram(
                predict,
                p,
                x1,
                None if kind == "gram" else x2,
                implementation=impl,
                reduction="trace" if kind == "trace" else "full",
            )

        return fn
    import neural_tangents as nt

    which = {
        "structured": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
        "jacobian": nt.NtkImplementation.JACOBIAN_CONTRACTION,
        "vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
        "vector_products_batch": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    }[impl]
    traced = kind == "trace"
    # vmap_axes=0 lets neural-tangents take each VJP on one example; vmap_axes=None makes no
    # such assumption, like inna_jax's "matrix_free" (a VJP through the whole batch)
    ntk = nt.empirical_ntk_fn(
        predict,
        trace_axes=(-1,) if traced and c > 1 else (),
        vmap_axes=None if impl == "vector_products_batch" else 0,
        implementation=which,
    )

    def fn(p, x1, x2):
        k = ntk(x1, None if kind == "gram" else x2, p)
        if traced:
            return k * c if c > 1 else k  # neural-tangents' trace is a mean over outputs
        if c == 1:
            return k
        b1, b2 = k.shape[:2]
        return k.transpose(0, 2, 1, 3).reshape(b1 * c, b2 * c)

    return fn


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args):
    """Runs in either venv: times, memory and (float64) kernels of one model, as JSON."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    out = {"jax": jax.__version__, "side": args.side, "model": args.model, "rows": []}
    # yardsticks
    a = jnp.asarray(np.random.default_rng(1).standard_normal((1024, 1024)), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    wide, pg, xg, _, _ = model("mlp1e6-10", jnp.float32)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(wide(p, x) ** 2)))
    out["yardsticks"] = {
        "matmul_ms": _median(lambda: mm(a), 15),
        "gradient_ms": _median(lambda: grad(pg, xg), 15),
    }
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    predict, params, x1, x2, c = model(args.model, dtype)
    impls = OURS if args.side == "ours" else THEIRS
    kernels = {}
    for kind in args.kinds:
        for impl in impls:
            if impl in args.skip:
                continue
            fn = jax.jit(kernel_fn(args.side, impl, kind, predict, c))
            row = {"kind": kind, "impl": impl}
            try:
                compiled = fn.lower(params, x1, x2).compile()
                mem = compiled.memory_analysis()
                if mem is not None:
                    row["xla_mb"] = (
                        mem.argument_size_in_bytes
                        + mem.output_size_in_bytes
                        + mem.temp_size_in_bytes
                    ) / 2**20
                before = _rss_mb()
                k = compiled(params, x1, x2)
                k.block_until_ready()
                row["ms"] = _median(lambda f=compiled: f(params, x1, x2), args.calls)
                row["rss_peak_mb"] = _rss_mb()
                row["rss_growth_mb"] = _rss_mb() - before
                if args.dtype == "float64":
                    kernels[f"{kind}/{impl}"] = np.asarray(k)
            except Exception as e:  # noqa: BLE001 - an out-of-memory is a result
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            out["rows"].append(row)
            del fn
    if kernels:
        np.savez(args.kernels, **kernels)
    print(json.dumps(out))


def _median(call, calls):
    import jax

    jax.block_until_ready(call())
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(call())
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------
# the driver


def ensure_venv(venv: pathlib.Path) -> pathlib.Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import neural_tangents, jax; assert jax.__version__ == '0.4.25'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} for neural-tangents 0.6.5 (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *NT_REQUIREMENTS], check=True)
    subprocess.run(probe, check=True)
    return python


def run_worker(python, side, name, dtype, kinds, calls, kernels_path, skip):
    cmd = [
        str(python),
        __file__,
        "--worker",
        side,
        "--model",
        name,
        "--dtype",
        dtype,
        "--calls",
        str(calls),
        "--kernels",
        str(kernels_path),
        "--kinds",
        *kinds,
    ]
    if skip:
        cmd += ["--skip", *skip]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    if side == "theirs":
        env.pop("PYTHONPATH")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{side} {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def machine() -> str:
    from inna_jax.reproduce.machine import cpu_name

    return (
        f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}, load {os.getloadavg()[0]:.1f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=pathlib.Path, default=DEFAULT_VENV)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument(
        "--ours", nargs="+", default=list(OURS), choices=OURS, help="inna_jax's implementations"
    )
    parser.add_argument(
        "--theirs",
        nargs="+",
        default=list(THEIRS),
        choices=THEIRS,
        help="neural-tangents' implementations (structured is the agreement's reference)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("ntk_peers.json"))
    # worker mode
    parser.add_argument("--worker", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--kernels", help=argparse.SUPPRESS)
    parser.add_argument("--skip", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.side = args.worker
        worker(args)
        return
    if "structured" not in args.theirs:
        parser.error("--theirs must include structured: the agreement's reference")
    theirs = ensure_venv(args.venv)
    ours = pathlib.Path(sys.executable)
    results = {"machine": machine(), "rows": []}
    dropped = {
        "ours": [i for i in OURS if i not in args.ours],
        "theirs": [i for i in THEIRS if i not in args.theirs],
    }
    tmp = pathlib.Path(os.environ.get("TMPDIR", "/tmp"))
    for name in args.models:
        runs = {"ours": [], "theirs": []}
        for r in range(args.rounds):
            order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
            for side in order:
                python = ours if side == "ours" else theirs
                res = run_worker(
                    python, side, name, "float32", args.kinds, args.calls, "", dropped[side]
                )
                runs[side].append(res)
                print(f"{name} {side} round {r}: done", file=sys.stderr, flush=True)
        agree = {}
        if args.agreement:
            paths = {s: tmp / f"ntk_peers_{s}_{name}.npz" for s in ("ours", "theirs")}
            skip = (
                ["matrix_free", "vector_products", "vector_products_batch"]
                if name.startswith("mlp1e6")
                else []
            )
            for side in ("ours", "theirs"):
                python = ours if side == "ours" else theirs
                drop = sorted(set(skip) | set(dropped[side]))
                run_worker(python, side, name, "float64", args.kinds, 1, paths[side], drop)
            import numpy as np

            a, b = np.load(paths["ours"]), np.load(paths["theirs"])
            for kind in args.kinds:
                ref = b[f"{kind}/structured"]
                scale = float(np.max(np.abs(ref)))
                for side, found in (("ours", a), ("theirs", b)):
                    for key in found.keys():
                        if key.startswith(kind + "/"):
                            err = float(np.max(np.abs(found[key] - ref))) / scale
                            agree[f"{side}/{key}"] = err
        results["rows"].append({"model": name, "runs": runs, "agreement": agree})
    args.out.write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results):
    print(f"machine: {results['machine']}")
    for row in results["rows"]:
        runs = row["runs"]
        jax_ours, jax_theirs = runs["ours"][0]["jax"], runs["theirs"][0]["jax"]
        yard = {
            s: {
                k: statistics.median(r["yardsticks"][k] for r in runs[s])
                for k in ("matmul_ms", "gradient_ms")
            }
            for s in runs
        }
        print(
            f"\n{row['model']}: yardsticks (jax {jax_ours} / jax {jax_theirs}): matmul "
            f"{yard['ours']['matmul_ms']:.2f} / {yard['theirs']['matmul_ms']:.2f} ms, gradient "
            f"{yard['ours']['gradient_ms']:.2f} / {yard['theirs']['gradient_ms']:.2f} ms"
        )
        print(f"{'kind':6} {'side':7} {'impl':16} {'ms':>9} {'XLA MB':>9} {'RSS MB':>8}  rel err")
        for side in ("ours", "theirs"):
            cells = {}
            for r in runs[side]:
                for cell in r["rows"]:
                    cells.setdefault((cell["kind"], cell["impl"]), []).append(cell)
            for (kind, impl), cs in sorted(cells.items()):
                if any("error" in c for c in cs):
                    print(f"{kind:6} {side:7} {impl:16} {cs[0].get('error', '')[:60]}")
                    continue
                ms = statistics.median(c["ms"] for c in cs)
                mb = cs[0].get("xla_mb") or float("nan")  # jax 0.4.25 reports 0
                rss = max(c["rss_peak_mb"] for c in cs)
                err = row["agreement"].get(f"{side}/{kind}/{impl}")
                err_s = "-" if err is None else f"{err:.1e}"
                print(f"{kind:6} {side:7} {impl:16} {ms:9.2f} {mb:9.1f} {rss:8.0f}  {err_s}")


if __name__ == "__main__":
    main()
