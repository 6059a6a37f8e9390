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
    monkeypatch.setattr(egn, "load", lambda name: None)  # as when California is not on disk
    with pytest.raises(ValueError, match="no data set left to run: california: not on disk"):
        egn.run(out=tmp_path, datasets=("california",))
    assert cli.main(["egn", "--datasets", "california", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("inna-jax egn: error: --datasets: no data set left to run")
