"""Groups of runs (``fit_many``) against separate ``fit`` calls, in float64; compile counts."""

import csv
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import inna_jax
from inna_jax.data import load_diabetes, load_digits
from inna_jax.models import MLP, SmallCNN
from inna_jax.reproduce import registry
from inna_jax.train import OptimizerSpec, fit, fit_many, run_mesh


def _f64(model):
    """The model with float64 parameters (x64 is on in the tests)."""
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), params))
    return model


def _digits(n_train=96, n_test=40):
    d = load_digits()
    return d._replace(
        x_train=d.x_train[:n_train].astype(np.float64),
        y_train=d.y_train[:n_train],
        x_test=d.x_test[:n_test].astype(np.float64),
        y_test=d.y_test[:n_test],
    )


def _params(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _inna_decay(learning_rate, alpha, beta):
    return inna_jax.inna(inna_jax.power_decay(learning_rate, 0.5), alpha, beta)


def _assert_same_runs(group, separate, tol):
    for (gm, gr), (sm, sr) in zip(group, separate, strict=True):
        assert gr.steps == sr.steps and gr.stopped == sr.stopped
        for a, b in zip(_params(gm), _params(sm), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol)
        assert [r["epoch"] for r in gr.history] == [r["epoch"] for r in sr.history]
        for a, b in zip(gr.history, sr.history, strict=True):
            for key in ("train_loss", "test_loss", "test_accuracy", "test_rmse"):
                if key in b:
                    np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tol)


SETTINGS = [(0.1, 0.5, 0.1, 0), (0.5, 0.1, 0.1, 3), (1.0, 0.5, 0.5, 7)]


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_group_equals_separate_fits(strategy):
    # Three runs with their own weights, batch order, gamma_0 and (alpha, beta). Measured:
    # the vmapped group equals the separate runs to 0 in float64 here; 1e-10 is the bar.
    data = _digits()
    specs = [
        OptimizerSpec(_inna_decay, learning_rate=g, alpha=a, beta=b) for g, a, b, _ in SETTINGS
    ]
    seeds = [s for *_, s in SETTINGS]
    separate = []
    for spec, seed in zip(specs, seeds, strict=True):
        model = _f64(MLP(64, (16,), 10, rngs=nnx.Rngs(seed)))
        separate.append(
            (model, fit(model, spec, data, epochs=2, batch_size=16, seed=seed, quiet=True))
        )
    models = [_f64(MLP(64, (16,), 10, rngs=nnx.Rngs(s))) for s in seeds]
    results = fit_many(
        models, specs, data, epochs=2, batch_size=16, seeds=seeds, strategy=strategy, quiet=True
    )
    _assert_same_runs(list(zip(models, results, strict=True)), separate, 1e-10)
    assert [r.hyperparams["alpha"] for r in results] == [0.5, 0.1, 0.5]
    assert [r.seed for r in results] == seeds
    # the runs did move, and differently
    losses = [r.history[-1]["train_loss"] for r in results]
    assert len(set(losses)) == 3 and max(losses) < results[0].history[0]["train_loss"]


def test_convolutional_group_on_cpu_matches_separate_fits():
    # strategy="auto" on CPU with a convolution runs the single-run program per run.
    data = _digits(64, 32)
    specs = [registry.make_optimizer("sgd", lr, decay_power=0.5) for lr in (0.1, 0.3)]
    separate = []
    for spec, seed in zip(specs, (0, 1), strict=True):
        model = _f64(SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(seed)))
        separate.append(
            (model, fit(model, spec, data, epochs=1, batch_size=16, seed=seed, quiet=True))
        )
    models = [_f64(SmallCNN((8, 8, 1), 10, rngs=nnx.Rngs(s))) for s in (0, 1)]
    results = fit_many(models, specs, data, epochs=1, batch_size=16, seeds=[0, 1], quiet=True)
    _assert_same_runs(list(zip(models, results, strict=True)), separate, 1e-10)


