"""The protocols' shared grid search, model cache and band plots."""

import math

import jax
import numpy as np
import optax
import pytest

from inna_jax.reproduce import plots, protocol, registry
from inna_jax.train import OptimizerSpec


def _data():
    return registry.load_dataset("digits", num_train=64, num_test=32)


def test_grid_search_picks_the_best_score_and_ties_go_to_the_smaller_value():
    data = _data()
    models = protocol.cached_models(lambda key: registry.make_model("mlp", data, key))
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
    traced = []
    models = protocol.cached_models(
        lambda key: traced.append(key) or registry.make_model("mlp", data, key)
    )
    a, b, c = models(0), models(0), models(1)
    assert len(traced) == 1  # one jitted program for every seed
    ka, kb = a.layers[0].kernel, b.layers[0].kernel
    assert ka is not kb and np.array_equal(ka[...], kb[...])
    assert not np.array_equal(ka[...], c.layers[0].kernel[...])
    runs = protocol.train_group(
        data, models, [OptimizerSpec(optax.sgd, learning_rate=0.5)] * 2, [0, 0], epochs=1,
        batch_size=32, loss="cross_entropy",
    )  # fmt: skip
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"]
    np.testing.assert_array_equal(models(0).layers[0].kernel[...], ka[...])  # start unchanged


@pytest.mark.parametrize(
    "name, dataset", [("mlp", "digits"), ("cnn", "digits"), ("cnn", "mnist1d")]
)
def test_cached_models_build_the_weights_of_the_eager_model_bit_for_bit(name, dataset):
    from flax import nnx

    data = registry.load_dataset(dataset, num_train=64, num_test=32)
    models = protocol.cached_models(lambda key: registry.make_model(name, data, key))
    for seed in (0, 3, 2**40 + 5):  # the jitted init takes jax.random.key(seed), any int
        jitted = nnx.state(models(seed))
        eager = nnx.state(registry.make_model(name, data, seed))
        assert jax.tree.structure(jitted) == jax.tree.structure(eager)
        for x, y in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
            assert x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.parametrize("seeds, bands", [(1, 0), (3, 1)])
def test_band_is_drawn_only_for_several_seeds(seeds, bands):
    fig, axes = plots.figure(1)
    ys = np.arange(4.0)[None, :] + np.arange(seeds)[:, None]
    plots.band(axes[0, 0], np.arange(4), ys, label="run")
    assert len(axes[0, 0].collections) == bands
    plots.zoom(axes[0, 0], [0.95, 0.99], lower=0, upper=1)
    lo, hi = axes[0, 0].get_ylim()
    assert 0.9 < lo < 0.95 and 0.99 < hi <= 1.0


def test_run_concurrently_keeps_the_order_and_overlaps_the_tasks():
    import threading
    import time

    inside, most = [0], [0]
    lock = threading.Lock()

    def task(i):
        def work():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05 * (3 - i))  # the first task ends last
            with lock:
                inside[0] -= 1
            return i

        return work

    assert protocol.run_concurrently([task(i) for i in range(3)], workers=3) == [0, 1, 2]
    assert most[0] == 3  # all three were running at once
    most[0] = 0
    assert protocol.run_concurrently([task(i) for i in range(3)], workers=1) == [0, 1, 2]
    assert most[0] == 1
    import os

    from inna_jax.train import run_mesh

    assert protocol.default_workers() == len(os.sched_getaffinity(0)) + 1  # CPU, one process
    assert protocol.default_workers(run_mesh(2)) == 1  # a mesh: one group at a time
    most[0] = 0
    assert protocol.run_concurrently([task(i) for i in range(3)], mesh=run_mesh(2)) == [0, 1, 2]
    assert most[0] == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            protocol.run_concurrently([lambda: 1], workers=bad)


def test_run_concurrently_raises_the_first_error_and_drops_the_tasks_not_started():
    started = []

    def fail():
        started.append("fail")
        raise FloatingPointError("task 0 failed")

    def later(i):
        return lambda: started.append(i)

    with pytest.raises(FloatingPointError, match="task 0 failed"):
        protocol.run_concurrently([fail] + [later(i) for i in range(50)], workers=1)
    assert started == ["fail"]  # one at a time: nothing after the failure ran
    started.clear()
    with pytest.raises(FloatingPointError, match="task 0 failed"):
        protocol.run_concurrently([fail] + [later(i) for i in range(2000)], workers=2)
    assert started[0] == "fail" and len(started) < 2001


def test_groups_in_threads_equal_groups_one_after_the_other():
    data = _data()
    models = protocol.cached_models(lambda key: registry.make_model("cnn", data, key))
    specs = [registry.make_optimizer("inna", lr, alpha=0.5, beta=0.1) for lr in (0.05, 0.1)]

    def group(spec):
        return lambda: protocol.train_group(
            data, models, [spec] * 2, [0, 1], epochs=2, batch_size=16, loss="cross_entropy"
        )

    alone = protocol.run_concurrently([group(s) for s in specs], workers=1)
    together = protocol.run_concurrently([group(s) for s in specs], workers=2)
    for a_runs, b_runs in zip(alone, together, strict=True):
        for a, b in zip(a_runs, b_runs, strict=True):
            strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
            assert strip(a.history) == strip(b.history)  # bit for bit


def test_an_error_stops_the_groups_running_beside_it():
    import time

    data = _data()
    models = protocol.cached_models(lambda key: registry.make_model("mlp", data, key))
    spec = registry.make_optimizer("inna", 0.05, alpha=0.5, beta=0.1)

    def endless():  # 2 steps an epoch: millions of steps, minutes if nothing stops it
        return protocol.train_group(
            data, models, [spec], [0], epochs=10**6, batch_size=32, loss="cross_entropy",
            eval_every=None, eval_test=False,
        )  # fmt: skip

    def fail():
        time.sleep(2.0)
        raise FloatingPointError("group 1 failed")

    start = time.perf_counter()
    with pytest.raises(FloatingPointError, match="group 1 failed"):
        protocol.run_concurrently([endless, fail], workers=2)
    assert time.perf_counter() - start < 60  # the endless group stopped at its next step
