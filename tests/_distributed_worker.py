"""One process of the two-process data-parallel test (tests/test_distributed.py).

Usage: python tests/_distributed_worker.py PROCESS_ID PORT OUT_NPZ CHECKPOINT_DIR

Each process has 2 CPU devices; jax.distributed joins them on 127.0.0.1 with gloo CPU
collectives into one 4-device mesh, and the same ``fit`` call trains on it, writing orbax
checkpoints to one shared folder. Then a group of three runs (``fit_many``) trains on a
``("runs", "data")`` mesh of shape (2, 2) spanning both processes.
"""

import os
import sys

if __name__ == "__main__":  # as a subprocess; imported by the test, it changes nothing
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from inna_jax.train import data_mesh, fit, fit_many, initialize_distributed, run_mesh  # noqa: E402


def make_run():
    """Model, optimizer and data shared with the one-process reference in the test."""
    from flax import nnx

    import inna_jax
    from inna_jax.data import load_digits
    from inna_jax.models import MLP

    d = load_digits()
    data = d._replace(
        x_train=d.x_train[:128], y_train=d.y_train[:128], x_test=d.x_test[:40], y_test=d.y_test[:40]
    )
    model = MLP(64, (16,), 10, rngs=nnx.Rngs(0))
    tx = inna_jax.inna(inna_jax.power_decay(0.1), alpha=0.5, beta=0.1)
    return model, tx, data


def make_group():
    """Three models and OptimizerSpecs (one family) for the group run."""
    from flax import nnx

    from inna_jax.models import MLP
    from inna_jax.reproduce.registry import make_optimizer

    models = [MLP(64, (16,), 10, rngs=nnx.Rngs(s)) for s in range(3)]
    specs = [make_optimizer("inna", g, decay_power=0.5) for g in (0.05, 0.1, 0.3)]
    return models, specs


def run_group(mesh):
    """The group run: returns each run's flat parameters and history."""
    import numpy as np
    from flax import nnx

    models, specs = make_group()
    data = make_run()[2]
    results = fit_many(
        models, specs, data, epochs=2, batch_size=16, seeds=[0, 1, 2], mesh=mesh, quiet=True
    )
    out = {}
    for r, (model, result) in enumerate(zip(models, results, strict=True)):
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            out[f"run{r}/" + "/".join(map(str, path))] = np.asarray(v[...])
        out[f"run{r}/train_loss"] = np.asarray([h["train_loss"] for h in result.history])
    return out


def main(process_id: int, port: int, out: str, checkpoint_dir: str) -> None:
    import json

    import numpy as np
    from flax import nnx

    initialize_distributed(f"127.0.0.1:{port}", 2, process_id, cpu_collectives="gloo")
    assert jax.process_count() == 2 and len(jax.devices()) == 4, jax.devices()
    assert len(jax.local_devices()) == 2
    model, tx, data = make_run()
    result = fit(
        model,
        tx,
        data,
        epochs=2,
        batch_size=16,
        seed=7,
        mesh=data_mesh(),
        quiet=True,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=5,
    )
    flat = {
        "/".join(map(str, path)): np.asarray(v[...])
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    flat["__history__"] = np.array(json.dumps(result.history))
    flat |= run_group(run_mesh(2, 2))
    np.savez(out, **flat)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
