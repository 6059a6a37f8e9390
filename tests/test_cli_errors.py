"""One error policy for ``inna-jax``, driven through the real console script.

Every command-line mistake that a newcomer made (issue list of the first-hour review) is run
in a subprocess, on one CPU device (no ``XLA_FLAGS``), and must give exit status 2 and one
line on stderr naming the flag and the bad value, without a traceback. Any other exception
is one line with exit status 1, or its traceback with ``--debug``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inna_jax import cli
from inna_jax.reproduce import figure2

_SCRIPT = Path(sys.executable).parent / "inna-jax"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "inna_jax.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _cases(tmp: Path) -> dict[str, tuple[list[str], int, list[str]]]:
    """name -> (argv, exit status, strings the one stderr line must contain)."""
    missing, empty, a_file = tmp / "missing", tmp / "empty", tmp / "a_file"
    empty.mkdir()
    a_file.write_text("not a folder")
    out = ["--out", str(tmp / "out")]
    return {
        # inna-jax train
        "train epochs": (["train", "--epochs", "-1"], 2, ["--epochs", "'-1'", ">= 0"]),
        "train lr": (["train", "--lr", "-1"], 2, ["--lr", "'-1'", "> 0"]),
        "train lr string": (["train", "--lr", "abc"], 2, ["--lr", "'abc'", "a number"]),
        "train batch 0": (["train", "--batch-size", "0"], 2, ["--batch-size", "'0'", ">= 1"]),
        "train batch 5000": (
            ["train", "--batch-size", "5000", *out],
            2,
            ["--batch-size", "5000", "1348 training examples"],
        ),
        "train devices": (
            ["train", "--devices", "4", *out],
            2,
            ["--devices 4", "XLA_FLAGS=--xla_force_host_platform_device_count=4"],
        ),
        "train missing data folder": (
            ["train", "--dataset", "cifar100", "--data-dir", str(missing), *out],
            2,
            ["--data-dir", str(missing), "CIFAR-100 not found"],
        ),
        "train optimizer": (["train", "--optimizer", "lion"], 2, ["--optimizer", "'lion'"]),
        "train line search": (
            ["train", "--optimizer", "egn", "--line-search", "maybe"],
            2,
            ["--line-search", "'maybe'", "choose from on, off"],
        ),
        # inna-jax figure2 (formerly benchmark)
        "figure2 cifar100 without data dir": (
            ["figure2", "--dataset", "cifar100", *out],
            2,
            ["--dataset cifar100", "needs --data-dir"],
        ),
        "figure2 empty data folder": (
            ["figure2", "--dataset", "cifar100", "--data-dir", str(empty), *out],
            2,
            ["--data-dir", str(empty), "CIFAR-100 not found"],
        ),
        "figure2 unknown method": (
            ["figure2", "--methods", "adma", *out],
            2,
            ["--methods", "'adma'", "choose from SGD"],
        ),
        # 'adam' is accepted (any case): the error is the next check's, not --methods'
        "figure2 lowercase method": (
            ["figure2", "--methods", "adam", "--epochs", "2", "--grid-epochs", "5", *out],
            2,
            ["--grid-epochs 5 must be at most --epochs 2"],
        ),
        # one bad flag of every other command
        "figure1": (["figure1", "--steps", "0"], 2, ["--steps", "'0'", ">= 1"]),
        "dynamics-ntk": (
            ["dynamics-ntk", "--momenta", "0.5", "1.5"],
            2,
            ["--momenta", "'1.5'", "[0, 1)"],
        ),
        "egn": (["egn", "--egn-lr", "0"], 2, ["--egn-lr", "'0'", "> 0"]),
        "egn-rl": (["egn-rl", "--envs", "Pong-v1"], 2, ["--envs", "'Pong-v1'", "CartPole-v1"]),
        "demo": (
            ["demo", "--innaprop-lr", "0.9", *out],
            2,
            ["--innaprop-lr", "0.9", "< INNAprop's beta"],
        ),
        # an unexpected error (--out is a file: mkdir fails): one line and status 1
        "unexpected error": (
            ["demo", "--out", str(a_file)],
            1,
            ["inna-jax demo: error: FileExistsError:", str(a_file), "run with --debug"],
        ),
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *argv], capture_output=True, text=True, env=_env(), timeout=300
    )


def test_every_mistake_is_one_line_naming_the_flag(tmp_path):
    cases = _cases(tmp_path)
    debug_argv = ["--debug", *cases["unexpected error"][0]]
    with ThreadPoolExecutor(max_workers=4) as pool:  # subprocesses: threads only wait
        *results, debug = pool.map(_run, [*(argv for argv, _, _ in cases.values()), debug_argv])
    procs = dict(zip(cases, results, strict=True))
    failures = []
    for name, (argv, status, needles) in cases.items():
        proc = procs[name]
        lines = proc.stderr.strip().splitlines()
        ok = (
            proc.returncode == status
            and len(lines) == 1
            and "Traceback" not in proc.stderr
            and lines[0].startswith(f"inna-jax {argv[0]}: error: ")
            and all(n in lines[0] for n in needles)
        )
        if not ok:
            failures.append(f"{name}: status {proc.returncode}, stderr {proc.stderr[-1500:]!r}")
    assert not failures, "\n".join(failures)
    # --debug: the same error with its traceback, still exit status 1
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("FileExistsError:")


def test_methods_are_case_insensitive():
    assert figure2.parse_methods("adam") == ["Adam"]
    assert figure2.parse_methods("SGD, inna (0.5,0.1), INNAPROP") == [
        "SGD", "INNA (0.5, 0.1)", "INNAprop"]  # fmt: skip


def test_help_documents_the_error_policy(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--debug" in text and "exits with status 2" in text and "status 1" in text


def test_unexpected_errors_and_keyboard_interrupt(monkeypatch, capsys):
    from inna_jax.reproduce import figure1

    def boom(args):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(figure1, "main", boom)
    assert cli.main(["figure1"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "inna-jax figure1: error: RuntimeError: first line second line "
        "(run with --debug for the traceback)\n"
    )
    for argv in (["--debug", "figure1"], ["figure1", "--debug"]):  # before or after COMMAND
        with pytest.raises(RuntimeError, match="first line"):
            cli.main(argv)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(figure1, "main", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["figure1"])
