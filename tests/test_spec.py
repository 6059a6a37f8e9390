"""``OptimizerSpec``: families, hyperparameters as values, and the optimizer it builds."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import inna_jax
from inna_jax.train import OptimizerSpec


def _inna_decay(learning_rate, alpha, beta, power=0.5):
    return inna_jax.inna(inna_jax.power_decay(learning_rate, power), alpha, beta)


def test_numbers_are_hyperparameters_and_the_rest_is_static():
    spec = OptimizerSpec(
        inna_jax.sgn, predict_fn=len, loss="mse", learning_rate=0.5, regularizer=np.float32(1e-3),
        cg_iterations=4, static_args=("cg_iterations",),
    )  # fmt: skip
    assert spec.hyperparams == {"learning_rate": 0.5, "regularizer": pytest.approx(1e-3)}
    assert spec.static == {"predict_fn": len, "loss": "mse", "cg_iterations": 4}
    other = spec.replace(learning_rate=2.0)
    assert other.family == spec.family and other != spec
    assert other.static["cg_iterations"] == 4 and other.hyperparams["learning_rate"] == 2.0
    assert OptimizerSpec(optax.sgd, learning_rate=0.1).family != spec.family
    assert hash(spec.replace(learning_rate=0.5)) == hash(spec)


def test_build_equals_the_factory_in_float64():
    # the built optimizer (hyperparameters in its state) takes the factory's steps exactly
    params = {"w": jnp.array([1.0, -2.0, 0.5], jnp.float64)}
    spec = OptimizerSpec(_inna_decay, learning_rate=0.3, alpha=0.5, beta=0.2)
    built, plain = spec.build(), _inna_decay(0.3, 0.5, 0.2)
    s1, s2 = built.init(params), plain.init(params)
    p1 = p2 = params
    for k in range(5):
        g = {"w": jnp.sin(p1["w"] * (k + 1))}
        u1, s1 = built.update(g, s1, p1)
        u2, s2 = plain.update({"w": jnp.sin(p2["w"] * (k + 1))}, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-14)
    assert float(s1.hyperparams["alpha"]) == 0.5
    assert "power" not in s1.hyperparams  # a default left out stays static


def test_bad_specs():
    with pytest.raises(TypeError, match="factory must be callable"):
        OptimizerSpec("sgd", learning_rate=0.1)
    with pytest.raises(ValueError, match="static_args names arguments that were not given"):
        OptimizerSpec(optax.sgd, learning_rate=0.1, static_args=("momentum",))
    with pytest.raises(TypeError, match="must be hashable"):
        OptimizerSpec(optax.sgd, learning_rate=0.1, momentum=[0.9])
    with pytest.raises(ValueError, match="replace\\(\\) takes hyperparameters"):
        OptimizerSpec(optax.sgd, learning_rate=0.1).replace(momentum=0.9)
