"""Two exact ways to add a dense layer applied at S positions to the Gram, and the half Gram.

For one layer with inputs ``a`` (b, S, D) and cotangents ``d`` (b, m, S, F), n = b m rows:

* ``jacobian``: the rows :math:`J_{ik} = \\sum_s a_{is}\\otimes\\delta_{iks}` (n x DF), then
  :math:`JJ^\\top`: n S D F + n^2 D F multiply-adds;
* ``position-summed``: :math:`\\sum_{t,s}(a_{it}\\cdot a_{js})(\\delta_{ikt}\\cdot\\delta_{jls})`
  as the input Gram P (bS x bS), ``R = P`` contracted with :math:`\\delta_i` over t, then with
  :math:`\\delta_j` over (s, f): b^2 S^2 D + b n S^2 F + n^2 S F (``chunk``: R built for 8
  examples i at a time, so that it stays small);
* ``half``: the jacobian rows' Gram from its lower half (``cross_gram``'s ``_HalfGram``).

The shapes are those of benchmarks/egn_zoo.py's transformer (D = 65, 129; F = 64, 128) and GRU
(D = 64, F = 192) at b = 64, m = 9, S = 16, float32. Each form is jitted and timed
interleaved with the others (process CPU time, the minimum of ``--repeats`` rounds: the load
of a shared machine only adds time); the ratios are to the ``jacobian`` form. First, a
yardstick: the float32 product ``R @ R.T`` of one n x 8192 block of rows by XLA and by NumPy's
BLAS, in wall-clock time on all cores (the rate every Jacobian-form Gram is bound by).

    python benchmarks/gram_forms.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inna_jax.gauss_newton._layerwise_jacobian import _HalfGram  # noqa: E402

B, M, S = 64, 9, 16


def _rows(a, d):
    return jnp.einsum("bsd,bksf->bkfd", a, d).reshape(B * M, -1)


def jacobian(a, d):
    r = _rows(a, d)
    return r @ r.T


def half(a, d):
    g = _HalfGram(B * M)
    g.add(_rows(a, d))
    return g.gram(a.dtype)


def position_summed(a, d, chunk=B):
    n, f = B * M, d.shape[-1]
    p = (a.reshape(B * S, -1) @ a.reshape(B * S, -1).T).reshape(B, S, B * S)  # (i, t, (j s))
    dj = d.transpose(0, 2, 3, 1).reshape(B, S * f, M)  # (j, (s f), l)
    parts = []
    for i0 in range(0, B, chunk):
        di = d[i0 : i0 + chunk].transpose(0, 2, 1, 3).reshape(-1, S, M * f)  # (i, t, (k f))
        r = jax.lax.dot_general(p[i0 : i0 + chunk], di, (((1,), (1,)), ((0,), (0,))))
        c = r.shape[0]
        r = r.reshape(c, B, S, M, f).transpose(1, 0, 3, 2, 4).reshape(B, c * M, S * f)
        out = jax.lax.dot_general(r, dj, (((2,), (1,)), ((0,), (0,))))  # (j, (i k), l)
        parts.append(out.transpose(1, 0, 2).reshape(c * M, n))
    return jnp.concatenate(parts, axis=0)


def _gemm_yardstick(repeats: int) -> None:
    import numpy as np

    n, k = B * M, 8192
    r = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    x = jnp.asarray(r)
    xla = jax.jit(lambda x: x @ x.T).lower(x).compile()
    # not interleaved: BLAS threads spin for a while after a call and would slow XLA's
    best = {"XLA (jax.jit)": np.inf, "NumPy (BLAS)": np.inf}
    for name, product in [("XLA (jax.jit)", lambda: jax.block_until_ready(xla(x))),
                          ("NumPy (BLAS)", lambda: r @ r.T)]:  # fmt: skip
        for _ in range(repeats):
            t0 = time.perf_counter()
            product()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"\nyardstick: R @ R.T, R {n} x {k} float32 (wall time, all cores)")
    for name, t in best.items():
        print(f"  {name:<26} {1e3 * t:8.1f} ms, {n * n * k / t / 1e9:6.1f} G multiply-adds/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from inna_jax.reproduce.machine import cpu_name

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()};")
    print(f"jax {jax.__version__}; b={B}, m={M}, S={S}, float32; load {os.getloadavg()[0]:.1f}")
    _gemm_yardstick(args.repeats)
    forms = {
        "jacobian": jacobian,
        "half": half,
        "position-summed": position_summed,
        "position-summed, chunk 8": lambda a, d: position_summed(a, d, 8),
    }
    for din, f in [(65, 64), (129, 64), (65, 128), (64, 192)]:
        a = jax.random.normal(jax.random.key(0), (B, S, din))
        d = jax.random.normal(jax.random.key(1), (B, M, S, f))
        compiled = {k: jax.jit(fn).lower(a, d).compile() for k, fn in forms.items()}
        ref = compiled["jacobian"](a, d)
        times: dict = {k: [] for k in forms}
        for _ in range(args.repeats):
            for k, c in compiled.items():
                t0 = time.process_time()
                jax.block_until_ready(c(a, d))
                times[k].append(time.process_time() - t0)
        n = B * M
        macs = {
            "jacobian": n * S * din * f + n * n * din * f,
            "half": n * S * din * f + 0.75 * n * n * din * f,
            "position-summed": B * B * S * S * din + B * n * S * S * f + n * n * S * f,
        }
        macs["position-summed, chunk 8"] = macs["position-summed"]
        print(f"\nD={din} F={f}")
        for k, c in compiled.items():
            err = float(jnp.max(jnp.abs(c(a, d) - ref)) / jnp.max(jnp.abs(ref)))
            t = 1e3 * min(times[k])
            ratio = t / (1e3 * min(times["jacobian"]))
            print(
                f"  {k:<26} {macs[k] / 1e9:5.2f} GMAC {t:8.1f} ms CPU ({ratio:4.2f}x), "
                f"rel. diff {err:.0e}"
            )


if __name__ == "__main__":
    main()