def _regression_data():
    d = load_diabetes()
    return d._replace(
        x_train=d.x_train[:64].astype(np.float64),
        y_train=d.y_train[:64].astype(np.float64),
        x_test=d.x_test[:32].astype(np.float64),
        y_test=d.y_test[:32].astype(np.float64),
    )


@pytest.mark.parametrize("method", ["egn", "egn_lm", "sgn"])
def test_gauss_newton_groups_equal_separate_fits(method):
    # EGN/SGN take inputs= and targets=, run an Armijo while_loop and (EGN) a Cholesky solve:
    # vmapped over runs with their own step caps and lambdas. Measured max gaps in the
    # parameters: EGN 1e-16, EGN+LM 4e-16, SGN 9e-13 (its 10 CG iterations amplify the
    # rounding of the batched products; with lambda = 0.1 instead of 0.3 it reaches 1.5e-10).
    data = _regression_data()
    settings = [(1.0, 1.0, 0), (0.3, 0.3, 1)]
    models = [_f64(MLP(10, (8,), 1, rngs=nnx.Rngs(s))) for *_, s in settings]
    specs = [
        registry.make_optimizer(method, lr, model=models[0], loss="mse", regularizer=lam)
        for lr, lam, _ in settings
    ]
    separate = []
    for spec, (*_, seed) in zip(specs, settings, strict=True):
        model = _f64(MLP(10, (8,), 1, rngs=nnx.Rngs(seed)))
        result = fit(model, spec, data, epochs=2, batch_size=16, loss="mse", seed=seed, quiet=True)
        separate.append((model, result))
    results = fit_many(
        models, specs, data, epochs=2, batch_size=16, loss="mse", seeds=[0, 1], quiet=True,
        strategy="vmap",
    )  # fmt: skip
    _assert_same_runs(list(zip(models, results, strict=True)), separate, 1e-10)
    assert results[0].history[-1]["test_rmse"] < results[0].history[0]["test_rmse"]


