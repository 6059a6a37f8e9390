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
