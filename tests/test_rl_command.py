"""``inna-jax egn-rl`` end to end on a tiny setting: tables, curves, figures and flags."""

import csv
import json

import pytest

from inna_jax import cli


def test_egn_rl_command_writes_tables_and_figures(tmp_path, capsys):
    code = cli.main(
        [
            "egn-rl", "--out", str(tmp_path), "--seeds", "2",
            "--lqr-models", "quadratic", "--lqr-methods", "egn", "sgd",
            "--lqr-steps", "40", "--lqr-first-order-factor", "2", "--lqr-chunks", "4",
            "--lqr-target-periods", "10",
            "--lqr-egn-lr", "0.5", "--lqr-sgd-lr", "0.01", "0.03",
            "--envs", "CartPole-v1", "--dqn-updates", "40", "--dqn-chunks", "2",
            "--dqn-num-envs", "4", "--dqn-methods", "egn", "--dqn-batch-size", "8",
            "--dqn-buffer-size", "256",
            "--dqn-learning-starts", "32", "--dqn-egn-lr", "0.3", "--dqn-adam-lr", "1e-3",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "jax 0." in printed and "cores" in printed  # self-describing
    for name in ("lqr_table.csv", "lqr_table.json", "lqr_curves.csv", "lqr_curves.png",
                 "dqn_table.csv", "dqn_table.json", "dqn_curves.csv", "dqn_returns.png",
                 "summary.json"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    lqr = json.loads((tmp_path / "lqr_table.json").read_text())
    assert [(r["model"], r["method"]) for r in lqr] == [("quadratic", "EGN"), ("quadratic", "SGD")]
    assert [r["steps"] for r in lqr] == [40, 80]  # SGD takes 2x the steps
    assert [r["target_period"] for r in lqr] == [10, 10]
    assert all(0 < r["final_mean"] < 1 and r["seconds"] > 0 for r in lqr), lqr
    with open(tmp_path / "lqr_curves.csv") as f:
        curves = list(csv.DictReader(f))
    # EGN: 1 lr x 2 seeds x 5 points; SGD: 2 lrs x 2 seeds x 9 points (every 10 steps)
    assert len(curves) == 10 + 36
    dqn = json.loads((tmp_path / "dqn_table.json").read_text())
    assert [(r["env"], r["method"]) for r in dqn] == [("CartPole-v1", "EGN")]
    assert all(r["env_steps"] == 32 + 40 * 4 and r["updates"] == 40 for r in dqn)
    assert all(8 < r["final_return_mean"] < 500 for r in dqn), dqn  # CartPole returns
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lqr"]["c"] > 0 and len(summary["lqr"]["P"]) == 4


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--seeds", "0"], "--seeds"),
        (["--lqr-egn-lr", "-1"], "--lqr-egn-lr"),
        (["--envs", "Pong"], "--envs"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["egn-rl", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["egn-rl", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--minatar", "--lqr-steps", "--dqn-updates", "--egn-regularizer", "--out"):
        assert flag in out
