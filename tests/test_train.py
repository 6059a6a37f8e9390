"""The training loop against NumPy transcriptions of the same runs (same seeded batches)."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import inna_jax
from inna_jax.data import ArrayDataset, batch_at_step, load_diabetes, load_digits
from inna_jax.models import MLP
from inna_jax.train import fit


def _small_digits(n_train=200, n_test=100):
    d = load_digits()
    return d._replace(
        x_train=d.x_train[:n_train],
        y_train=d.y_train[:n_train],
        x_test=d.x_test[:n_test],
        y_test=d.y_test[:n_test],
    )


def _linear_params(model):
    layer = model.layers[-1]
    return np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)


def _softmax_ce(W, c, x, y):
    logits = x @ W + c
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def _softmax_ce_grad(W, c, x, y):
    logits = x @ W + c
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return x.T @ p / len(y), p.mean(0)


def test_sgd_matches_numpy_softmax_regression():
    data = _small_digits()
    model = MLP(64, (), 10, rngs=nnx.Rngs(1))
    W, c = _linear_params(model)
    lr, b, seed, epochs = 0.2, 32, 5, 2
    x, y = data.x_train.astype(np.float64), data.y_train
    ref_rows = [(_softmax_ce(W, c, x, y), W.copy(), c.copy())]
    m = len(x) // b
    for k in range(epochs * m):
        idx = batch_at_step(len(x), b, seed=seed, step=k)
        gW, gc = _softmax_ce_grad(W, c, x[idx], y[idx])
        W, c = W - lr * gW, c - lr * gc
        if (k + 1) % m == 0:
            ref_rows.append((_softmax_ce(W, c, x, y), W.copy(), c.copy()))

    result = fit(model, optax.sgd(lr), data, epochs=epochs, batch_size=b, seed=seed, quiet=True)
    W_fit, c_fit = _linear_params(model)
    np.testing.assert_allclose(W_fit, W, atol=1e-5)
    np.testing.assert_allclose(c_fit, c, atol=1e-5)
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert [r["step"] for r in result.history] == [0, m, 2 * m]
    assert result.steps == 2 * m and result.stopped is None
    xt = data.x_test.astype(np.float64)
    for row, (train_loss, Wr, cr) in zip(result.history, ref_rows, strict=True):
        assert set(row) == {"epoch", "step", "train_loss", "test_loss", "test_accuracy", "time_s"}
        np.testing.assert_allclose(row["train_loss"], train_loss, rtol=1e-5)
        np.testing.assert_allclose(
            row["test_loss"], _softmax_ce(Wr, cr, xt, data.y_test), rtol=1e-5
        )
        acc = np.mean(np.argmax(xt @ Wr + cr, 1) == data.y_test)
        assert row["test_accuracy"] == pytest.approx(acc, abs=1e-12)


def test_mse_regression_matches_numpy_and_reports_rmse(tmp_path):
    d = load_diabetes()
    data = d._replace(x_train=d.x_train[:96], y_train=d.y_train[:96])
    model = MLP(10, (), 1, rngs=nnx.Rngs(0))
    W, c = _linear_params(model)
    lr, b = 0.1, 16
    x, y = data.x_train.astype(np.float64), data.y_train.astype(np.float64)
    for k in range(len(x) // b):
        idx = batch_at_step(len(x), b, seed=0, step=k)
        r = (x[idx] @ W + c)[:, 0] - y[idx]  # loss = mean of (1/2) r^2
        W, c = W - lr * (x[idx].T @ r[:, None]) / b, c - lr * np.array([r.mean()])
    result = fit(
        model, optax.sgd(lr), data, epochs=1, batch_size=b, loss="mse", quiet=True, out_dir=tmp_path
    )
    W_fit, c_fit = _linear_params(model)
    np.testing.assert_allclose(W_fit, W, atol=1e-5)
    np.testing.assert_allclose(c_fit, c, atol=1e-5)
    row = result.history[-1]
    assert "test_rmse" in row and "test_accuracy" not in row
    rt = (data.x_test @ W + c)[:, 0] - data.y_test
    np.testing.assert_allclose(row["test_rmse"], np.sqrt(np.mean(rt**2)), rtol=1e-5)
    np.testing.assert_allclose(row["test_loss"], np.mean(0.5 * rt**2), rtol=1e-5)
    rows = json.loads((tmp_path / "metrics.json").read_text())
    with open(tmp_path / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(rows) == len(csv_rows) == 2
    for j, c_row in zip(rows, csv_rows, strict=True):
        assert {k: float(v) for k, v in c_row.items()} == pytest.approx(j)


def test_inna_matches_numpy_transcription():
    data = _small_digits(96, 40)
    model = MLP(64, (), 10, rngs=nnx.Rngs(2))
    W, c = _linear_params(model)
    lr, alpha, beta, b = 0.1, 0.5, 0.1, 32
    x, y = data.x_train.astype(np.float64), data.y_train
    theta = [W, c]
    psi = [(1 - alpha * beta) * t for t in theta]  # initial speed s = beta (the default)
    for k in range(2 * (len(x) // b)):
        idx = batch_at_step(len(x), b, seed=0, step=k)
        g = list(_softmax_ce_grad(theta[0], theta[1], x[idx], y[idx]))
        phi = [(1 / beta - alpha) * t - p / beta for t, p in zip(theta, psi, strict=True)]
        theta = [t + lr * (f - beta * gi) for t, f, gi in zip(theta, phi, g, strict=True)]
        psi = [p + lr * f for p, f in zip(psi, phi, strict=True)]
    fit(model, inna_jax.inna(lr, alpha, beta), data, epochs=2, batch_size=b, quiet=True)
    W_fit, c_fit = _linear_params(model)
    np.testing.assert_allclose(W_fit, theta[0], atol=1e-5)
    np.testing.assert_allclose(c_fit, theta[1], atol=1e-5)


def _input_recorder() -> optax.GradientTransformationExtraArgs:
    """A no-op update whose state sums |inputs| and the targets it is given (as EGN gets them)."""

    def init(params):
        return (jnp.zeros(()), jnp.zeros(()))

    def update(updates, state, params=None, *, inputs, targets, **extra):
        assert params is not None
        zeros = jax.tree.map(jnp.zeros_like, updates)
        return zeros, (state[0] + jnp.sum(jnp.abs(inputs)), state[1] + jnp.sum(targets))

    return optax.GradientTransformationExtraArgs(init, update)


def test_the_optimizer_always_gets_the_batch():
    data = _small_digits(64, 20)
    model = MLP(64, (), 10, rngs=nnx.Rngs(0))
    before = _linear_params(model)
    result = fit(model, _input_recorder(), data, epochs=1, batch_size=16, quiet=True)
    sx = sy = 0.0
    for k in range(4):
        idx = batch_at_step(64, 16, seed=0, step=k)
        sx += np.abs(data.x_train[idx].astype(np.float64)).sum()
        sy += data.y_train[idx].sum()
    np.testing.assert_allclose(float(result.opt_state[0]), sx, rtol=1e-5)
    assert float(result.opt_state[1]) == sy
    np.testing.assert_array_equal(_linear_params(model)[0], before[0])


def test_extra_args_is_a_deprecated_no_op():
    data = _small_digits(64, 20)
    runs = []
    for extra in (None, True, False):
        model = MLP(64, (), 10, rngs=nnx.Rngs(0))
        kwargs = {} if extra is None else {"extra_args": extra}
        if extra is None:
            fit(model, optax.sgd(0.1), data, epochs=1, batch_size=16, quiet=True, **kwargs)
        else:
            with pytest.warns(DeprecationWarning, match="extra_args=.*no effect"):
                fit(model, optax.sgd(0.1), data, epochs=1, batch_size=16, quiet=True, **kwargs)
        runs.append(_linear_params(model)[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def _inf_at(step: int, lr: float = 0.1) -> optax.GradientTransformation:
    """SGD whose update at step ``step`` (counted from 0) is +inf."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        bad = count == step
        out = jax.tree.map(lambda g: jnp.where(bad, jnp.inf, -lr * g), updates)
        return out, count + 1

    return optax.GradientTransformation(init, update)


