"""The Figure-2 benchmark: the optimizers, the protocol's invariants, and a tiny full run."""

import argparse
import csv
import json
import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax
from inna_jax.models import NiN
from inna_jax.reproduce import figure2
from inna_jax.reproduce.cli_args import UsageError


def test_make_optimizer_steps_match_the_protocol():
    theta = {"w": jnp.array([1.0, -2.0], jnp.float64)}
    g = {"w": jnp.array([0.5, 0.25], jnp.float64)}
    g0 = 0.2
    # SGD: gamma_k = gamma_0 / sqrt(k + 1). (make_optimizer gives an OptimizerSpec.)
    tx = figure2.make_optimizer("SGD", g0).build()
    state = tx.init(theta)
    for k in range(3):
        u, state = tx.update(g, state, theta)
        np.testing.assert_allclose(u["w"], -g0 / np.sqrt(k + 1) * np.asarray(g["w"]), rtol=1e-12)
    # INNA (alpha, beta): Castera et al. (JMLR 2021) Algorithm 1 transcribed in NumPy,
    # psi_0 = (1 - a b) theta_0.
    for method, (a, b) in figure2.INNA_SETTINGS.items():
        tx = figure2.make_optimizer(method, g0).build()
        state, params = tx.init(theta), theta
        t, p = np.asarray(theta["w"]), (1 - a * b) * np.asarray(theta["w"])
        for k in range(3):
            gk = np.asarray(g["w"]) * (k + 1)
            u, state = tx.update({"w": jnp.asarray(gk)}, state, params)
            params = {"w": params["w"] + u["w"]}
            gamma = g0 / np.sqrt(k + 1)
            phi = (1 / b - a) * t - p / b
            t, p = t + gamma * (phi - b * gk), p + gamma * phi
            np.testing.assert_allclose(params["w"], t, rtol=1e-12, err_msg=method)
    # The three INNA settings are one family: one compiled step for all of them.
    families = {figure2.make_optimizer(m, g0).family for m in figure2.INNA_SETTINGS}
    assert len(families) == 1
    # Adam and Adagrad: constant learning rate; Adam's first step is -lr * sign(g).
    tx = figure2.make_optimizer("Adam", g0).build()
    u, _ = tx.update(g, tx.init(theta), theta)
    np.testing.assert_allclose(u["w"], -g0 * np.ones(2), rtol=1e-6)
    tx = figure2.make_optimizer("Adagrad", g0).build()
    u, _ = tx.update(g, tx.init(theta), theta)
    # optax.adagrad: sum of squares starts at 0.1, u = -lr g / sqrt(sum + eps), eps = 1e-7.
    expected = -g0 * np.asarray(g["w"]) / np.sqrt(0.1 + np.asarray(g["w"]) ** 2 + 1e-7)
    np.testing.assert_allclose(u["w"], expected, rtol=1e-6)
    # INNAprop: inna_jax.innaprop (checked against the authors' update in test_innaprop.py)
    # with alpha = 0.1, beta = 0.9, a constant step and no weight decay; one family for all
    # gamma_0, which travels as a value.
    spec = figure2.make_optimizer("INNAprop", g0)
    assert spec.family == figure2.make_optimizer("INNAprop", 0.01).family
    tx, ref = spec.build(), inna_jax.innaprop(g0, 0.1, 0.9, weight_decay=0.0)
    state, ref_state, params = tx.init(theta), ref.init(theta), theta
    for k in range(4):
        gk = {"w": g["w"] * (k + 1)}
        u, state = tx.update(gk, state, params)
        v, ref_state = ref.update(gk, ref_state, params)
        np.testing.assert_allclose(u["w"], v["w"], rtol=1e-12)
        params = {"w": params["w"] + u["w"]}


