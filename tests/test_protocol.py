"""The protocols' shared grid search, model cache and band plots."""

import math

import numpy as np
import optax
import pytest

from inna_jax.reproduce import plots, protocol, registry
from inna_jax.train import OptimizerSpec


def _data():
    return registry.load_dataset("digits", num_train=64, num_test=32)


def test_grid_search_picks_the_best_score_and_ties_go_to_the_smaller_value():
    data = _data()
    models = protocol.cached_models(lambda s: registry.make_model("mlp", data, s))
    scores = {0.3: 2.0, 0.1: 1.0, 0.2: 1.0, 5.0: math.nan}

    found = protocol.grid_search(
        data, models, OptimizerSpec(optax.sgd, learning_rate=1.0), [0.3, 0.1, 0.2, 5.0],
        score=lambda runs: scores[runs[0].hyperparams["learning_rate"]], seeds=(0, 1),
        epochs=1, batch_size=32, loss="cross_entropy", eval_every=None, eval_test=False,
    )  # fmt: skip
    assert found.best == 0.1
    assert [r["chosen"] for r in found.rows] == [False, True, False, False]
    assert found.rows[-1]["score"] == math.inf  # NaN ranks last
    assert [len(v) for v in found.results.values()] == [2, 2, 2, 2]
    assert [r.seed for r in found.results[0.2]] == [0, 1]
    high = protocol.grid_search(
        data, models, OptimizerSpec(optax.sgd, learning_rate=1.0), [0.3, 0.1],
        score=lambda runs: scores[runs[0].hyperparams["learning_rate"]], higher_is_better=True,
        epochs=1, batch_size=32, loss="cross_entropy", eval_every=None, eval_test=False,
    )  # fmt: skip
    assert high.best == 0.3


def test_cached_models_are_independent_modules_with_the_same_start():
    data = _data()
    built = []
    models = protocol.cached_models(
        lambda s: built.append(s) or registry.make_model("mlp", data, s)
    )
    a, b, c = models(0), models(0), models(1)
    assert built == [0, 1]
    ka, kb = a.layers[0].kernel, b.layers[0].kernel
    assert ka is not kb and np.array_equal(ka[...], kb[...])
    assert not np.array_equal(ka[...], c.layers[0].kernel[...])
    runs = protocol.train_group(
        data, models, [OptimizerSpec(optax.sgd, learning_rate=0.5)] * 2, [0, 0], epochs=1,
        batch_size=32, loss="cross_entropy",
    )  # fmt: skip
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"]
    np.testing.assert_array_equal(models(0).layers[0].kernel[...], ka[...])  # start unchanged


@pytest.mark.parametrize("seeds, bands", [(1, 0), (3, 1)])
def test_band_is_drawn_only_for_several_seeds(seeds, bands):
    fig, axes = plots.figure(1)
    ys = np.arange(4.0)[None, :] + np.arange(seeds)[:, None]
    plots.band(axes[0, 0], np.arange(4), ys, label="run")
    assert len(axes[0, 0].collections) == bands
    plots.zoom(axes[0, 0], [0.95, 0.99], lower=0, upper=1)
    lo, hi = axes[0, 0].get_ylim()
    assert 0.9 < lo < 0.95 and 0.99 < hi <= 1.0