def test_nonfinite_update_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = _small_digits(64, 20)  # 4 steps per epoch with batch 16
    ref = MLP(64, (), 10, rngs=nnx.Rngs(0))
    fit(ref, optax.sgd(0.1), data, epochs=1, batch_size=16, quiet=True)  # steps 0..3
    model = MLP(64, (), 10, rngs=nnx.Rngs(0))
    with pytest.warns(RuntimeWarning, match="non-finite") as record:
        result = fit(
            model,
            _inf_at(4),
            data,
            epochs=3,
            batch_size=16,
            quiet=True,
            checkpoint_dir=tmp_path / "ckpt",
            checkpoint_every=2,
            log_every=1,
        )
    msg = str(record[0].message)
    assert result.diverged and result.stopped == msg
    assert "step 5 (epoch 2)" in msg and "the last good checkpoint is step 4" in msg
    assert result.steps == 4
    np.testing.assert_array_equal(_linear_params(model)[0], _linear_params(ref)[0])
    assert all(np.isfinite(_linear_params(model)[0]).ravel())
    saved = sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit())
    assert saved == [2, 4]
    assert [r["epoch"] for r in result.history] == [0, 1]


def test_nonfinite_loss_raises_when_asked():
    data = _small_digits(64, 20)
    x = data.x_train.copy()
    x[7, 3] = np.nan  # one corrupt example: the loss of the batch holding it is NaN
    first = next(k for k in range(4) if 7 in batch_at_step(64, 16, seed=0, step=k))
    model = MLP(64, (), 10, rngs=nnx.Rngs(0))
    with pytest.raises(FloatingPointError, match=f"at step {first + 1} \\(epoch 1\\)"):
        fit(
            model,
            optax.sgd(0.1),
            data._replace(x_train=x),
            epochs=1,
            batch_size=16,
            quiet=True,
            on_nonfinite="raise",
        )
    assert all(np.isfinite(_linear_params(model)[0]).ravel())