def _sgd_breaking_above_one(learning_rate):
    """SGD whose update at step 5 (counted from 0) is +inf when ``learning_rate > 1``."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        bad = (count == 5) & (learning_rate > 1.0)
        out = jax.tree.map(lambda g: jnp.where(bad, jnp.inf, -learning_rate * g), updates)
        return out, count + 1

    return optax.GradientTransformation(init, update)


def test_a_diverging_run_stops_alone(tmp_path):
    data = _digits(64, 20)  # 4 steps per epoch with batch 16
    specs = [OptimizerSpec(_sgd_breaking_above_one, learning_rate=lr) for lr in (0.1, 2.0, 0.3)]
    models = [_f64(MLP(64, (), 10, rngs=nnx.Rngs(0))) for _ in specs]
    with pytest.warns(RuntimeWarning, match="run 1 \\(seed 0\\).*at step 6 \\(epoch 2\\)"):
        results = fit_many(
            models, specs, data, epochs=3, batch_size=16, quiet=True, log_every=1,
            strategy="vmap", checkpoint_dir=tmp_path / "ckpt",
        )  # fmt: skip
    assert [r.diverged for r in results] == [False, True, False]
    assert "the other runs went on" in results[1].stopped
    assert results[1].steps == 5 and [r["epoch"] for r in results[1].history] == [0, 1]
    for i in range(3):  # every run, the stopped one included, equals its own fit
        model = _f64(MLP(64, (), 10, rngs=nnx.Rngs(0)))
        with pytest.warns(RuntimeWarning) if i == 1 else _nothing():
            ref = fit(model, specs[i], data, epochs=3, batch_size=16, quiet=True, log_every=1)
        assert results[i].steps == ref.steps
        for a, b in zip(_params(models[i]), _params(model), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
            assert np.isfinite(a).all()
        assert [r["epoch"] for r in results[i].history] == [r["epoch"] for r in ref.history]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_group_checkpoint_resume_is_bit_identical(tmp_path):
    data = _digits(64, 20)
    specs = [
        OptimizerSpec(_inna_decay, learning_rate=g, alpha=a, beta=b) for g, a, b, _ in SETTINGS
    ]
    seeds = [0, 1, 2]

    def make():
        return [_f64(MLP(64, (8,), 10, rngs=nnx.Rngs(10 + s))) for s in seeds]

    full_models = make()
    full = fit_many(full_models, specs, data, epochs=3, batch_size=16, seeds=seeds, quiet=True)
    ckpt = tmp_path / "group"
    fit_many(
        make(), specs, data, epochs=1, batch_size=16, seeds=seeds, quiet=True,
        checkpoint_dir=ckpt, checkpoint_every=3,
    )  # fmt: skip
    resumed_models = make()
    resumed = fit_many(
        resumed_models, specs, data, epochs=3, batch_size=16, seeds=seeds, quiet=True,
        checkpoint_dir=ckpt, checkpoint_every=3,
    )  # fmt: skip
    for a_model, b_model in zip(full_models, resumed_models, strict=True):
        for a, b in zip(_params(a_model), _params(b_model), strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(full, resumed, strict=True):
        assert [{k: v for k, v in r.items() if k != "time_s"} for r in a.history] == [
            {k: v for k, v in r.items() if k != "time_s"} for r in b.history
        ]
    with pytest.raises(
        ValueError, match="seeds=\\[0, 1, 2\\], but this run has seeds=\\[0, 1, 5\\]"
    ):
        fit_many(make(), specs, data, epochs=3, batch_size=16, seeds=[0, 1, 5], quiet=True,
                 checkpoint_dir=ckpt)  # fmt: skip


def test_runs_mesh_matches_one_device():
    # 3 runs on meshes (runs, data) = (2, 1), (4, 2) and (1, 4): padded to a multiple of the
    # runs axis, each run's batch split over the data axis. Float64; bar 1e-10.
    assert len(jax.devices()) == 8  # tests/conftest.py
    data = _digits(64, 32)
    specs = [OptimizerSpec(optax.sgd, learning_rate=lr) for lr in (0.05, 0.1, 0.2)]

    def run(mesh):
        models = [_f64(MLP(64, (8,), 10, rngs=nnx.Rngs(s))) for s in range(3)]
        results = fit_many(
            models, specs, data, epochs=2, batch_size=16, seeds=[0, 1, 2], quiet=True, mesh=mesh
        )
        return list(zip(models, results, strict=True))

    ref = run(None)
    for shape in ((2, 1), (4, 2), (1, 4)):
        _assert_same_runs(run(run_mesh(*shape)), ref, 1e-10)


def test_group_metrics_files(tmp_path):
    data = _digits(64, 20)
    specs = [OptimizerSpec(optax.sgd, learning_rate=lr) for lr in (0.05, 0.1)]
    models = [MLP(64, (), 10, rngs=nnx.Rngs(0)) for _ in specs]
    results = fit_many(
        models, specs, data, epochs=1, batch_size=32, seeds=[4, 5], quiet=True, out_dir=tmp_path
    )
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["seed"], r["learning_rate"], r["epoch"]) for r in rows] == [
        ("0", "4", "0.05", "0"), ("0", "4", "0.05", "1"), ("1", "5", "0.1", "0"),
        ("1", "5", "0.1", "1"),
    ]  # fmt: skip
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert [d["history"] for d in doc] == [r.history for r in results]


def test_grid_search_rows_without_test_evaluation():
    data = _digits(64, 20)
    specs = [OptimizerSpec(optax.sgd, learning_rate=lr) for lr in (0.05, 0.1)]
    models = [MLP(64, (), 10, rngs=nnx.Rngs(0)) for _ in specs]
    results = fit_many(
        models, specs, data, epochs=2, batch_size=32, quiet=True, eval_every=None,
        eval_test=False,
    )  # fmt: skip
    assert [list(r.history[0]) for r in results] == [["epoch", "step", "train_loss", "time_s"]] * 2
    assert [r.history[0]["epoch"] for r in results] == [2, 2]


class _Compiles(logging.Handler):
    """Counts the programs that XLA compiles (``jax_log_compiles``), by name."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" ")[1])