def test_innaprop_is_a_method_but_not_a_default_one():
    assert "INNAprop" in figure2.METHODS and "INNAprop" not in figure2.DEFAULT_METHODS
    assert figure2.DEFAULT_METHODS == figure2.METHODS[:6]  # the paper's six
    assert figure2.parse_methods("All") == list(figure2.METHODS)
    assert figure2.parse_methods("adam,innaprop") == ["Adam", "INNAprop"]
    assert figure2._parse_grid("innaprop=0.001,0.01") == ("INNAprop", (0.001, 0.01))
    for grids in (figure2.REDUCED_GRIDS, figure2.MNIST1D_GRIDS, figure2.PAPER_GRIDS):
        assert set(grids) == set(figure2.METHODS)
        assert max(grids["INNAprop"]) < 0.9  # INNAprop needs gamma_0 < beta


def test_each_reduced_data_set_has_its_default_grids():
    def grid_of(dataset):
        return figure2._settings(dataset, 1, 1, 32, 1, None, ["SGD", "Adam"])[4]

    assert grid_of("digits") == {m: figure2.REDUCED_GRIDS[m] for m in ("SGD", "Adam")}
    assert grid_of("mnist1d") == {m: figure2.MNIST1D_GRIDS[m] for m in ("SGD", "Adam")}
    assert grid_of("cifar100") == {m: figure2.PAPER_GRIDS[m] for m in ("SGD", "Adam")}


def test_tiny_run_writes_everything(tmp_path):
    out = tmp_path / "fig2"
    grids = {m: [0.05] for m in figure2.METHODS}  # one value each: no grid runs here
    res = figure2.run(
        epochs=1, seeds=1, grid_epochs=1, grids=grids, num_train=96, num_test=64, out=out,
        methods=figure2.METHODS, verbose=False,
    )  # fmt: skip
    for name in (
        "grid.csv", "histories.csv", "table.csv", "table.json", "figure2.png", "summary.json"
    ):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert sorted(res["files"]) == sorted(p.name for p in out.iterdir())
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table] == list(figure2.METHODS)
    with open(out / "table.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == list(figure2.METHODS)
    for r in table:
        assert 0.0 <= r["test_accuracy_min"] <= r["test_accuracy"] <= r["test_accuracy_max"] <= 1
        assert np.isfinite(r["log10_train_loss"]) and r["gamma0"] == 0.05
    # Same initial weights for every method: identical epoch-0 losses; then they differ.
    with open(out / "histories.csv") as f:
        rows = list(csv.DictReader(f))
    start = {r["method"]: float(r["train_loss"]) for r in rows if r["epoch"] == "0"}
    end = {r["method"]: float(r["train_loss"]) for r in rows if r["epoch"] == "1"}
    assert set(start) == set(end) == set(figure2.METHODS)
    assert len(set(start.values())) == 1
    assert len(set(end.values())) == len(figure2.METHODS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["setting"]["reduced"] is True
    assert "REDUCED" in summary["setting"]["label"]
    assert summary["machine"]["cores"] > 0 and summary["machine"]["jax"]  # where it ran


def test_cli_grid_search_and_seeds(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    figure2.add_arguments(parser)
    for action in parser._actions:
        assert action.help, action.dest
    method = "INNA (0.5, 0.1)"
    args = parser.parse_args(
        ["--methods", "inna(0.5,0.1)", "--grid", "Inna (0.5, 0.1)=0.01,0.3", "--epochs", "1",
         "--seeds", "2", "--num-train", "64", "--num-test", "32", "--out", str(tmp_path)]
    )  # fmt: skip
    assert figure2.main(args) == 0
    printed = capsys.readouterr().out
    assert "REDUCED setting" in printed and method in printed
    # The grid search chose the value with the lower training loss.
    with open(tmp_path / "grid.csv") as f:
        grid = list(csv.DictReader(f))
    assert [float(r["gamma0"]) for r in grid] == [0.01, 0.3]
    best = min(grid, key=lambda r: float(r["train_loss"]))
    assert [r["chosen"] for r in grid].count("True") == 1 and best["chosen"] == "True"
    table = json.loads((tmp_path / "table.json").read_text())
    assert [r["method"] for r in table] == [method] and table[0]["seeds"] == 2
    assert table[0]["gamma0"] == float(best["gamma0"])
    # Two seeds: two different initialisations, so a band of nonzero width at epoch 0.
    with open(tmp_path / "histories.csv") as f:
        start = [float(r["train_loss"]) for r in csv.DictReader(f) if r["epoch"] == "0"]
    assert len(start) == 2 and start[0] != start[1]
    assert figure2._split_methods("SGD, INNA (0.5, 0.1),Adam") == [
        "SGD", "INNA (0.5, 0.1)", "Adam"]  # fmt: skip
    with pytest.raises(argparse.ArgumentTypeError, match="METHOD=v1"):
        figure2._parse_grid("Lion=0.1")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["setting"]["grid_epochs"] == 1  # --grid-epochs defaults to at most --epochs


def test_cifar100_wiring(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 4), ("test", 2)):
        split = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": list(range(n)),
            b"coarse_labels": [0] * n,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(split, f, protocol=2)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({}, f, protocol=2)
    data = figure2.load_dataset("cifar100", data_dir=tmp_path, num_train=3)
    assert data.x_train.shape == (3, 32, 32, 3) and data.num_classes == 100
    assert isinstance(figure2.make_model("cifar100", 100, seed=0), NiN)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"dataset": "cifar10"}, "dataset="),
        ({"dataset": "cifar100"}, "needs data_dir"),
        ({"methods": ["RMSprop"]}, "methods must be"),
        ({"epochs": 0}, "epochs="),
        ({"grids": {"SGD": [-0.1]}}, "grid of SGD"),
    ],
)
def test_bad_arguments(kwargs, pattern, tmp_path):
    with pytest.raises(ValueError, match=pattern):
        figure2.run(out=tmp_path, verbose=False, **kwargs)
    with pytest.raises(ValueError, match="gamma0="):
        figure2.make_optimizer("SGD", 0.0)
    with pytest.raises(ValueError, match="method="):
        figure2.make_optimizer("Lion", 0.1)