class _DropoutNet(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(64, 10, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(self.dense(x))


def test_dropout_model_trains_and_evaluates_deterministically():
    data = _small_digits(64, 40)
    model = _DropoutNet(nnx.Rngs(0))
    result = fit(model, optax.sgd(0.1), data, epochs=1, batch_size=32, quiet=True)
    W = np.asarray(model.dense.kernel[...], np.float64)
    cb = np.asarray(model.dense.bias[...], np.float64)
    xt = data.x_test.astype(np.float64)
    # evaluation runs without dropout: the metrics are those of the plain linear map
    np.testing.assert_allclose(
        result.history[-1]["test_loss"], _softmax_ce(W, cb, xt, data.y_test), rtol=1e-5
    )
    assert not model.drop.deterministic  # the model itself is left in training mode


def _bits(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def test_step_keeps_the_same_state_with_a_branch_or_with_selects():
    # the CPU's step keeps or drops the new state with one lax.cond, accelerators' with a
    # jnp.where per array: the same bits, through a dropout key and a non-finite stop
    from inna_jax.train._step import TrainState, make_step

    data = _small_digits(64, 20)
    graphdef, params, rest = nnx.split(_DropoutNet(nnx.Rngs(0)), nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    tx = _inf_at(3)
    finals = []
    for branch in (False, True):
        step = jax.jit(make_step(graphdef, tx, "cross_entropy", branch=branch))
        state = TrainState(params, rest, tx.init(params), True, np.int32(-1), np.int32(0))
        oks = []
        for k in range(5):
            lo = 16 * (k % 4)
            state, (_, ok, _) = step(state, data.x_train[lo : lo + 16], data.y_train[lo : lo + 16])
            oks.append(bool(ok))
        assert oks == [True, True, True, False, False] and int(state.bad_step) == 3
        finals.append([np.asarray(_bits(x)).tobytes() for x in jax.tree.leaves(state)])
    assert finals[0] == finals[1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"loss": "hinge"}, "loss"),
        ({"on_nonfinite": "ignore"}, "on_nonfinite"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    data = _small_digits(64, 20)
    args = {"epochs": 1, "batch_size": 16, "quiet": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit(MLP(64, (), 10, rngs=nnx.Rngs(0)), optax.sgd(0.1), data, **args)


def test_array_dataset_type_is_accepted_as_is():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    data = ArrayDataset(x[:32], y[:32], x[32:], y[32:], num_classes=2, name="toy")
    model = MLP(3, (), 1, rngs=nnx.Rngs(0))
    result = fit(
        model, optax.sgd(0.5), data, epochs=3, batch_size=8, quiet=True, loss="binary_cross_entropy"
    )
    W, c = _linear_params(model)
    acc = np.mean(((data.x_test @ W + c)[:, 0] > 0) == data.y_test)
    assert result.history[-1]["test_accuracy"] == pytest.approx(acc, abs=1e-12)


# --- what fit checks before its first step --------------------------------------------------


def _refuse_to_run() -> optax.GradientTransformation:
    """An optimizer that fails if it is ever initialised or stepped: the checks come first."""

    def never(*args, **kwargs):
        raise AssertionError("the optimizer was used before the checks refused the run")

    return optax.GradientTransformation(never, never)


def test_default_loss_follows_the_data_sets_task():
    # the case: an MLP with one output on diabetes, Adam, the default loss. It trains
    # with the MSE (it used to be the cross-entropy of one logit: NaN) and reports the RMSE.
    import warnings

    data = load_diabetes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no non-finite warning, no other warning
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes dtypes under x64
            result = fit(
                MLP(10, (32,), 1, rngs=nnx.Rngs(0)), optax.adam(1e-3), data, epochs=1,
                batch_size=32, quiet=True,
            )  # fmt: skip
    assert result.stopped is None and np.isfinite(result.history[-1]["train_loss"])
    assert "test_rmse" in result.history[-1] and "test_accuracy" not in result.history[-1]

    # the default is exactly loss="mse", whose epoch-0 value is the NumPy mean of r^2 / 2
    small = data._replace(x_train=data.x_train[:96], y_train=data.y_train[:96])
    runs = []
    for kwargs in ({}, {"loss": "mse"}):
        model = MLP(10, (), 1, rngs=nnx.Rngs(0))
        W, c = _linear_params(model)
        runs.append(
            fit(model, optax.sgd(0.1), small, epochs=1, batch_size=16, quiet=True, **kwargs)
        )
    r = (small.x_train.astype(np.float64) @ W + c)[:, 0] - small.y_train
    np.testing.assert_allclose(runs[0].history[0]["train_loss"], np.mean(0.5 * r**2), rtol=1e-6)
    untimed = [[{k: v for k, v in row.items() if k != "time_s"} for row in r.history] for r in runs]
    assert untimed[0] == untimed[1]

    # a classification set: the cross-entropy, as with loss="cross_entropy"
    digits = _small_digits(64, 20)
    model = MLP(64, (), 10, rngs=nnx.Rngs(3))
    W, c = _linear_params(model)
    row = fit(model, optax.sgd(0.1), digits, epochs=0, batch_size=16, quiet=True).history[0]
    x = digits.x_train.astype(np.float64)
    np.testing.assert_allclose(row["train_loss"], _softmax_ce(W, c, x, digits.y_train), rtol=1e-6)
    assert "test_accuracy" in row


def test_default_loss_of_a_users_own_array_dataset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    # float targets, no num_classes: a regression set, trained with the MSE
    values = ArrayDataset(x[:32], x[:32, 0] * 2.0, x[32:], x[32:, 0] * 2.0)
    assert (values.num_classes, values.task, values.name) == (0, "regression", "data")
    model = MLP(3, (), 1, rngs=nnx.Rngs(0))
    W, c = _linear_params(model)
    row = fit(model, optax.sgd(0.1), values, epochs=0, batch_size=8, quiet=True).history[0]
    r = (values.x_train.astype(np.float64) @ W + c)[:, 0] - values.y_train
    np.testing.assert_allclose(row["train_loss"], np.mean(0.5 * r**2), rtol=1e-6)
    assert "test_rmse" in row

    # two classes and one logit: the binary cross-entropy, as with it given explicitly
    y = (x[:, 0] > 0).astype(np.int32)
    labels = ArrayDataset(x[:32], y[:32], x[32:], y[32:])
    assert (labels.num_classes, labels.task) == (2, "classification")
    model = MLP(3, (), 1, rngs=nnx.Rngs(0))
    W, c = _linear_params(model)
    row = fit(model, optax.sgd(0.5), labels, epochs=0, batch_size=8, quiet=True).history[0]
    z = (labels.x_train.astype(np.float64) @ W + c)[:, 0]
    bce = np.mean(np.logaddexp(0.0, z) - labels.y_train * z)  # -y log s(z) - (1-y) log(1-s(z))
    np.testing.assert_allclose(row["train_loss"], bce, rtol=1e-6)
    assert "test_accuracy" in row


def _with_nan_target(data):
    y = data.y_train.copy()
    y[3] = np.nan
    return data._replace(y_train=y)


@pytest.mark.parametrize(
    "case, outputs, kwargs, match",
    [
        ("digits", 10, {"loss": "mse"},
         r"loss='mse' needs targets shaped like the model's outputs, \(64, 10\) here, got "
         r"data.y_train of shape \(64,\); for class labels pass loss='cross_entropy'"),
        ("diabetes", 1, {"loss": "cross_entropy"},
         r"loss='cross_entropy' needs a model with C >= 2 outputs .* got outputs of per-example "
         r"shape \(1,\)"),
        ("diabetes", 3, {"loss": "cross_entropy"},
         r"loss='cross_entropy' needs integer class labels in \[0, 3\) .* got data.y_train of "
         r"dtype float32"),
        ("digits", 5, {},
         r"loss='cross_entropy' \(fit's default for a classification set, data.num_classes=10\) "
         r"needs class labels in \[0, 5\) .* got data.y_train with labels in \[0, 9\]"),
        ("int regression", 1, {},
         r"loss='mse' \(fit's default for a regression set, data.num_classes=0\) needs float "
         r"targets, got data.y_train of dtype int32"),
        ("nan targets", 1, {}, r"loss='mse' .* needs finite targets, got data.y_train holding NaN"),
        ("digits", 1, {"loss": "binary_cross_entropy"},
         r"loss='binary_cross_entropy' needs targets in \[0, 1\] .* got data.y_train with values "
         r"in \[0, 9\]"),
        ("short y_test", 10, {},
         r"data.y_test must hold one target per example of data.x_test \(20\), got 19"),
    ],
)  # fmt: skip
def test_targets_are_checked_against_the_loss_before_the_first_step(case, outputs, kwargs, match):
    digits = _small_digits(64, 20)
    d = load_diabetes()
    diabetes = d._replace(x_train=d.x_train[:64], y_train=d.y_train[:64])
    data = {
        "digits": digits,
        "diabetes": diabetes,
        "int regression": diabetes._replace(y_train=np.arange(64, dtype=np.int32)),
        "nan targets": _with_nan_target(diabetes),
        "short y_test": digits._replace(y_test=digits.y_test[:19]),
    }[case]
    model = MLP(data.x_train.shape[1], (), outputs, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match) as info:
        fit(model, _refuse_to_run(), data, epochs=1, batch_size=16, quiet=True, **kwargs)
    assert "\n" not in str(info.value)


def _gauss_newton_setup():
    d = load_diabetes()
    data = d._replace(x_train=d.x_train[:32], y_train=d.y_train[:32])
    model = MLP(10, (4,), 1, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model, nnx.Param)
    return data, model, lambda p, x: nnx.merge(graphdef, p)(x)


def huber_fn(outputs, targets):
    return jnp.mean(optax.huber_loss(outputs[:, 0], targets))


def test_a_gauss_newton_optimizer_with_another_loss_warns():
    import warnings

    from inna_jax.reproduce import registry
    from inna_jax.train import OptimizerSpec
    from inna_jax.train._checks import gauss_newton_loss

    data, model, predict = _gauss_newton_setup()
    train = {"epochs": 0, "batch_size": 16, "quiet": True}
    with pytest.warns(UserWarning) as record:
        fit(model, inna_jax.egn(predict, "mse"), data, loss=huber_fn, **train)
    (warning,) = record
    assert str(warning.message) == (
        "the optimizer egn minimises its own loss 'mse' (egn(..., loss='mse')), but fit reports "
        "loss=huber_fn: train_loss and test_loss are then not what egn minimises; give fit and "
        "egn the same loss"
    )
    assert warning.filename == __file__  # it points at the call of fit
    # the same loss, given or by default (a regression set): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(model, inna_jax.egn(predict, "mse"), data, loss="mse", **train)
        fit(model, inna_jax.sgn(predict, "mse"), data, **train)
        fit(model, registry.make_optimizer("egn", 1.0, model=model, loss="mse"), data, **train)
    # SGN as an OptimizerSpec, against fit's default loss of a classification set
    digits = _small_digits(32, 20)
    net = MLP(64, (), 10, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(net, nnx.Param)
    spec = OptimizerSpec(inna_jax.sgn, predict_fn=lambda p, x: nnx.merge(graphdef, p)(x),
                         loss="binary_cross_entropy", learning_rate=1.0)  # fmt: skip
    expected = (
        r"sgn minimises its own loss 'binary_cross_entropy'.* fit reports loss='cross_entropy' "
        r"\(fit's default for a classification set, data.num_classes=10\)"
    )
    with pytest.warns(UserWarning, match=expected):
        fit(net, spec, digits, **train)

    # what is recognised: EGN and SGN, plain or as specs (the registry's too); nothing else
    assert gauss_newton_loss(inna_jax.egn(predict, "cross_entropy")) == ("egn", "cross_entropy")
    assert gauss_newton_loss(inna_jax.sgn(predict)) == ("sgn", "mse")
    assert gauss_newton_loss(spec) == ("sgn", "binary_cross_entropy")
    lm = registry.make_optimizer("egn_lm", 1.0, model=model, loss="cross_entropy")
    assert gauss_newton_loss(lm) == ("egn", "cross_entropy")
    for other in (
        optax.adam(1e-3),
        inna_jax.inna(0.1),
        OptimizerSpec(optax.sgd, learning_rate=0.1),
    ):
        assert gauss_newton_loss(other) is None


def test_models_that_are_not_flax_nnx_modules_are_refused():
    import equinox as eqx
    import flax.linen as nn

    from inna_jax.train import fit_many

    data = _small_digits(64, 20)
    others = {
        "equinox.nn._mlp.MLP": eqx.nn.MLP(64, 10, 8, 1, key=jax.random.key(0)),
        "flax.linen.linear.Dense": nn.Dense(10),
        "builtins.function": lambda x: x,
    }
    for name, model in others.items():
        with pytest.raises(TypeError) as info:
            fit(model, optax.sgd(0.1), data, epochs=1, batch_size=16, quiet=True)
        message = str(info.value)
        assert message.startswith(f"model must be a flax.nnx.Module, got {name}: ")
        assert "see the documentation's guides" in message and "\n" not in message
    with pytest.raises(TypeError, match="models\\[1\\] must be a flax.nnx.Module, got equinox"):
        fit_many([MLP(64, (), 10, rngs=nnx.Rngs(0)), others["equinox.nn._mlp.MLP"]],
                 optax.sgd(0.1), data, epochs=1, batch_size=16)  # fmt: skip


def log_of_negative(outputs, targets):
    """A broken loss: not finite whatever the parameters."""
    return jnp.mean(jnp.log(-1.0 - jnp.abs(outputs[:, 0])))


@pytest.mark.parametrize("eval_every", [1, None])
def test_a_loss_never_finite_is_not_blamed_on_the_learning_rate(eval_every):
    data = _small_digits(64, 20)
    model = MLP(64, (), 10, rngs=nnx.Rngs(0))
    before = _linear_params(model)
    with pytest.warns(RuntimeWarning) as record:
        result = fit(model, optax.sgd(0.1), data, epochs=1, batch_size=16, quiet=True,
                     loss=log_of_negative, eval_every=eval_every)  # fmt: skip
    (warning,) = record
    assert (
        str(warning.message)
        == result.stopped
        == (
            "non-finite loss at step 1 (epoch 1), already at the initial parameters: training "
            "stopped; the model keeps its initial parameters; no checkpoint was written. A lower "
            "learning rate will not help: the loss (loss=log_of_negative), the targets or the "
            "model are likely wrong, or the inputs hold NaN or inf."
        )
    )
    assert result.steps == 0
    np.testing.assert_array_equal(_linear_params(model)[0], before[0])
    # a first update that overflows (the loss was finite): a step-size problem, as before
    with pytest.warns(RuntimeWarning, match="at step 1 \\(epoch 1\\).*Lower the learning rate"):
        fit(MLP(64, (), 10, rngs=nnx.Rngs(0)), _inf_at(0), data, epochs=1, batch_size=16,
            quiet=True, eval_every=eval_every)  # fmt: skip
