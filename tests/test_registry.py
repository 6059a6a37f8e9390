"""The one registry of data sets, models and optimizers used by every command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import inna_jax
from inna_jax.models import MLP, NiN, SmallCNN
from inna_jax.reproduce import registry


def test_every_optimizer_builds_and_steps():
    data = registry.load_dataset("diabetes", num_train=32, num_test=8)
    assert isinstance(registry.make_model("auto", data, seed=0), MLP)
    model = registry.make_model("mlp", data, seed=0, hidden=(4,))
    params = nnx.state(model, nnx.Param)
    x, y = data.x_train[:8], data.y_train[:8]
    for name, entry in registry.OPTIMIZERS.items():
        spec = registry.make_optimizer(name, 0.1, model=model, loss="mse")
        assert spec.hyperparams["learning_rate"] == 0.1
        assert set(spec.hyperparams) == {"learning_rate", *entry.hyperparams}, name
        tx = spec.build()
        pure = nnx.to_pure_dict(params)
        grads = jax.tree.map(lambda p: 0.1 * p, pure)
        update = jax.jit(lambda g, st, p, tx=tx: tx.update(g, st, p, inputs=x, targets=y))
        updates, _ = update(grads, tx.init(pure), pure)
        leaves = jax.tree.leaves(updates)
        assert leaves and all(np.isfinite(np.asarray(u)).all() for u in leaves), name


def test_one_family_per_entry_whatever_the_hyperparameters():
    a = registry.make_optimizer("inna", 0.1, alpha=0.1, beta=0.1, decay_power=0.5)
    b = registry.make_optimizer("inna", 3.0, alpha=0.5, beta=0.5, decay_power=0.0)
    assert a.family == b.family
    data = registry.load_dataset("digits", num_train=8, num_test=8)
    m1, m2 = registry.make_model("mlp", data, 0), registry.make_model("mlp", data, 1)
    e1 = registry.make_optimizer("egn", 1.0, model=m1, loss="cross_entropy")
    e2 = registry.make_optimizer("egn", 0.3, model=m2, loss="cross_entropy", regularizer=0.1)
    assert e1.family == e2.family  # predict_fn is one object per model structure
    lm = registry.make_optimizer("egn_lm", 1.0, model=m1, loss="cross_entropy")
    assert lm.family != e1.family and lm.static["adaptive_regularization"] is True


@pytest.mark.parametrize("name", ["egn", "sgn"])
def test_gauss_newton_entries_take_their_line_search_and_lambda(name):
    # the registry's spec against the optimizer built by hand: the same update of one batch
    data = registry.load_dataset("diabetes", num_train=16, num_test=8)
    model = registry.make_model("mlp", data, seed=0, hidden=(4,))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x, y = data.x_train, data.y_train
    spec = registry.make_optimizer(
        name, 0.5, model=model, loss="mse", regularizer=0.25, line_search=False
    )
    assert spec.static["line_search"] is False and spec.hyperparams["regularizer"] == 0.25
    assert registry.make_optimizer(name, 0.5, model=model, loss="mse").static["line_search"]
    factory = getattr(inna_jax, name)
    ref = factory(
        registry.predict_fn(model), "mse", learning_rate=0.5, regularizer=0.25, line_search=False
    )
    got = []
    for tx in (spec.build(), ref):
        step = jax.jit(lambda p, tx=tx: tx.update(None, tx.init(p), p, inputs=x, targets=y)[0])
        got.append(jax.tree.leaves(step(params)))
    for a, b in zip(*got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert any(np.abs(a).max() > 0 for a in got[0])


def test_innaprop_entry_is_inna_jax_innaprop():
    theta = {"w": jnp.array([1.0, -2.0, 0.5])}
    a = registry.make_optimizer("innaprop", 1e-3)
    b = registry.make_optimizer("innaprop", 3e-2, alpha=2.0, beta=2.0, weight_decay=0.0)
    assert a.family == b.family  # every gamma_0 and (alpha, beta) share one compiled step
    assert a.hyperparams == {
        "learning_rate": 1e-3, "alpha": 0.1, "beta": 0.9, "sigma": 0.999, "eps": 1e-8,
        "weight_decay": 0.01,
    }  # fmt: skip
    for spec, ref in (
        (a, inna_jax.innaprop(1e-3)),
        (b, inna_jax.innaprop(3e-2, 2.0, 2.0, weight_decay=0.0)),
    ):
        tx, state, ref_state, params = spec.build(), None, None, theta
        state, ref_state = tx.init(params), ref.init(params)
        for k in range(3):
            g = jax.tree.map(lambda p, k=k: jnp.sin(p + k), params)
            u, state = tx.update(g, state, params)
            v, ref_state = ref.update(g, ref_state, params)
            np.testing.assert_allclose(u["w"], v["w"], rtol=1e-12)
            params = jax.tree.map(jnp.add, params, u)
    # the optimizer's own checks run when the spec is made, with the concrete values
    with pytest.raises(ValueError, match="learning_rate must be < beta in INNAprop"):
        registry.make_optimizer("innaprop", 1.0)
    with pytest.raises(ValueError, match="sigma"):
        registry.make_optimizer("innaprop", 1e-3, sigma=1.0)
    with pytest.raises(ValueError, match="alpha"):
        registry.make_optimizer("inna", 0.1, alpha=-1.0)


def test_models_and_errors(tmp_path):
    digits = registry.load_dataset("digits", num_train=10, num_test=5)
    assert digits.x_train.shape == (10, 64) and digits.x_test.shape == (5, 64)
    assert isinstance(registry.make_model("auto", digits, 0), SmallCNN)
    with pytest.raises(ValueError, match="model='nin' takes images"):
        registry.make_model("nin", digits, 0)
    with pytest.raises(ValueError, match="dataset must be one of"):
        registry.load_dataset("iris")
    with pytest.raises(ValueError, match="needs data_dir"):
        registry.load_dataset("cifar100")
    with pytest.raises(FileNotFoundError, match="CIFAR-100 not found"):
        registry.load_dataset("cifar100", data_dir=tmp_path)
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        registry.load_dataset("digits", num_train=0)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        registry.make_optimizer("sgd", -1.0)
    with pytest.raises(ValueError, match="inna takes the options"):
        registry.make_optimizer("inna", 0.1, gamma=2)
    with pytest.raises(ValueError, match="needs model= and loss="):
        registry.make_optimizer("egn", 0.1)
    assert isinstance(registry.make_model("auto", _cifar_like(), 0), NiN)


def _cifar_like():
    from inna_jax.data import ArrayDataset

    x = np.zeros((2, 32, 32, 3), np.float32)
    y = np.zeros(2, np.int32)
    return ArrayDataset(x, y, x, y, num_classes=100, name="cifar100")
