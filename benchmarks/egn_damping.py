"""EGN with a fixed lambda against the Levenberg-Marquardt rules, on digits and mnist1d.

The setting of ``inna-jax egn`` (``inna_jax.reproduce.egn``): a Flax NNX MLP 32-64-32, batch 32,
Armijo line search on, step caps (``learning_rate``) 0.3 and 1.0, lambda_0 = 1, the epochs of
``DEFAULT_EPOCHS`` (digits 5, mnist1d 4), trained with ``inna_jax.train.fit``. For each data set,
cap and method it prints the final test accuracy, mean and standard deviation over seeds, and
the final lambdas:

* ``fixed``: ``egn(..., adaptive_regularization=False)``;
* ``reference``: ``lm_rule="reference"`` (factors 1.5 / 0.5, lambda clipped to [1e-12, 1e6]);
* ``relative``: the default rule, lambda kept above ``lm_floor * learning_rate * nu_k``
  (``--floors`` to try other ``lm_floor`` values).

Run by hand (about 10 minutes on a 2-core CPU with 5 seeds):

    python benchmarks/egn_damping.py --seeds 5
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import numpy as np
import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK, for threadpoolctl below)
from flax import nnx
from threadpoolctl import threadpool_limits

import inna_jax
from inna_jax.models import MLP
from inna_jax.reproduce.egn import DEFAULT_EPOCHS, load
from inna_jax.train import fit


def run(data, method: dict, learning_rate: float, seed: int) -> tuple[float, float]:
    """(final test accuracy, final lambda) of one training run."""
    model = MLP(int(np.prod(data.x_train.shape[1:])), (32, 64, 32), data.num_classes,
                rngs=nnx.Rngs(seed))  # fmt: skip
    graphdef, _ = nnx.split(model, nnx.Param)
    tx = inna_jax.egn(
        lambda p, x: nnx.merge(graphdef, p)(x),
        "cross_entropy",
        learning_rate,
        1.0,
        line_search=True,
        **method,
    )
    result = fit(
        model,
        tx,
        data,
        epochs=DEFAULT_EPOCHS[data.name],
        batch_size=32,
        loss="cross_entropy",
        seed=seed,
        extra_args=True,
        quiet=True,
    )
    return result.history[-1]["test_accuracy"], float(result.opt_state.regularizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--caps", type=float, nargs="+", default=[0.3, 1.0])
    parser.add_argument("--floors", type=float, nargs="*", default=[], help="extra lm_floor")
    args = parser.parse_args()
    methods = {
        "fixed": {},
        "reference": {"adaptive_regularization": True, "lm_rule": "reference"},
        "relative": {"adaptive_regularization": True},
    }
    for kappa in args.floors:
        methods[f"relative, lm_floor={kappa:g}"] = {
            "adaptive_regularization": True,
            "lm_floor": kappa,
        }
    print(f"machine: {platform.platform()}, cpu_count={os.cpu_count()}, jax {jax.__version__}")
    print("| data set | step cap | method | test accuracy (mean ± std) | min | final λ |")
    print("|---|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for name in args.datasets:
            data = load(name)
            for cap in args.caps:
                for label, method in methods.items():
                    res = [run(data, method, cap, s) for s in range(args.seeds)]
                    acc = np.array([r[0] for r in res])
                    lams = ", ".join(f"{r[1]:.2g}" for r in res)
                    print(
                        f"| {name} | {cap:g} | {label} | {acc.mean():.4f} ± {acc.std():.4f} "
                        f"| {acc.min():.4f} | {lams} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
