"""``inna-jax train``: the command-line face of fit, with its output files."""

import json

import numpy as np
import pytest

from inna_jax.cli import build_parser
from inna_jax.train._command import make_optimizer, run


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
        make_optimizer("lion", 0.1, alpha=0.5, beta=0.1, decay_power=0.5)
    with pytest.raises(ValueError, match="needs data_dir"):
        run(dataset="cifar100", out=tmp_path)
    with pytest.raises(ValueError, match="model='cnn' takes digits or mnist1d"):
        run(dataset="diabetes", model="cnn", out=tmp_path)
