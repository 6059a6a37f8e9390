"""Two real processes (jax.distributed on 127.0.0.1, gloo), 2 devices each, vs one process:
one run on a "data" mesh, and a group of runs on a ("runs", "data") mesh."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_worker  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from inna_jax.train import Checkpointer, TrainState, data_mesh, fit  # noqa: E402

WORKER = Path(__file__).parent / "_distributed_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    ckpt = tmp_path / "ckpt"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), str(port), str(outs[i]), str(ckpt)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0].decode()[-3000:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log

    model, tx, data = _distributed_worker.make_run()
    ref = fit(model, tx, data, epochs=2, batch_size=16, seed=7, mesh=data_mesh(4), quiet=True)
    expected = {
        "/".join(map(str, path)): np.asarray(v[...])
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    group = _distributed_worker.run_group(None)  # the group on one device, one process
    for out in outs:
        got = np.load(out)
        for key, value in group.items():  # float32 parameters: measured gaps ~2e-7
            if key.endswith("train_loss"):
                np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)
            else:
                np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=0, err_msg=key)
        got = {k: got[k] for k in got.files if not k.startswith("run")}
        assert sorted(k for k in got if k != "__history__") == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=0, err_msg=key)
        history = json.loads(str(got["__history__"]))
        assert [r["step"] for r in history] == [r["step"] for r in ref.history]
        for row, ref_row in zip(history, ref.history, strict=True):
            np.testing.assert_allclose(row["train_loss"], ref_row["train_loss"], rtol=1e-5)
            np.testing.assert_allclose(row["test_accuracy"], ref_row["test_accuracy"], atol=1e-9)
    # the two processes wrote one set of orbax checkpoints; the last holds the final state
    checkpointer = Checkpointer(ckpt)
    assert checkpointer.latest_step() == 16
    fresh = _distributed_worker.make_run()[0]
    _, params, rest = nnx.split(fresh, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    like = TrainState(
        params,
        rest,
        tx.init(params),
        jnp.array(True),
        jnp.array(-1, jnp.int32),
        jnp.array(0, jnp.int32),
    )
    state, meta = checkpointer.restore(16, like)
    checkpointer.close()
    assert int(state.step) == 16 and meta["step"] == 16 and len(meta["history"]) == 3
    saved = {
        "/".join(str(k.key) for k in path): np.asarray(v)
        for path, v in jax.tree_util.tree_flatten_with_path(state.params)[0]
    }
    for key, value in saved.items():
        np.testing.assert_array_equal(value, np.load(outs[0])[key], err_msg=key)
    # and training did move the parameters
    start = _distributed_worker.make_run()[0]
    first = np.asarray(start.layers[0].kernel[...])
    assert np.max(np.abs(np.load(outs[0])["layers/0/kernel"] - first)) > 1e-3
