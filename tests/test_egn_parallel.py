"""EGN on a device mesh: 1, 2, 4 and 8 CPU devices give the parameters of one device."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import inna_jax
from inna_jax.data import load_digits
from inna_jax.models import MLP
from inna_jax.train import data_mesh, fit


def _egn(model, **kwargs):
    graphdef, _ = nnx.split(model, nnx.Param)
    return inna_jax.egn(lambda p, x: nnx.merge(graphdef, p)(x), "cross_entropy", 1.0, 1.0, **kwargs)


def _run(mesh):
    d = load_digits()
    data = d._replace(
        x_train=d.x_train[:128], y_train=d.y_train[:128], x_test=d.x_test[:32], y_test=d.y_test[:32]
    )
    model = MLP(64, (16,), 10, rngs=nnx.Rngs(3))
    tx = _egn(model, line_search=True, adaptive_regularization=True)
    # 128 examples, batches of 32: 4 steps per epoch, 20 steps
    result = fit(model, tx, data, epochs=5, batch_size=32, seed=2, mesh=mesh, quiet=True)
    assert result.steps == 20 and not result.diverged
    return nnx.state(model, nnx.Param), result.opt_state


def test_mesh_sizes_give_the_parameters_of_one_device():
    assert len(jax.devices()) == 8  # tests/conftest.py
    ref, ref_state = _run(None)
    start = nnx.state(MLP(64, (16,), 10, rngs=nnx.Rngs(3)), nnx.Param)
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(start), strict=True)
    )
    assert moved > 1e-2
    for n in (1, 2, 4, 8):
        params, state = _run(data_mesh(n))
        # float32; measured gaps 2e-7 to 4e-7 (the order of the sums over shards)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            float(state.regularizer), float(ref_state.regularizer), rtol=1e-4
        )


def test_what_the_compiled_step_communicates():
    """Batch-sharded layer inputs and cotangents, the Gram rows, the direction's sums."""
    mesh = data_mesh(4)
    model = MLP(64, (16,), 10, rngs=nnx.Rngs(3))
    _, params = nnx.split(model, nnx.Param)
    tx = _egn(model)

    def step(params, state, x, y):
        updates, state = tx.update(None, state, params, inputs=x, targets=y)
        return optax.apply_updates(params, updates), state

    rep = NamedSharding(mesh, PartitionSpec())
    bat = NamedSharding(mesh, PartitionSpec("data"))
    x, y = jnp.ones((32, 64), jnp.float32), jnp.zeros(32, jnp.int32)
    hlo = (
        jax.jit(step, in_shardings=(rep, rep, bat, bat), out_shardings=(rep, rep))
        .lower(params, tx.init(params), x, y)
        .compile()
        .as_text()
    )
    ops = re.findall(r"= (.+?) (all-gather|all-reduce|reduce-scatter|all-to-all)\(", hlo)
    kinds = {kind for _, kind in ops}
    assert kinds <= {"all-gather", "all-reduce"}, kinds  # no all-to-all transposes
    n = 32 * 9  # b (C - 1)
    gathered = [shape for shape, kind in ops if kind == "all-gather"]
    assert any(shape.startswith(f"f32[{n},{n}]") for shape in gathered)  # the Gram rows
    reduced = " ".join(shape for shape, kind in ops if kind == "all-reduce")
    assert "f32[65,16]" in reduced and "f32[17,10]" in reduced  # dW (+ bias row) per layer
