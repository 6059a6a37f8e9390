"""The ``inna-jax egn`` experiment end to end on a tiny setting: files, table and CLI."""

import json

import pytest

from inna_jax import cli
from inna_jax.reproduce import egn


def test_run_writes_table_curves_and_histories(tmp_path):
    rows = egn.run(
        out=tmp_path,
        datasets=("diabetes",),
        seeds=1,
        epochs={"diabetes": 1},
        batch_size=64,
        egn_learning_rates=(1.0,),
        sgn_learning_rates=(1.0,),
        sgd_grid=(1e-2,),
        adam_grid=(1e-3,),
    )
    assert [r["method"].split()[0] for r in rows] == ["EGN", "EGN+LM", "SGN", "SGD", "ADAM"]
    assert all(r["metric"] == "test_rmse" and r["final_mean"] > 0 for r in rows)
    assert all(r["steps"] == 332 // 64 and r["stopped"] == 0 for r in rows)
    for name in ("egn_curves.png", "table.csv", "table.json", "histories.csv", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "table.json").read_text()) == rows
    history = (tmp_path / "histories.csv").read_text().splitlines()
    assert history[0].split(",") == [
        "dataset", "method", "learning_rate", "seed", "epoch", "step", "time_s", "train_loss",
        "metric", "value",
    ]  # fmt: skip
    assert len(history) == 1 + 5 * 2  # five runs, epochs 0 and 1


def test_cli_help_and_bad_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["egn", "--help"])
    assert exit_info.value.code == 0
    assert "--full" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown dataset"):
        egn.load("iris")
