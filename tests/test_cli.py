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
