"""The ``inna-jax`` command: a thin face over :mod:`inna_jax.reproduce`.

Each subcommand lives in a module of :mod:`inna_jax.reproduce` that defines
``add_arguments(parser)`` and ``main(args) -> int``; its docstring's first line is the help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module in inna_jax.reproduce
COMMANDS: dict[str, str] = {
    "figure1": "inna_jax.reproduce.figure1",
    "demo": "inna_jax.reproduce.demo",
    "benchmark": "inna_jax.reproduce.figure2",
    "train": "inna_jax.train._command",
    "egn": "inna_jax.reproduce.egn",
    "dynamics-ntk": "inna_jax.reproduce.hb_nag_ntk",
    "egn-rl": "inna_jax.reproduce.egn_rl",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="inna-jax",
        description="Inertial-Newton and Gauss-Newton training in JAX: demo and paper figures.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        p = sub.add_parser(
            name,
            help=summary,
            description=(module.__doc__ or "").strip(),
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inna-jax`` console script."""
    args = build_parser().parse_args(argv)
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