def test_mnist1d_wiring():
    data = figure2.load_dataset("mnist1d", num_train=50, num_test=20)
    assert data.x_train.shape == (50, 40) and data.x_test.shape == (20, 40)
    model = figure2.make_model("mnist1d", data.num_classes, seed=0)
    assert model(data.x_train).shape == (50, 10)


def test_cli_missing_cifar_is_a_usage_error(tmp_path):
    parser = argparse.ArgumentParser()
    figure2.add_arguments(parser)
    args = parser.parse_args(["--dataset", "cifar100", "--data-dir", str(tmp_path)])
    with pytest.raises(UsageError, match=f"--data-dir {tmp_path}: CIFAR-100 not found") as err:
        figure2.main(args)
    assert "cifar-100-python/train" in str(err.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "cifar100"], "--dataset cifar100 needs --data-dir"),
        (["--methods", "adam,lion"], "--methods: unknown method 'lion'; choose from SGD"),
        (["--epochs", "1", "--grid-epochs", "2"], "--grid-epochs 2 must be at most --epochs 1"),
        (["--seeds", "0"], "argument --seeds: must be an integer >= 1, got '0'"),
        (["--grid", "SGD=0.1,-1"], "argument --grid: values must be finite numbers > 0"),
        (["--batch-size", "5000"], "must be at most the 1348 training examples"),
        (["--devices", "16"], "--devices 16: JAX sees only 8 device(s)"),
        (["--workers", "0"], "argument --workers: must be an integer >= 1, got '0'"),
    ],
)
def test_usage_errors(argv, message, tmp_path, capsys):
    from inna_jax import cli

    try:
        status = cli.main(["figure2", *argv, "--out", str(tmp_path)])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_benchmark_is_an_alias_of_figure2(tmp_path, capsys):
    from inna_jax import cli

    status = cli.main(
        ["benchmark", "--methods", "Adam", "--grid", "adam=0.01", "--epochs", "1", "--seeds",
         "1", "--num-train", "64", "--num-test", "32", "--out", str(tmp_path)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0
    assert captured.err.strip().splitlines()[0] == (
        "inna-jax benchmark: this command is now 'inna-jax figure2' (the old name still works)"
    )
    assert json.loads((tmp_path / "table.json").read_text())[0]["method"] == "Adam"
