"""Data parallelism on a device mesh: 1, 2, 4 and 8 devices equal one device, to 1e-5."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh

import inna_jax
from inna_jax.data import load_digits
from inna_jax.models import MLP
from inna_jax.train import data_mesh, fit, initialize_distributed


def _run(mesh):
    d = load_digits()
    data = d._replace(
        x_train=d.x_train[:128], y_train=d.y_train[:128], x_test=d.x_test[:40], y_test=d.y_test[:40]
    )
    model = MLP(64, (16,), 10, rngs=nnx.Rngs(3))
    tx = inna_jax.inna(inna_jax.power_decay(0.1), alpha=0.5, beta=0.1)
    result = fit(model, tx, data, epochs=2, batch_size=16, seed=2, mesh=mesh, quiet=True)
    return nnx.state(model, nnx.Param), result


def test_mesh_sizes_match_one_device():
    assert len(jax.devices()) == 8  # tests/conftest.py
    ref_params, ref = _run(None)
    start = nnx.state(MLP(64, (16,), 10, rngs=nnx.Rngs(3)), nnx.Param)
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(start), strict=True)
    )
    assert moved > 1e-3
    for n in (1, 2, 4, 8):
        params, result = _run(data_mesh(n))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
            assert len(a.sharding.device_set) == n  # replicated over the mesh it ran on
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
        for row, ref_row in zip(result.history, ref.history, strict=True):
            assert row["step"] == ref_row["step"]
            np.testing.assert_allclose(row["train_loss"], ref_row["train_loss"], rtol=1e-5)
            np.testing.assert_allclose(row["test_loss"], ref_row["test_loss"], rtol=1e-5)


def test_bad_meshes_raise():
    d = load_digits()
    model = MLP(64, (), 10, rngs=nnx.Rngs(0))
    tx = inna_jax.inna(0.1)
    with pytest.raises(ValueError, match="multiple of the mesh's 'data' axis size 8"):
        fit(model, tx, d, epochs=1, batch_size=12, mesh=data_mesh(8), quiet=True)
    other = Mesh(np.asarray(jax.devices()[:2]), ("batch",))
    with pytest.raises(ValueError, match="axis named 'data'"):
        fit(model, tx, d, epochs=1, batch_size=16, mesh=other, quiet=True)
    for n in (0, 9):
        with pytest.raises(ValueError, match="num_devices must be in"):
            data_mesh(n)


def test_initialize_distributed_arguments(monkeypatch):
    for var in (
        "SLURM_JOB_ID",
        "SLURM_NTASKS",
        "TPU_WORKER_HOSTNAMES",
        "JAX_COORDINATOR_ADDRESS",
        "MEGASCALE_COORDINATOR_ADDRESS",
        "INNA_JAX_COORDINATOR_ADDRESS",
    ):
        monkeypatch.delenv(var, raising=False)
    assert initialize_distributed() is False
    with pytest.raises(ValueError, match="give all of"):
        initialize_distributed("127.0.0.1:1234")
    with pytest.raises(ValueError, match="process_id must be in"):
        initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="cpu_collectives"):
        initialize_distributed(cpu_collectives="nccl")
    monkeypatch.setenv("INNA_JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.setenv("INNA_JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("INNA_JAX_PROCESS_ID", "5")
    with pytest.raises(ValueError, match="process_id must be in \\[0, num_processes=2\\)"):
        initialize_distributed()


class _BatchNormNet(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.5, rngs=rngs)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.dense(x))))


def test_batch_norm_statistics_are_global_over_the_mesh():
    # Under jit with global semantics, batch statistics are over the whole batch, not per
    # device (unlike pmap's per-device batch norm): 4 devices give the one-device result.
    d = load_digits()
    data = d._replace(
        x_train=d.x_train[:64], y_train=d.y_train[:64], x_test=d.x_test[:16], y_test=d.y_test[:16]
    )
    out = []
    for mesh in (None, data_mesh(4)):
        model = _BatchNormNet(nnx.Rngs(0))
        result = fit(
            model, inna_jax.inna(0.1), data, epochs=1, batch_size=16, mesh=mesh, quiet=True
        )
        out.append((nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat), result))
    (p1, s1, r1), (p4, s4, r4) = out
    assert float(np.max(np.abs(np.asarray(s1["norm"]["mean"][...])))) > 1e-3  # updated
    for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p4, s4)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
    np.testing.assert_allclose(r1.history[-1]["test_loss"], r4.history[-1]["test_loss"], rtol=1e-5)
