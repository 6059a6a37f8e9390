"""The one registry of data sets, models and optimizers used by every command."""

import jax
import numpy as np
import pytest
from flax import nnx

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
