"""The Flax NNX models: parameter counts and forward passes against a lax transcription."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inna_jax.models import MLP, NiN, SmallCNN, count_params


def _conv(x, kernel, bias, stride=1):
    """Reference NHWC / NWC convolution with SAME padding, written with lax directly."""
    rank = x.ndim - 2
    spatial = "HW"[:rank] if rank == 2 else "W"
    dn = jax.lax.conv_dimension_numbers(
        x.shape, kernel.shape, (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
    )
    y = jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride,) * rank,
        "SAME",
        dimension_numbers=dn,
        precision=jax.lax.Precision.HIGHEST,
    )
    return y + bias


def _pool(x, op):
    """3x3 window, stride 2, SAME padding; average counts only the real pixels."""
    window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
    if op == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, "SAME")
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
    count = jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, window, strides, "SAME")
    return total / count


def test_nin_parameter_count():
    # Independent count from the layer table of Lin et al. (kernel, in, out), + biases.
    table = [
        (5, 3, 192),
        (1, 192, 160),
        (1, 160, 96),
        (5, 96, 192),
        (1, 192, 192),
        (1, 192, 192),
        (3, 192, 192),
        (1, 192, 192),
        (1, 192, 100),
    ]
    expected = sum(k * k * c_in * c_out + c_out for k, c_in, c_out in table)
    model = NiN(100, rngs=nnx.Rngs(0))
    assert count_params(model) == expected == 984_356
    assert 0.9e6 < count_params(model) < 1.1e6  # "about 1e6 parameters"
    assert count_params(NiN(10, rngs=nnx.Rngs(0))) == expected - 90 * 193


def test_nin_forward_matches_lax_reference():
    model = NiN(7, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3), jnp.float32)
    got = model(x)
    convs = [[(c.kernel[...], c.bias[...]) for c in block] for block in model.blocks]
    h = x
    for k, b in convs[0]:
        h = jax.nn.relu(_conv(h, k, b))
    h = _pool(h, "max")
    assert h.shape == (2, 16, 16, 96)
    for k, b in convs[1]:
        h = jax.nn.relu(_conv(h, k, b))
    h = _pool(h, "avg")
    assert h.shape == (2, 8, 8, 192)
    for k, b in convs[2][:-1]:
        h = jax.nn.relu(_conv(h, k, b))
    h = _conv(h, *convs[2][-1]).mean(axis=(1, 2))
    assert got.shape == (2, 7)
    np.testing.assert_allclose(got, h, rtol=1e-4, atol=1e-5)


def test_nin_dropout_follows_train_and_eval():
    model = NiN(5, dropout_rate=0.5, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 32, 32, 3))
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.allclose(model(x), model(x))
    # Without dropout the model holds parameters only.
    _, _, rest = nnx.split(NiN(5, rngs=nnx.Rngs(0)), nnx.Param, ...)
    assert jax.tree.leaves(rest) == []


@pytest.mark.parametrize(
    "input_shape, flat, params",
    [((8, 8, 1), 64, 160 + 4640 + 4 * 4 * 32 * 10 + 10), ((40, 1), 40, 64 + 1568 + 6410)],
)
def test_small_cnn_forward_and_count(input_shape, flat, params):
    model = SmallCNN(input_shape, 10, rngs=nnx.Rngs(0))
    assert count_params(model) == params
    x = jax.random.normal(jax.random.key(3), (4, flat), jnp.float32)
    got = model(x)
    h = x.reshape(4, *input_shape)
    h = jax.nn.relu(_conv(h, model.conv1.kernel[...], model.conv1.bias[...]))
    h = jax.nn.relu(_conv(h, model.conv2.kernel[...], model.conv2.bias[...], stride=2))
    ref = h.reshape(4, -1) @ model.head.kernel[...] + model.head.bias[...]
    assert got.shape == (4, 10)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_same_seed_same_weights():
    a = nnx.state(SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(4)), nnx.Param)
    b = nnx.state(SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(4)), nnx.Param)
    c = nnx.state(SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(5)), nnx.Param)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(jax.tree.leaves(a)[-1], jax.tree.leaves(c)[-1])


def test_count_params_mlp():
    assert count_params(MLP(64, (32, 16), 10, rngs=nnx.Rngs(0))) == (
        64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    )


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda r: NiN(0, rngs=r), "num_classes="),
        (lambda r: NiN(10, dropout_rate=1.0, rngs=r), "dropout_rate="),
        (lambda r: SmallCNN((64,), 10, rngs=r), "input_shape="),
        (lambda r: SmallCNN((8, 8, 1), 10, channels=(8,), rngs=r), "channels="),
    ],
)
def test_bad_arguments(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build(nnx.Rngs(0))
