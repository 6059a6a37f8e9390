"""The ``inna-jax egn`` experiment end to end on a tiny setting: files, table and CLI."""

import json

import pytest

from inna_jax import cli
from inna_jax.reproduce import egn


def test_run_writes_table_curves_and_histories(tmp_path, monkeypatch):
    from inna_jax.reproduce import protocol

    calls = []
    original = protocol.train_group

    def spy(data, make_model, specs, seeds, **kwargs):
        calls.append((len(specs), len({s.family for s in specs}), list(seeds)))
        return original(data, make_model, specs, seeds, **kwargs)

    monkeypatch.setattr(protocol, "train_group", spy)
    rows = egn.run(
        out=tmp_path,
        datasets=("diabetes",),
        seeds=2,
        epochs={"diabetes": 1},
        batch_size=64,
        egn_learning_rates=(0.3, 1.0),
        sgn_learning_rates=(1.0,),
        sgd_grid=(1e-2,),
        adam_grid=(1e-3,),
    )
    # one group per method: its rates x seeds, of one optimizer family
    assert calls == [
        (4, 1, [0, 1, 0, 1]), (4, 1, [0, 1, 0, 1]), (2, 1, [0, 1]), (2, 1, [0, 1]),
        (2, 1, [0, 1]),
    ]  # fmt: skip
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
    assert len(history) == 1 + 14 * 2  # 4 + 4 + 2 + 2 + 2 runs, epochs 0 and 1


def test_cli_help_and_bad_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["egn", "--help"])
    assert exit_info.value.code == 0
    assert "--full" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown dataset"):
        egn.load("iris")


def test_no_data_set_left_is_a_clear_error(tmp_path, monkeypatch, capsys):
    # as when California is not on disk
    monkeypatch.setattr(egn, "load", lambda name, num_samples=None: None)
    with pytest.raises(ValueError, match="no data set left to run: california: not on disk"):
        egn.run(out=tmp_path, datasets=("california",))
    assert cli.main(["egn", "--datasets", "california", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("inna-jax egn: error: --datasets: no data set left to run")


def test_breast_cancer_and_a_larger_mnist1d_through_the_cli(tmp_path, capsys):
    # wine takes the same path as breast-cancer (registry.load_dataset, a classification
    # MLP): egn.load gives its split here; tests/test_datasets.py checks the loader itself
    wine = egn.load("wine")
    assert (len(wine.x_train), len(wine.x_test), wine.num_classes) == (134, 44, 3)
    out = tmp_path / "egn"
    status = cli.main([
        "egn", "--datasets", "breast_cancer", "mnist1d", "--num-samples", "200",
        "--seeds", "1", "--epochs", "1", "--batch-size", "64", "--egn-lr", "1",
        "--sgn-lr", "1", "--sgd-lr", "0.01", "0.1", "--adam-lr", "0.001", "--out", str(out),
    ])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"] == {
        "breast_cancer": {"train": 427, "test": 142, "classes": 2},
        "mnist1d": {"train": 160, "test": 40, "classes": 10},
    }
    assert summary["num_samples_mnist1d"] == 200 and summary["sgd_grid"] == [0.01, 0.1]
    assert summary["machine"]["cores"] > 0 and summary["machine"]["jax"]
    rows = json.loads((out / "table.json").read_text())
    assert [r["dataset"] for r in rows] == ["breast_cancer"] * 5 + ["mnist1d"] * 5
    assert all(r["metric"] == "test_accuracy" and 0 <= r["final_mean"] <= 1 for r in rows)
    # every SGD row picked 0.01 or 0.1, both ends of its two-value grid: each is flagged
    sgd = [r for r in rows if r["method"].startswith("SGD")]
    for r in sgd:
        assert f"note: {r['dataset']} {r['method']} is at the edge of its grid" in printed
    assert printed.count("at the edge") == len(sgd)  # one-value grids have no edge
