"""The ``inna-jax`` command: lazy imports (a fast ``--help``), and ``import inna_jax``."""

import os
import subprocess
import sys

from inna_jax import cli

HEAVY = ("diffrax", "matplotlib", "orbax", "flax", "sklearn")


def _imported(code: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = (line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines())
    return {name.split(".")[0] for name in names if name and not name.startswith("import time")}


def test_import_inna_jax_loads_no_diffrax_matplotlib_orbax():
    loaded = _imported("import inna_jax; inna_jax.inna(0.1)")
    assert not loaded & {"diffrax", "matplotlib", "orbax"}, loaded & set(HEAVY)
    loaded = _imported("import inna_jax; inna_jax.dynamics.solve_din")
    assert "diffrax" in loaded  # imported on first use


def test_help_imports_no_command_module():
    code = "import sys; from inna_jax import cli; sys.argv = ['inna-jax', '--help']; cli.main()"
    loaded = _imported(f"try:\n    {code}\nexcept SystemExit:\n    pass")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_lists_every_command(capsys):
    try:
        cli.main(["--help"])
    except SystemExit as exit_info:
        assert exit_info.code == 0
    out = capsys.readouterr().out
    for name in (*cli.COMMANDS, *cli.ALIASES):
        assert name in out
    assert "old name of 'figure2'" in out


def test_moved_names_still_work_with_a_warning():
    import pytest

    import inna_jax.train
    from inna_jax.reproduce import cli_args

    with pytest.warns(DeprecationWarning, match="moved to inna_jax.reproduce.cli_args"):
        moved = inna_jax.train.add_parallel_arguments
    assert moved is cli_args.add_parallel_arguments
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        inna_jax.train.nothing  # noqa: B018


def test_commands_keep_compiled_programs_on_disk(tmp_path):
    """A second run loads the training step from the cache folder and prints the same."""
    cache = tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env |= {"INNA_JAX_COMPILATION_CACHE": str(cache), "JAX_LOG_COMPILES": "1"}
    argv = [
        sys.executable, "-m", "inna_jax.cli", "figure2", "--methods", "SGD", "--grid",
        "SGD=0.1", "--epochs", "1", "--seeds", "1", "--num-train", "64", "--num-test", "32",
    ]  # fmt: skip
    runs = []
    for i in range(2):
        proc = subprocess.run(
            [*argv, "--out", str(tmp_path / f"out{i}")],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(proc)
        if i == 0:
            stored = sorted(p.name for p in cache.iterdir())
            assert any(name.startswith("jit_train_step-") for name in stored), stored
    assert "Persistent compilation cache hit for 'jit_train_step'" not in runs[0].stderr
    assert "Persistent compilation cache hit for 'jit_train_step'" in runs[1].stderr
    tables = [(tmp_path / f"out{i}" / "table.json").read_text() for i in range(2)]
    assert tables[0] == tables[1]

    off = tmp_path / "off"
    env |= {"INNA_JAX_COMPILATION_CACHE": "off", "XDG_CACHE_HOME": str(off), "HOME": str(off)}
    proc = subprocess.run(
        [*argv, "--out", str(tmp_path / "out_off")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Persistent compilation cache" not in proc.stderr
    assert not (off / "inna_jax").exists()  # nothing under XDG_CACHE_HOME


def _console(body: str) -> subprocess.CompletedProcess:
    """Runs ``cli.console()`` in a subprocess whose ``cli.main`` is the function ``body``."""
    code = f"from inna_jax import cli\ndef main():\n{body}\ncli.main = main\ncli.console()\n"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONUNBUFFERED")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_console_exit_keeps_the_status_the_output_and_the_exit_handlers():
    # stdout is a pipe, so fully buffered: without the flush the 100,000 characters are lost
    proc = _console(
        "    import atexit\n"
        "    atexit.register(lambda: print('handler ran'))\n"
        "    print('x' * 100_000, end='')\n"
        "    return 3"
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "x" * 100_000 + "handler ran\n"


def test_console_exit_waits_for_a_running_thread(tmp_path):
    done = tmp_path / "done.txt"
    proc = _console(
        "    import threading, time\n"
        f"    write = lambda: (time.sleep(0.5), open({str(done)!r}, 'w').write('written'))\n"
        "    threading.Thread(target=write).start()\n"
        "    return 0"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert done.read_text() == "written"
