"""ntk_gram_blocked: the kernel built in blocks equals the one-block ntk_gram, on one device
and on a mesh of four; the block size follows the memory bound."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax


def _mlp(key, d=4, h=6, c=3):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (d, h)) / np.sqrt(d),
        "b1": 0.1 * jax.random.normal(k2, (h,)),
        "w2": jax.random.normal(k3, (h, c)) / np.sqrt(h),
    }


def _predict(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


PARAMS = _mlp(jax.random.key(0))
X1 = jax.random.normal(jax.random.key(1), (11, 4))
X2 = jax.random.normal(jax.random.key(2), (7, 4))


# every block is an ntk_gram cross-kernel, and tests/test_ntk_cross.py checks those for every
# implementation: here the blocking, padding and assembly, and "matrix_free" once
@pytest.mark.parametrize(
    ("implementation", "reduction"),
    [("auto", "full"), ("auto", "trace"), ("auto", "diagonal"), ("matrix_free", "full")],
)
def test_blocks_equal_one_block(implementation, reduction):
    for other in (None, X2) if reduction != "diagonal" else (None, X2[:4]):
        x1 = X1 if other is None or reduction != "diagonal" else X1[:4]
        whole = inna_jax.ntk_gram(
            _predict, PARAMS, x1, other, implementation=implementation, reduction=reduction
        )
        # blocks of 3: 11 = 3 + 3 + 3 + 2, 7 = 3 + 3 + 1 and 4 = 3 + 1, the last ones padded
        blocked = inna_jax.ntk_gram_blocked(
            _predict,
            PARAMS,
            x1,
            other,
            implementation=implementation,
            reduction=reduction,
            block_size=3,
            progress=False,
        )
        assert isinstance(blocked, np.ndarray) and blocked.shape == whole.shape
        np.testing.assert_allclose(blocked, whole, rtol=1e-13, atol=1e-13)


def test_plan_counts_blocks():
    plan = inna_jax.ntk_block_plan(_predict, PARAMS, X1, block_size=4)
    assert (plan.block_size, plan.row_blocks, plan.blocks, plan.symmetric) == (4, 3, 6, True)
    plan = inna_jax.ntk_block_plan(_predict, PARAMS, X1, X2, block_size=4)
    assert (plan.row_blocks, plan.column_blocks, plan.blocks) == (3, 2, 6)
    plan = inna_jax.ntk_block_plan(
        _predict, PARAMS, X1[:7], X2[:7], block_size=3, reduction="diagonal"
    )
    assert plan.blocks == 3


def test_memory_bound_picks_the_largest_block_that_fits():
    x = jax.random.normal(jax.random.key(3), (32, 4))
    one = inna_jax.ntk_block_plan(_predict, PARAMS, x)
    assert one.block_size == 32 and one.blocks == 1
    bound = one.block_bytes // 5
    plan = inna_jax.ntk_block_plan(_predict, PARAMS, x, max_memory=bound)
    assert plan.block_size < 32 and plan.block_bytes <= bound
    twice = inna_jax.ntk_block_plan(_predict, PARAMS, x, block_size=2 * plan.block_size)
    assert twice.block_bytes > bound  # the next size up would not fit
    blocked = inna_jax.ntk_gram_blocked(_predict, PARAMS, x, max_memory=bound, progress=False)
    np.testing.assert_allclose(
        blocked, inna_jax.ntk_gram(_predict, PARAMS, x), rtol=1e-13, atol=1e-13
    )
    with pytest.raises(ValueError, match="max_memory"):
        inna_jax.ntk_block_plan(_predict, PARAMS, x, max_memory=16)


def test_bad_arguments():
    with pytest.raises(ValueError, match="block_size"):
        inna_jax.ntk_gram_blocked(_predict, PARAMS, X1, block_size=0)
    with pytest.raises(ValueError, match="mesh"):
        inna_jax.ntk_gram_blocked(_predict, PARAMS, X1, mesh="data")
    with pytest.raises(ValueError, match="one size"):
        inna_jax.ntk_gram_blocked(_predict, PARAMS, X1, X2, reduction="diagonal")


_MESH_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import inna_jax
    assert jax.device_count() == 4, jax.devices()
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w1": jax.random.normal(k[0], (4, 6)), "w2": jax.random.normal(k[1], (6, 3))}
    predict = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
    x1 = jax.random.normal(k[2], (13, 4))
    x2 = jax.random.normal(k[3], (9, 4))
    mesh = jax.make_mesh((4,), ("blocks",))
    for other, reduction in [(None, "full"), (x2, "full"), (x2, "trace"), (x1, "diagonal")]:
        whole = inna_jax.ntk_gram(predict, params, x1, other, reduction=reduction)
        blocked = inna_jax.ntk_gram_blocked(
            predict, params, x1, other, reduction=reduction, block_size=3, mesh=mesh,
            progress=False,
        )
        err = float(np.max(np.abs(blocked - np.asarray(whole))))
        assert err < 1e-12, (reduction, err)
    plan = inna_jax.ntk_block_plan(predict, params, x1, block_size=3, mesh=mesh)
    print("ok", plan.devices, plan.blocks)
    """
)


def test_blocks_spread_over_a_mesh_of_four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", _MESH_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "4", "15"]  # 5 row blocks: 15 on or above the diagonal