@pytest.fixture
def compiles():
    handler = _Compiles()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        yield handler
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)


def test_second_fit_compiles_nothing(compiles):
    # Same model structure, optimizer family, batch shape: another gamma_0, (alpha, beta),
    # seed and initial weights reuse the compiled step and evaluation.
    data = _digits(64, 20)
    first = OptimizerSpec(_inna_decay, learning_rate=0.1, alpha=0.5, beta=0.1)
    fit(MLP(64, (8,), 10, rngs=nnx.Rngs(0)), first, data, epochs=1, batch_size=16, quiet=True)
    assert {"jit(train_step)", "jit(eval_sums)", "jit(opt_init)"} <= set(compiles.names)
    compiles.names.clear()
    second = first.replace(learning_rate=0.7, alpha=0.2, beta=0.3)
    result = fit(
        MLP(64, (8,), 10, rngs=nnx.Rngs(5)), second, data, epochs=2, batch_size=16, seed=3,
        quiet=True,
    )  # fmt: skip
    assert compiles.names == []
    assert float(result.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.7)

    # a group: the first call compiles its vmapped programs, the second nothing
    specs = [first.replace(learning_rate=g) for g in (0.1, 0.2, 0.3)]
    models = [MLP(64, (8,), 10, rngs=nnx.Rngs(s)) for s in range(3)]
    fit_many(models, specs, data, epochs=1, batch_size=16, quiet=True, strategy="vmap")
    assert "jit(train_step)" in compiles.names
    compiles.names.clear()
    specs = [first.replace(learning_rate=g, beta=0.2) for g in (1.0, 2.0, 3.0)]
    models = [MLP(64, (8,), 10, rngs=nnx.Rngs(s)) for s in range(3, 6)]
    fit_many(models, specs, data, epochs=1, batch_size=16, seeds=[1, 2, 3], quiet=True,
             strategy="vmap")  # fmt: skip
    assert compiles.names == []

    # a plain optax object is reused when the same object comes again
    tx = optax.adam(1e-3)
    fit(MLP(64, (8,), 10, rngs=nnx.Rngs(0)), tx, data, epochs=1, batch_size=16, quiet=True)
    compiles.names.clear()
    fit(MLP(64, (8,), 10, rngs=nnx.Rngs(1)), tx, data, epochs=1, batch_size=16, quiet=True)
    assert compiles.names == []


def test_compiler_options_reach_the_step_and_key_its_program(compiles):
    data = _digits(64, 20)
    spec = OptimizerSpec(_inna_decay, learning_rate=0.1, alpha=0.5, beta=0.1)
    o1 = {"xla_backend_optimization_level": 1}
    train = dict(epochs=1, batch_size=16, quiet=True)
    default = fit(_f64(MLP(64, (8,), 10, rngs=nnx.Rngs(0))), spec, data, **train)
    compiles.names.clear()
    model = _f64(MLP(64, (8,), 10, rngs=nnx.Rngs(0)))
    faster = fit(model, spec, data, compiler_options=o1, **train)
    # the step and the optimizer's init compile again with the options, the evaluation not
    assert sorted(compiles.names) == ["jit(opt_init)", "jit(train_step)"]
    compiles.names.clear()
    fit(_f64(MLP(64, (8,), 10, rngs=nnx.Rngs(3))), spec.replace(learning_rate=0.3), data,
        compiler_options=dict(o1), **train)  # fmt: skip
    assert compiles.names == []
    # the same training (float64), whichever LLVM pipeline compiled it
    assert faster.steps == default.steps == 4
    for a, b in zip(faster.history, default.history, strict=True):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-12)
    with pytest.raises(Exception, match="No such compile option: 'xla_not_an_option'"):
        fit(model, spec, data, compiler_options={"xla_not_an_option": 1}, **train)
    with pytest.raises(ValueError, match="compiler_options must be None or a mapping"):
        fit_many([model], spec, data, compiler_options=["-O1"], **train)


