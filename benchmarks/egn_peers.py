"""inna_jax's EGN against the EGN authors' own library, python-somax 1.0.1, side by side.

somax (Korbit, Adeoye, Bemporad, Zanon; ``pip install python-somax``) is **not** a dependency
of inna_jax. Install it into a folder of its own, which this script puts on ``sys.path``:

    pip install --no-deps --target ~/.cache/inna_jax/somax python-somax==1.0.1
    python benchmarks/egn_peers.py                 # a few minutes on 2 cores

Models: MLPs ``32 -> h -> h -> C`` (tanh) with P about 1e5 and 1e6, C = 1 (half mean squared
error, ``inna_jax.egn(loss="mse")`` against ``somax.egn_mse``) and C = 10 (softmax
cross-entropy, ``loss="cross_entropy"`` against ``somax.egn_ce``), b = 64, lambda = 1,
learning rate 1, float32. Both steps are jitted ``params, state, batch -> params, state`` and
run interleaved in this one process (per round one untimed call of each, then ``--calls``
timed ones; the fastest of ``--repeats`` rounds: the load of a shared machine only adds
time). Peak memory is XLA's account of each compiled step (``memory_analysis()``:
temporaries + arguments + outputs - aliased).

Agreement, in float64:

* MSE: one step of each library from the same parameters, the relative difference of the
  updates (expected: rounding, about 1e-15).
* Cross-entropy, on a small MLP (P = 310, b = 8, C = 10) where the dense Jacobian ``J``
  (``bC x P``) is cheap: the exact Gauss-Newton direction
  ``d = -(J^T Q J / b + lambda I)^{-1} g`` with ``Q = diag(p) - p p^T`` per example, against
  inna_jax's and somax's directions, and against ``-(J^T L^T L J / b + lambda I)^{-1} g`` with
  ``Q + 1e-6 I = L L^T``: ``somax/curvature/ggn_ce.py`` factors ``Q + 1e-6 I`` and applies
  ``L`` to ``J``, so its curvature is ``J^T L^T L J``, not ``J^T Q J`` (``L^T L != L L^T``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.flatten_util

jax.config.update("jax_enable_x64", True)  # the agreement checks; timings use float32 arrays

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.linalg.cython_lapack  # noqa: E402, F401  (jaxlib's LAPACK, for threadpoolctl)
from threadpoolctl import threadpool_limits  # noqa: E402

import inna_jax  # noqa: E402
from inna_jax.reproduce.machine import cpu_name  # noqa: E402

D_IN = 32
LAMBDA = 1.0


def _import_somax(path: str):
    sys.path.insert(0, os.path.expanduser(path))
    try:
        import somax
    except ImportError:
        raise SystemExit(
            f"somax not found in {path}: pip install --no-deps --target {path} python-somax==1.0.1"
        ) from None
    return somax


def width_for(p_target: float, c: int) -> int:
    """Hidden width h with P = 32h + h + h^2 + h + hC + C closest to ``p_target``."""
    b_coef = 34 + c
    return max(1, round((-b_coef + math.sqrt(b_coef**2 - 4 * (c - p_target))) / 2))


def mlp(h: int, c: int, dtype, seed: int = 0) -> dict:
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "w1": jax.random.normal(k1, (D_IN, h), dtype) / math.sqrt(D_IN),
        "b1": jnp.zeros(h, dtype),
        "w2": jax.random.normal(k2, (h, h), dtype) / math.sqrt(h),
        "b2": jnp.zeros(h, dtype),
        "w3": jax.random.normal(k3, (h, c), dtype) / math.sqrt(h),
        "b3": jnp.zeros(c, dtype),
    }


def predict(p: dict, x: jax.Array) -> jax.Array:
    z = jnp.tanh(x @ p["w1"] + p["b1"])
    z = jnp.tanh(z @ p["w2"] + p["b2"])
    return z @ p["w3"] + p["b3"]


def batch(b: int, c: int, dtype, seed: int = 1):
    kx, ky = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (b, D_IN), dtype)
    y = jax.random.normal(ky, (b, 1), dtype) if c == 1 else jax.random.randint(ky, (b,), 0, c)
    return x, y


def steps(somax, c: int):
    """(ours, theirs): each ``(init(params), step(params, state, x, y) -> (params, state))``."""
    loss = "mse" if c == 1 else "cross_entropy"
    ours_fn = (lambda p, x: predict(p, x)[:, 0]) if c == 1 else predict
    tx = inna_jax.egn(ours_fn, loss, 1.0, LAMBDA)

    def ours(params, state, x, y):
        updates, state = tx.update(None, state, params, inputs=x, targets=y[:, 0] if c == 1 else y)
        return optax.apply_updates(params, updates), state

    make = somax.egn_mse if c == 1 else somax.egn_ce
    method = make(predict_fn=predict, lam0=LAMBDA, learning_rate=1.0)

    def theirs(params, state, x, y):
        params, state, _ = method.step(params, {"x": x, "y": y}, state, jax.random.key(0))
        return params, state

    return (tx.init, ours), (method.init, theirs)


def _peak_mb(compiled) -> float:
    mem = compiled.memory_analysis()
    total = (
        mem.temp_size_in_bytes
        + mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
    )
    return total / 2**20


def time_pair(somax, p_target: float, c: int, b: int, repeats: int, calls: int) -> dict:
    params = mlp(width_for(p_target, c), c, jnp.float32)
    x, y = batch(b, c, jnp.float32)
    compiled = {}
    for label, (init, step) in zip(("inna_jax", "somax"), steps(somax, c), strict=True):
        state = init(params)
        fn = jax.jit(step).lower(params, state, x, y).compile()
        jax.block_until_ready(fn(params, state, x, y))
        compiled[label] = (fn, state, _peak_mb(fn))
    times: dict = {k: [] for k in compiled}
    for _ in range(repeats):
        for k, (fn, state, _) in compiled.items():
            jax.block_until_ready(fn(params, state, x, y))
            t0 = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(fn(params, state, x, y))
            times[k].append((time.perf_counter() - t0) / calls)
    row = {"P": sum(a.size for a in jax.tree.leaves(params)), "C": c}
    for k in compiled:
        row[f"{k}_ms"] = 1e3 * min(times[k])
        row[f"{k}_mb"] = compiled[k][2]
    return row


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(a).reshape(-1) for a in jax.tree.leaves(tree)])


def mse_agreement(somax, p_target: float) -> float:
    """Relative difference of one step of each library, float64, MSE."""
    params = mlp(width_for(p_target, 1), 1, jnp.float64)
    x, y = batch(64, 1, jnp.float64)
    new = []
    for init, step in steps(somax, 1):
        out, _ = jax.jit(step)(params, init(params), x, y)
        new.append(_flat(out) - _flat(params))
    return _rel(new[1], new[0])


def ce_discrepancy(somax) -> dict:
    """Directions of a small MLP, float64: exact GN, inna_jax, somax, and the L^T L variant."""
    c, b = 10, 8
    params = mlp(6, c, jnp.float64)  # P = 32*6 + 6 + 36 + 6 + 60 + 10 = 310
    x, y = batch(b, c, jnp.float64)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = np.asarray(jax.jacrev(lambda f: predict(unravel(f), x).reshape(-1))(flat))  # (bC, P)
    logits = np.asarray(predict(params, x))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = (p - np.eye(c)[np.asarray(y)]).reshape(-1)
    g = jac.T @ r / b
    q = np.zeros((b * c, b * c))
    ltl = np.zeros((b * c, b * c))
    for i in range(b):
        qi = np.diag(p[i]) - np.outer(p[i], p[i])
        li = np.linalg.cholesky(qi + 1e-6 * np.eye(c))
        q[i * c : (i + 1) * c, i * c : (i + 1) * c] = qi
        ltl[i * c : (i + 1) * c, i * c : (i + 1) * c] = li.T @ li
    eye = np.eye(flat.size)
    exact = -np.linalg.solve(jac.T @ q @ jac / b + LAMBDA * eye, g)
    variant = -np.linalg.solve(jac.T @ ltl @ jac / b + LAMBDA * eye, g)
    got = {}
    for label, (init, step) in zip(("inna_jax", "somax"), steps(somax, c), strict=True):
        out, _ = jax.jit(step)(params, init(params), x, y)
        got[label] = _flat(out) - _flat(params)
    return {
        "P": int(flat.size),
        "inna_jax_vs_exact": _rel(got["inna_jax"], exact),
        "somax_vs_exact": _rel(got["somax"], exact),
        "somax_vs_LtL": _rel(got["somax"], variant),
        "cos_somax_exact": float(
            got["somax"] @ exact / np.linalg.norm(got["somax"]) / np.linalg.norm(exact)
        ),
    }


def _machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--somax-path", default="~/.cache/inna_jax/somax")
    parser.add_argument("--p", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--b", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args()
    somax = _import_somax(args.somax_path)
    print(f"machine: {_machine()}; jax {jax.__version__}; somax 1.0.1; b={args.b}, float32")
    print("\nagreement (float64)")
    for p in args.p[:1]:
        print(f"  MSE, P~{p:.0e}: relative difference of the steps {mse_agreement(somax, p):.1e}")
    ce = ce_discrepancy(somax)
    print(
        f"  cross-entropy, P={ce['P']}, b=8, C=10, against the dense exact GN direction: "
        f"inna_jax {ce['inna_jax_vs_exact']:.1e}, somax {ce['somax_vs_exact']:.1e} "
        f"(cosine {ce['cos_somax_exact']:.4f}); somax against the J^T L^T L J direction "
        f"{ce['somax_vs_LtL']:.1e}"
    )
    print(
        "\n| model | P | C | inna_jax ms | somax ms | speed-up | inna_jax MB | somax MB | memory |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with threadpool_limits(1, "blas"):
        for c in (1, 10):
            for p in args.p:
                row = time_pair(somax, p, c, args.b, args.repeats, args.calls)
                print(
                    f"| MLP 32-h-h-{c} | {row['P']} | {c} | {row['inna_jax_ms']:.2f} | "
                    f"{row['somax_ms']:.1f} | {row['somax_ms'] / row['inna_jax_ms']:.1f}× | "
                    f"{row['inna_jax_mb']:.1f} | {row['somax_mb']:.1f} | "
                    f"{row['somax_mb'] / row['inna_jax_mb']:.1f}× |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
