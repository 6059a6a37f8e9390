"""Command-line pieces shared by the ``inna-jax`` commands: flag types, usage errors, devices.

Every mistake in a flag is reported on one line that names the flag, the value and what is
allowed, with exit status 2 and no traceback: argparse reports the values it can check
(the types below), and a command raises :class:`UsageError` for what it can only check later
(a batch larger than the data set, more devices than JAX sees, a missing data folder).
This module imports nothing heavy, so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


class UsageError(ValueError):
    """A bad command-line value, reported as one line with exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, text: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _checked(kind: type, text: str, ok: Any, allowed: str) -> Any:
    """``text`` as a ``kind``; one line ``must be {allowed}, got ...`` unless ``ok(value)``."""
    value = _number(kind, text)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _checked(int, text, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _checked(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return _checked(float, text, lambda v: v > 0, "a finite number > 0")


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    return _checked(float, text, lambda v: v >= 0, "a finite number >= 0")


def int_at_least(low: int):
    """An argparse type: an integer >= ``low``.

    Example:
        >>> from inna_jax.reproduce.cli_args import int_at_least
        >>> int_at_least(8)("10")
        10
    """

    def parse(text: str) -> int:
        return _checked(int, text, lambda v: v >= low, f"an integer >= {low}")

    parse.__name__ = f"integer >= {low}"
    return parse


def multiple_of(step: int, low: int):
    """An argparse type: an integer >= ``low`` that is a multiple of ``step``.

    Example:
        >>> from inna_jax.reproduce.cli_args import multiple_of
        >>> multiple_of(10, 20)("20000")
        20000
    """

    def parse(text: str) -> int:
        return _checked(
            int, text, lambda v: v >= low and v % step == 0, f"a multiple of {step}, >= {low}"
        )

    parse.__name__ = f"multiple of {step} >= {low}"
    return parse


def float_in(low: float, high: float):
    """An argparse type: a number in ``[low, high)``.

    Example:
        >>> from inna_jax.reproduce.cli_args import float_in
        >>> float_in(0.0, 1.0)("0.5")
        0.5
    """

    def parse(text: str) -> float:
        return _checked(float, text, lambda v: low <= v < high, f"a number in [{low:g}, {high:g})")

    parse.__name__ = f"number in [{low:g}, {high:g})"
    return parse


def choice(choices: tuple[str, ...]):
    """An argparse type: one of ``choices``, matched without regard to case."""
    by_key = {c.lower(): c for c in choices}

    def parse(text: str) -> str:
        key = text.strip().lower()
        if key not in by_key:
            raise argparse.ArgumentTypeError(
                f"unknown value {text!r}; choose from {', '.join(choices)}"
            )
        return by_key[key]

    parse.__name__ = "choice"
    return parse


def add_flags(parser: Any, flags: Sequence[tuple]) -> None:
    """Adds one flag per row ``(flag, type, default, help)`` or ``(flag, type, default, help,
    options)``, ``options`` a dict of further ``add_argument`` keywords (``nargs``, ...).

    A command lists its flags as a table, in the order ``--help`` shows them.

    Example:
        >>> import argparse
        >>> from inna_jax.reproduce.cli_args import add_flags, positive_int
        >>> parser = argparse.ArgumentParser()
        >>> add_flags(parser, [("--steps", positive_int, 10, "iterations"),
        ...                    ("--sizes", positive_int, [1], "sizes", {"nargs": "+"})])
        >>> vars(parser.parse_args(["--sizes", "2", "3"]))
        {'steps': 10, 'sizes': [2, 3]}
    """
    for flag, kind, default, text, *more in flags:
        parser.add_argument(
            flag, type=kind, default=default, help=text, **(more[0] if more else {})
        )


def add_parallel_arguments(parser: argparse.ArgumentParser, *, groups: bool = False) -> None:
    """Adds ``--devices`` and the multi-host flags (see :func:`setup_parallel`).

    With ``groups=True`` (commands that train groups of runs) ``--devices N`` spreads the
    runs over N devices (a ``"runs"`` mesh axis) and ``--data-devices D`` splits each run's
    batch over D of them; otherwise ``--devices N`` splits each batch over N devices.

    Example:
        >>> import argparse
        >>> from inna_jax.reproduce.cli_args import add_parallel_arguments
        >>> parser = argparse.ArgumentParser()
        >>> add_parallel_arguments(parser)
        >>> args = parser.parse_args(["--devices", "4", "--num-processes", "2"])
        >>> args.devices, args.num_processes, args.coordinator_address
        (4, 2, None)
    """
    g = parser.add_argument_group("devices and hosts")
    if groups:
        g.add_argument(
            "--devices",
            type=positive_int,
            default=None,
            help="spread the runs of each group over this many devices (a 'runs' mesh axis); "
            "default: one device, or all devices of all hosts when running multi-host",
        )
        g.add_argument(
            "--data-devices",
            type=positive_int,
            default=1,
            help="of those devices, split each run's batch over this many (a 'data' axis)",
        )
    else:
        g.add_argument(
            "--devices",
            type=positive_int,
            default=None,
            help="split each batch over this many devices (a 'data' mesh); default: one "
            "device, or all devices of all hosts when running multi-host",
        )
    g.add_argument(
        "--coordinator-address",
        default=None,
        help="multi-host: host:port of process 0 (also INNA_JAX_COORDINATOR_ADDRESS); "
        "leave out on TPU pods and under SLURM, where JAX reads the environment",
    )
    g.add_argument(
        "--num-processes", type=positive_int, default=None, help="multi-host: number of processes"
    )
    g.add_argument(
        "--process-id", type=nonnegative_int, default=None, help="multi-host: this process's index"
    )
    g.add_argument(
        "--cpu-collectives",
        type=choice(("gloo", "mpi")),
        default=None,
        help="multi-host on CPU only: the collectives library",
    )


def setup_parallel(args: argparse.Namespace) -> None:
    """Starts ``jax.distributed`` from the flags of :func:`add_parallel_arguments` or from the
    environment (TPU pod, SLURM); a no-op for one process.

    Raises:
        UsageError: for an inconsistent set of multi-host flags.

    Example:
        >>> import argparse, jax
        >>> from inna_jax.reproduce.cli_args import add_parallel_arguments, setup_parallel
        >>> parser = argparse.ArgumentParser()
        >>> add_parallel_arguments(parser)
        >>> setup_parallel(parser.parse_args([]))  # no flags, no cluster: one process
        >>> jax.process_count()
        1
    """
    from inna_jax.train import initialize_distributed

    try:
        initialize_distributed(
            args.coordinator_address,
            args.num_processes,
            args.process_id,
            cpu_collectives=args.cpu_collectives,
        )
    except ValueError as err:
        message = str(err)
        for name in ("coordinator_address", "num_processes", "process_id", "cpu_collectives"):
            message = message.replace(name, "--" + name.replace("_", "-"))
        raise UsageError(message) from err


def _xla_hint(n: int) -> str:
    return (
        f"on a CPU, simulate {n} devices with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before the command"
    )


def device_mesh(args: argparse.Namespace, *, groups: bool = False):
    """The mesh asked for by ``--devices`` (and ``--data-devices``), or ``None`` for one device.

    Several processes (``jax.distributed``) use every device of every host by default.

    Raises:
        UsageError: if more devices are asked for than JAX sees (with the ``XLA_FLAGS`` hint
            on CPU), or ``--data-devices`` does not divide ``--devices``.
    """
    import jax

    from inna_jax.train import data_mesh, run_mesh

    devices = args.devices
    if devices is None and jax.process_count() == 1:
        return None
    available = len(jax.devices())
    total = available if devices is None else devices
    if total > available:
        hint = f"; {_xla_hint(total)}" if jax.devices()[0].platform == "cpu" else ""
        raise UsageError(
            f"--devices {total}: JAX sees only {available} device(s) on this machine{hint}"
        )
    if not groups:
        return data_mesh(total)
    data = getattr(args, "data_devices", 1)
    if total % data:
        raise UsageError(f"--data-devices {data} must divide --devices {total}")
    return run_mesh(total // data, data)


def group_mesh(args: argparse.Namespace):
    """For the commands that train groups of runs: starts ``jax.distributed`` when the flags
    ask for it (:func:`setup_parallel`), and returns :func:`device_mesh` with ``groups=True``.

    Raises:
        UsageError: as :func:`device_mesh`, or when ``--batch-size`` is not a multiple of
            ``--data-devices`` (each run's batch is split over them).
    """
    setup_parallel(args)  # jax.distributed on several hosts; a no-op for one process
    mesh = device_mesh(args, groups=True)
    if args.batch_size % args.data_devices:
        raise UsageError(
            f"--batch-size {args.batch_size} must be a multiple of --data-devices "
            f"{args.data_devices}"
        )
    return mesh


def fail(prog: str, message: str) -> int:
    """Prints ``prog: error: message`` on stderr and returns the exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