def test_bad_group_arguments():
    data = _digits(64, 20)
    models = [MLP(64, (), 10, rngs=nnx.Rngs(0)) for _ in range(2)]
    with pytest.raises(ValueError, match="one family"):
        fit_many(models, [OptimizerSpec(optax.sgd, learning_rate=0.1),
                          OptimizerSpec(optax.adam, learning_rate=0.1)], data, epochs=1,
                 batch_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="one seed per model"):
        fit_many(models, optax.sgd(0.1), data, epochs=1, batch_size=16, seeds=[0, 1, 2])
    with pytest.raises(ValueError, match="same structure"):
        fit_many([models[0], MLP(64, (4,), 10, rngs=nnx.Rngs(0))], optax.sgd(0.1), data,
                 epochs=1, batch_size=16)  # fmt: skip
    with pytest.raises(ValueError, match="OptimizerSpecs of one family"):
        fit_many(models, [optax.sgd(0.1), optax.sgd(0.2)], data, epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="strategy must be one of"):
        fit_many(models, optax.sgd(0.1), data, epochs=1, batch_size=16, strategy="pmap")
    with pytest.raises(ValueError, match="strategy='loop' cannot split runs"):
        fit_many(models, optax.sgd(0.1), data, epochs=1, batch_size=16, strategy="loop",
                 mesh=run_mesh(2, 1))  # fmt: skip
    with pytest.raises(TypeError, match="GradientTransformation or an OptimizerSpec"):
        fit_many(models, "sgd", data, epochs=1, batch_size=16)


def test_record_stops_like_stop_without_a_warning():
    import warnings

    data = _digits(64, 20)
    specs = [OptimizerSpec(_sgd_breaking_above_one, learning_rate=lr) for lr in (0.1, 2.0)]
    models = [_f64(MLP(64, (), 10, rngs=nnx.Rngs(0))) for _ in specs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        results = fit_many(
            models, specs, data, epochs=3, batch_size=16, quiet=True, log_every=1,
            on_nonfinite="record",
        )  # fmt: skip
    assert [r.diverged for r in results] == [False, True]
    assert "run 1 (seed 0)" in results[1].stopped and "at step 6 (epoch 2)" in results[1].stopped
    assert results[1].steps == 5


def _log_of_negative(outputs, targets):
    """A broken loss: not finite whatever the parameters."""
    return jnp.mean(jnp.log(-1.0 - jnp.abs(outputs[:, 0])))


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_group_default_loss_and_a_loss_never_finite(strategy):
    # a regression set: the group trains with the MSE, exactly as with loss="mse"
    data = _regression_data()
    grid = [OptimizerSpec(optax.sgd, learning_rate=lr) for lr in (0.05, 0.1)]
    histories = []
    for kwargs in ({}, {"loss": "mse"}):
        models = [_f64(MLP(10, (4,), 1, rngs=nnx.Rngs(s))) for s in range(2)]
        results = fit_many(
            models, grid, data, epochs=1, batch_size=16, quiet=True, strategy=strategy, **kwargs
        )
        histories.append([[{k: v for k, v in row.items() if k != "time_s"} for row in r.history]
                          for r in results])  # fmt: skip
    assert histories[0] == histories[1] and "test_rmse" in histories[0][0][-1]

    # a loss that is never finite: each run says so, not "lower the learning rate"; without
    # an epoch-0 row (eval_every=None) the initial loss is evaluated for the message
    models = [_f64(MLP(10, (4,), 1, rngs=nnx.Rngs(s))) for s in range(2)]
    results = fit_many(
        models, grid, data, epochs=1, batch_size=16, quiet=True, strategy=strategy,
        loss=_log_of_negative, seeds=[3, 4], eval_every=None, on_nonfinite="record",
    )  # fmt: skip
    for run, result in enumerate(results):
        assert result.stopped.startswith(
            f"run {run} (seed {3 + run}): non-finite loss at step 1 (epoch 1), already at the "
            "initial parameters: this run stopped and keeps its initial parameters; the other "
            "runs went on. A lower learning rate will not help"
        )
        assert "loss=_log_of_negative" in result.stopped and "Lower" not in result.stopped
        assert result.steps == 0
