"""The ``inna-jax`` command: a thin face over :mod:`inna_jax.reproduce`.

Each subcommand lives in a module of :mod:`inna_jax.reproduce` that defines
``add_arguments(parser)`` and ``main(args) -> int``; its docstring's first line is the help.
Only the module of the command that runs is imported: ``inna-jax --help`` reads the
docstrings from the source files, so it needs neither Flax nor diffrax nor matplotlib.
Errors follow one policy: a bad flag value is one line on stderr naming the flag, the value
and what is allowed, with exit status 2 (see :mod:`inna_jax.reproduce.cli_args`), and so is
a missing optional extra (the commands need ``pip install "inna_jax[reproduce]"``, see
:mod:`inna_jax._extras`); any other exception of a command is one line
``inna-jax CMD: error: Type: message`` with exit status 1,
and ``--debug`` shows its traceback instead. ``KeyboardInterrupt`` is left alone. Compiled
programs are kept on disk between runs (:mod:`inna_jax.reproduce.compilation_cache`). The
console script (:func:`console`) skips Python's teardown of the loaded modules once the
command has returned.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import importlib
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from inna_jax import _extras

# inna_jax.reproduce (cli_args, compilation_cache) is imported inside the functions: without
# the "reproduce" extra, importing it raises, and main() says so in one line instead.

# subcommand -> module in inna_jax.reproduce
COMMANDS: dict[str, str] = {
    "demo": "inna_jax.reproduce.demo",
    "train": "inna_jax.reproduce.train",
    "figure1": "inna_jax.reproduce.figure1",
    "figure2": "inna_jax.reproduce.figure2",
    "egn": "inna_jax.reproduce.egn",
    "dynamics-ntk": "inna_jax.reproduce.hb_nag_ntk",
    "egn-rl": "inna_jax.reproduce.egn_rl",
    "innaprop-lm": "inna_jax.reproduce.innaprop_lm",
}
#: old name -> current name; the old name still works and says so on stderr.
ALIASES: dict[str, str] = {"benchmark": "figure2"}

_ROOT = Path(__file__).resolve().parent.parent
_EPILOG = (
    "Errors: a bad flag value prints one line naming the flag and exits with status 2; an "
    "unexpected error prints one line 'inna-jax COMMAND: error: Type: message' and exits with "
    "status 1. --debug (before or after COMMAND) shows the Python traceback instead. "
    "Compiled programs are kept in ~/.cache/inna_jax/jax (INNA_JAX_COMPILATION_CACHE=DIR "
    "moves it, =off turns it off)."
)
_DEBUG_HELP = "on an unexpected error, show the Python traceback instead of one line"


def _docstring(module_name: str) -> str:
    """A module's docstring, read from its source without importing it."""
    path = _ROOT.joinpath(*module_name.split(".")).with_suffix(".py")
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, one subparser per entry of :data:`COMMANDS` and :data:`ALIASES`.

    Args:
        command: the only subcommand whose module is imported and whose flags are added
            (an alias counts as its target); ``""``: none; ``None``: all of them.
    """
    from inna_jax.reproduce import cli_args

    parser = cli_args.ArgumentParser(
        prog="inna-jax",
        description="Inertial-Newton and Gauss-Newton training in JAX: demo, training and "
        "the papers' figures. 'inna-jax COMMAND --help' explains each command.",
        epilog=_EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = {**{name: name for name in COMMANDS}, **ALIASES}
    wanted = command if command is None else ALIASES.get(command, command)
    for name, target in names.items():
        doc = _docstring(COMMANDS[target])
        summary = doc.splitlines()[0] if doc else ""
        if name in ALIASES:
            summary = f"old name of '{target}'"
        p = sub.add_parser(
            name,
            help=summary,
            description=doc,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        # also after the command; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        if wanted is None or target == wanted:
            module = importlib.import_module(COMMANDS[target])
            module.add_arguments(p)
            p.set_defaults(_module=module, _name=target)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS or arg in ALIASES else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inna-jax`` console script.

    Returns the command's exit status: 0 on success, 2 for a usage error (one line on
    stderr naming the flag) or a missing optional extra (one line naming it and the ``pip``
    command), 1 for any other exception (one line on stderr, or its
    traceback with ``--debug``).
    """
    missing = _extras.missing("reproduce")
    if missing:  # one line naming the extra, status 2 (a usage error)
        print(_extras.MissingExtraError("inna-jax", "reproduce", missing), file=sys.stderr)
        return 2
    from inna_jax.reproduce import cli_args, compilation_cache

    argv = list(sys.argv[1:] if argv is None else argv)
    compilation_cache.enable()  # before the command imports jax
    debug = "--debug" in argv  # until the flags are parsed (an error importing the command)
    command = _command_of(argv)
    if command in ALIASES:
        print(
            f"inna-jax {command}: this command is now 'inna-jax {ALIASES[command]}' "
            "(the old name still works)",
            file=sys.stderr,
        )
    prog = f"inna-jax {ALIASES.get(command, command)}" if command else "inna-jax"
    try:
        args = build_parser(command or "").parse_args(argv)  # imports the command's module
        prog, debug = f"inna-jax {args._name}", args.debug
        return int(args._module.main(args) or 0)
    except cli_args.UsageError as err:
        return cli_args.fail(prog, str(err))
    except _extras.MissingExtraError as err:  # an extra that this command needs (egn-rl's gymnax)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # not KeyboardInterrupt nor SystemExit (argparse's exits)
        if debug:
            raise
        message = " ".join(str(err).split())  # one line
        what = f"{type(err).__name__}: {message}" if message else type(err).__name__
        print(f"{prog}: error: {what} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def console() -> None:
    """The ``inna-jax`` console script: :func:`main`, then a quick exit with its status.

    After a command has returned, its files are closed and its threads have finished; what
    is left of a normal exit is the exit handlers (``atexit``: JAX's, logging's) and
    Python's teardown of every loaded module and object, which takes 0.3-0.45 s once JAX,
    Flax and matplotlib are loaded (``benchmarks/protocols.py``). This runs the exit
    handlers, flushes the standard streams and leaves with :func:`os._exit`. A command that
    left a non-daemon thread running, or an exception (Ctrl-C), takes the normal way out.
    """
    status = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()  # what a normal exit runs first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to write
            pass
    os._exit(status)


if __name__ == "__main__":
    console()
