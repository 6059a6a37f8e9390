"""``inna-jax train``: the command-line face of fit, with its output files and errors."""

import json

import numpy as np
import pytest
from flax import nnx

from inna_jax import cli
from inna_jax.cli import build_parser
from inna_jax.reproduce.cli_args import UsageError
from inna_jax.reproduce.registry import make_optimizer
from inna_jax.reproduce.train import run


def test_train_command_writes_metrics_summary_and_figure(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--dataset",
            "digits",
            "--num-train",
            "128",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--devices",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert args._module.main(args) == 0
    printed = capsys.readouterr().out
    assert "processes=1 devices=2 epoch=2 step=8" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["devices"] == 2 and summary["steps"] == 8 and summary["stopped"] is None
    assert summary["final"] == rows[-1] and [r["epoch"] for r in rows] == [0, 1, 2]
    assert (tmp_path / "metrics.csv").exists()
    assert (tmp_path / "train.png").read_bytes()[:4] == b"\x89PNG"

    # the same run on one device, through run(): the same metrics to 1e-5
    one = run(
        dataset="digits",
        num_train=128,
        model="mlp",
        epochs=2,
        batch_size=32,
        out=tmp_path / "one",
        quiet=True,
    )
    for a, b in zip(one.history, rows, strict=True):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)


def test_regression_uses_mse_and_rmse(tmp_path):
    result = run(
        dataset="diabetes",
        epochs=1,
        batch_size=32,
        out=tmp_path,
        quiet=True,
        optimizer="sgd",
        learning_rate=0.05,
    )
    assert "test_rmse" in result.history[-1]
    assert result.history[-1]["test_rmse"] < result.history[0]["test_rmse"]


def test_bad_choices_raise(tmp_path):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match="needs data_dir"):
        run(dataset="cifar100", out=tmp_path)
    with pytest.raises(UsageError, match="model='cnn' takes digits or mnist1d"):
        run(dataset="diabetes", model="cnn", out=tmp_path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "-1"], "argument --epochs: must be an integer >= 0, got '-1'"),
        (["--lr", "-1"], "argument --lr: must be a finite number > 0, got '-1'"),
        (["--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
        (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
        (["--batch-size", "5000"], "--batch-size) must be at most the 1348 training examples"),
        (["--devices", "99"], "--devices 99: JAX sees only 8 device(s) on this machine; on a CPU"),
        (["--dataset", "cifar100"], "--dataset cifar100 needs --data-dir"),
        (["--dataset", "cifar100", "--data-dir", "/nonexistent"], "CIFAR-100 not found"),
        (["--optimizer", "lion"], "argument --optimizer: unknown value 'lion'; choose from"),
        (["--optimizer", "innaprop", "--lr", "1"], "learning_rate must be < beta in INNAprop"),
        (["--optimizer", "adam", "--alpha", "0.3"], "--optimizer adam takes no --alpha"),
        (["--weight-decay", "0.1"], "--optimizer inna takes no --weight-decay"),
        (["--regularizer", "0"], "argument --regularizer: must be a finite number > 0, got '0'"),
        (
            ["--line-search", "maybe"],
            "argument --line-search: unknown value 'maybe'; choose from on, off",
        ),
        (
            ["--optimizer", "adam", "--regularizer", "0.1"],
            "--optimizer adam takes no --regularizer",
        ),
        (["--optimizer", "sgd", "--line-search", "off"], "--optimizer sgd takes no --line-search"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(argv, message, tmp_path, capsys):
    try:
        status = cli.main(["train", *argv, "--out", str(tmp_path), "--quiet"])
    except SystemExit as exit_info:  # argparse's own errors
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_optimizer_names_are_case_insensitive(tmp_path, capsys):
    args = build_parser("train").parse_args(
        ["train", "--optimizer", "SGD", "--dataset", "Digits", "--num-train", "64",
         "--epochs", "1", "--out", str(tmp_path), "--quiet"]
    )  # fmt: skip
    assert args.optimizer == "sgd" and args.dataset == "digits"
    assert args._module.main(args) == 0
    assert "epoch=1" in capsys.readouterr().out


def test_train_innaprop_through_the_registry(tmp_path, capsys):
    argv = (
        "train --optimizer INNAprop --lr 0.003 --beta 0.8 --model mlp --num-train 64 "
        "--epochs 1 --quiet --out"
    ).split() + [str(tmp_path)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer"] == "innaprop" and summary["learning_rate"] == 0.003
    # --beta given, --alpha and --weight-decay left to INNAprop's defaults
    assert (summary["alpha"], summary["beta"], summary["weight_decay"]) == (0.1, 0.8, 0.01)
    assert "decay_power" not in summary  # a constant step, like Adam
    assert (
        summary["final"]["train_loss"]
        < json.loads((tmp_path / "metrics.json").read_text())[0]["train_loss"]
    )


def _digits_run(tmp_path, *flags):
    argv = ["train", "--model", "mlp", "--num-train", "64", "--batch-size", "16", "--epochs", "1",
            "--quiet", "--out", str(tmp_path), *flags]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "train.png").exists()
    assert summary["steps"] == 4 and summary["stopped"] is None and summary["final"] == rows[-1]
    assert [r["epoch"] for r in rows] == [0, 1]
    return summary, rows


def test_train_egn_through_the_command_line_is_inna_jax_egn(tmp_path):
    import inna_jax
    from inna_jax.reproduce import registry
    from inna_jax.train import fit

    summary, rows = _digits_run(
        tmp_path,
        "--optimizer",
        "EGN",
        "--lr",
        "0.3",
        "--regularizer",
        "0.5",
        "--line-search",
        "off",
    )
    assert (summary["optimizer"], summary["learning_rate"]) == ("egn", 0.3)
    assert (summary["regularizer"], summary["line_search"]) == (0.5, False)
    assert "decay_power" not in summary
    # the same run with inna_jax.egn built by hand: the same step (lambda 0.5, step 0.3, no
    # line search) on the same model, loss and batches
    data = registry.load_dataset("digits", num_train=64)
    model = registry.make_model("mlp", data, 0)
    graphdef, _ = nnx.split(model, nnx.Param)
    tx = inna_jax.egn(
        lambda p, x: nnx.merge(graphdef, p)(x), "cross_entropy", learning_rate=0.3,
        regularizer=0.5, line_search=False,
    )  # fmt: skip
    ref = fit(model, tx, data, epochs=1, batch_size=16, loss="cross_entropy", quiet=True)
    for a, b in zip(rows, ref.history, strict=True):
        for key in ("train_loss", "test_loss", "test_accuracy"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_train_sgn_through_the_command_line_with_its_defaults(tmp_path):
    summary, rows = _digits_run(tmp_path, "--optimizer", "sgn")  # --lr 0.1 caps the step
    assert summary["optimizer"] == "sgn"
    assert (summary["regularizer"], summary["line_search"]) == (1e-3, True)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
