"""A training run for tests/test_checkpoint.py, run as a subprocess (it may be SIGKILLed).

Usage: python tests/_train_worker.py CHECKPOINT_DIR OUT_NPZ SLEEP_S

It sets XLA_FLAGS and float64 like tests/conftest.py before importing jax, trains a small MLP
on digits with INNA and orbax checkpoints (resuming from CHECKPOINT_DIR if it holds one),
and writes the final parameters and history to OUT_NPZ.
"""

import os
import sys

if __name__ == "__main__":  # as a subprocess; imported by the test, it changes nothing
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import inna_jax  # noqa: E402
from inna_jax.data import load_digits  # noqa: E402
from inna_jax.models import MLP  # noqa: E402
from inna_jax.train import fit  # noqa: E402

EPOCHS, BATCH, SEED, CHECKPOINT_EVERY = 4, 16, 3, 5


def make_run(sleep_s: float):
    """The model, optimizer, data and loss of the run (shared with the in-test reference)."""
    d = load_digits()
    data = d._replace(
        x_train=d.x_train[:192], y_train=d.y_train[:192], x_test=d.x_test[:64], y_test=d.y_test[:64]
    )
    model = MLP(64, (16,), 10, rngs=nnx.Rngs(0))
    tx = inna_jax.inna(inna_jax.power_decay(0.1), alpha=0.5, beta=0.1, initial_speed=1.0)

    def loss(outputs, targets):
        # slows each step down (wall clock only) so that the test can kill the run mid-way
        jax.debug.callback(lambda: time.sleep(sleep_s))
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()

    return model, tx, data, loss


def flat_params(model) -> dict:
    """The parameters as a flat dict of NumPy arrays."""
    state = nnx.state(model, nnx.Param)
    return {"/".join(map(str, path)): np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def main(checkpoint_dir: str, out: str, sleep_s: float) -> None:
    model, tx, data, loss = make_run(sleep_s)
    result = fit(
        model,
        tx,
        data,
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
        loss=loss,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY,
        quiet=True,
    )
    arrays = flat_params(model)
    arrays["__history__"] = np.array(json.dumps(result.history))
    psi = jax.tree.leaves(result.opt_state)
    arrays["__opt_leaves__"] = np.concatenate([np.ravel(jnp.asarray(x)) for x in psi])
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
