"""The machine a command ran on: CPU, cores, load, devices and software versions.

The commands print it above their tables and store it in their ``summary.json``, so that a
table of timings says where it was measured.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_description() -> dict[str, Any]:
    """The machine, its load and the software versions, for self-describing tables."""
    import jax
    import optax

    cpu = cpu_name()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_1min": round(load, 2),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "optax": optax.__version__,
        "python": platform.python_version(),
    }


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows.

    Example:
        >>> from inna_jax.reproduce.machine import cpu_name
        >>> isinstance(cpu_name(), str) and len(cpu_name()) > 0
        True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(machine: dict[str, Any]) -> str:
    """One line: the CPU, cores, load, devices, and the jax and optax versions."""
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, 1-min load "
        f"{machine['load_1min']}, devices {', '.join(machine['devices'])}; "
        f"jax {machine['jax']}, optax {machine['optax']}"
    )
