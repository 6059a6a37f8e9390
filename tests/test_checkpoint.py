"""Orbax checkpoints: resume in process, and a real SIGKILL mid-run, both bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
import _train_worker  # noqa: E402

from inna_jax.data import load_digits  # noqa: E402
from inna_jax.models import MLP  # noqa: E402
from inna_jax.train import fit  # noqa: E402

WORKER = Path(__file__).parent / "_train_worker.py"


def _without_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def _small_digits():
    d = load_digits()
    return d._replace(
        x_train=d.x_train[:96], y_train=d.y_train[:96], x_test=d.x_test[:32], y_test=d.y_test[:32]
    )


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_resume_in_process_is_bit_identical(tmp_path):
    data = _small_digits()
    tx = optax.adam(1e-2)
    full = MLP(64, (8,), 10, rngs=nnx.Rngs(4))
    ref = fit(full, tx, data, epochs=3, batch_size=16, seed=1, quiet=True)

    part = MLP(64, (8,), 10, rngs=nnx.Rngs(4))
    fit(
        part,
        tx,
        data,
        epochs=1,
        batch_size=16,
        seed=1,
        quiet=True,
        checkpoint_dir=tmp_path,
        checkpoint_every=4,
    )
    resumed = MLP(64, (8,), 10, rngs=nnx.Rngs(4))
    res = fit(
        resumed,
        tx,
        data,
        epochs=3,
        batch_size=16,
        seed=1,
        quiet=True,
        checkpoint_dir=tmp_path,
        checkpoint_every=4,
    )
    for a, b in zip(_params(full), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _without_time(res.history) == _without_time(ref.history)
    assert res.steps == ref.steps == 18

    # a finished run resumes to itself, and other settings are refused
    again = MLP(64, (8,), 10, rngs=nnx.Rngs(99))
    fit(again, tx, data, epochs=3, batch_size=16, seed=1, quiet=True, checkpoint_dir=tmp_path)
    for a, b in zip(_params(full), _params(again), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="seed=1, but this run has seed=2"):
        fit(again, tx, data, epochs=3, batch_size=16, seed=2, quiet=True, checkpoint_dir=tmp_path)


def _checkpoints(directory: Path) -> list[int]:
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "params.npz"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(WORKER), str(ckpt), str(out)]
    proc = subprocess.Popen([*cmd, "0.1"], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _checkpoints(ckpt):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint written in 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    total = _train_worker.EPOCHS * (192 // _train_worker.BATCH)
    assert not out.exists() and 0 < max(_checkpoints(ckpt)) < total

    done = subprocess.run([*cmd, "0.0"], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed = np.load(out)

    model, tx, data, loss = _train_worker.make_run(0.0)
    ref = fit(
        model,
        tx,
        data,
        epochs=_train_worker.EPOCHS,
        batch_size=_train_worker.BATCH,
        seed=_train_worker.SEED,
        loss=loss,
        quiet=True,
    )
    expected = _train_worker.flat_params(model)
    assert sorted(k for k in resumed.files if not k.startswith("__")) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)
    opt = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(ref.opt_state)])
    np.testing.assert_array_equal(resumed["__opt_leaves__"], opt)
    assert _without_time(json.loads(str(resumed["__history__"]))) == _without_time(ref.history)
