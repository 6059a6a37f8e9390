"""Wall time of the paper protocols, old code against new, through the real console script.

Each measurement runs ``inna-jax`` in a subprocess, once with ``PYTHONPATH`` pointing at a
checkout of an old git revision (a temporary ``git worktree``; run as its console script ran
it, ``sys.exit(cli.main())``) and twice at this working tree (the console script):
from a cold start (an empty compilation cache, as on a first run) and with a warm cache (the
compiled programs of one earlier untimed run, as on a second run; see
``inna_jax/reproduce/compilation_cache.py``), alternating old and new for ``--repeats``
rounds; it prints the median wall time of each, the speedups old / new, and the target.
The measurements (``--measure``):

* ``figure2``: the default Figure-2 run (old: ``inna-jax benchmark``; new: ``inna-jax
  figure2``), target at least 5x faster;
* ``cifar``: ``figure2 --dataset cifar100 --data-dir DIR --epochs 1 --grid-epochs 1
  --seeds 1`` on a CIFAR-100 folder of 96 training images (and ``--cifar-test`` test
  images) written here in the archive's pickle format, target under 90 s;
* ``egn``: the default ``inna-jax egn``, target at least 3x faster;
* ``help``: ``inna-jax --help``, target under 1.5 s;
* ``import``: ``python -c "import inna_jax"``, and whether it loads diffrax, matplotlib,
  orbax.

With ``--compiles`` it also counts XLA compilations of each command (``JAX_LOG_COMPILES=1``,
lines "Compiling ..." on stderr; one more run each, not timed). The machine, its load
average before and after, and the jax version are printed with the table: timings are only
comparable on a quiet machine, and only as ratios taken side by side.

    python benchmarks/protocols.py                                  # everything, 1 round
    python benchmarks/protocols.py --measure figure2 egn --repeats 3
    python benchmarks/protocols.py --measure cifar --old-rev fb9aced --compiles
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
#: the last revision before groups of runs and the compile cache (main at the time).
DEFAULT_OLD_REV = "fb9aced"
MEASUREMENTS = ("figure2", "cifar", "egn", "help", "import")
TARGETS = {
    "figure2": ("speedup", 5.0),
    "cifar": ("seconds", 90.0),
    "egn": ("speedup", 3.0),
    "help": ("seconds", 1.5),
    "import": ("seconds", None),
}


def write_cifar(folder: Path, num_train: int, num_test: int) -> Path:
    """A ``cifar-100-python`` folder with random images in the archive's pickle format."""
    rng = np.random.default_rng(0)
    inner = folder / "cifar-100-python"
    inner.mkdir(parents=True, exist_ok=True)

    def split(n: int) -> dict:
        return {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": b"benchmark",
            b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
            b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }

    for name, n in (("train", num_train), ("test", num_test)):
        with open(inner / name, "wb") as f:
            pickle.dump(split(n), f, protocol=2)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    with open(inner / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def commands(which: str, old: bool, work: Path, cifar: Path) -> list[list[str]]:
    """The command lines of a measurement (run in ``work``)."""
    script = [shutil.which("inna-jax") or "inna-jax"]
    if old:  # what the old console script ran (it called cli.main; the new one cli.console)
        script = [
            sys.executable, "-c",
            "import sys; from inna_jax.cli import main; sys.argv[0] = 'inna-jax'; "
            "sys.exit(main())",
        ]  # fmt: skip
    figure2 = "benchmark" if old else "figure2"
    if which == "figure2":
        return [[*script, figure2, "--out", str(work / "figure2")]]
    if which == "cifar":
        return [
            [*script, figure2, "--dataset", "cifar100", "--data-dir", str(cifar), "--epochs", "1",
             "--grid-epochs", "1", "--seeds", "1", "--out", str(work / "cifar")]
        ]  # fmt: skip
    if which == "egn":
        return [[*script, "egn", "--out", str(work / "egn")]]
    if which == "help":
        return [[*script, "--help"]]
    if which == "import":
        return [[sys.executable, "-X", "importtime", "-c", "import inna_jax"]]
    raise ValueError(which)


def run_once(
    cmd: list[str], source: Path, *, cache: Path | None = None, compiles: bool = False
) -> tuple[float, str]:
    """Runs ``cmd`` with ``source`` first on ``PYTHONPATH``; returns (seconds, stderr).

    ``cache``: the folder of the commands' compilation cache (``None``: off).
    """
    env = {**os.environ, "PYTHONPATH": str(source), "MPLBACKEND": "Agg"}
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env["INNA_JAX_COMPILATION_CACHE"] = str(cache) if cache is not None else "off"
    if compiles:
        env["JAX_LOG_COMPILES"] = "1"
    with tempfile.TemporaryDirectory() as cwd:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def heavy_imports(importtime_log: str) -> list[str]:
    """The heavy packages named in a ``-X importtime`` log."""
    found = set()
    for line in importtime_log.splitlines():
        name = line.rsplit("|", 1)[-1].strip()
        top = name.split(".")[0]
        if top in ("diffrax", "matplotlib", "orbax", "flax"):
            found.add(top)
    return sorted(found)


def machine() -> str:
    import jax

    load = os.getloadavg()
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.devices()[0].platform}); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--measure", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS),
        help="which measurements to run",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="rounds of old then new")
    parser.add_argument(
        "--old-rev", default=DEFAULT_OLD_REV, help="git revision of the old code ('' to skip)"
    )
    parser.add_argument("--new", default=str(ROOT), help="folder of the new code")
    parser.add_argument("--cifar-test", type=int, default=32, help="test images of the folder")
    parser.add_argument(
        "--compiles", action="store_true", help="also count XLA compilations (one extra run each)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="inna_protocols_"))
    cifar = write_cifar(tmp / "cifar", 96, args.cifar_test)
    # "new": a cold start, with an empty compilation cache each round; "new, warm cache":
    # the cache holds the programs of one earlier, untimed run (a user's second run).
    sources = {"new": Path(args.new), "new, warm cache": Path(args.new)}
    if args.old_rev:
        old = tmp / "old"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_rev],
            check=True,
            capture_output=True,
        )
        sources = {"old": old, **sources}
    rows = []
    try:
        for which in args.measure:
            times: dict[str, list[float]] = {k: [] for k in sources}
            notes: dict[str, str] = {}
            warm = tmp / f"cache_{which}"
            for cmd in commands(which, False, tmp / f"{which}_warming", cifar):
                run_once(cmd, sources["new"], cache=warm)  # fills the warm cache, untimed
            for r in range(args.repeats):
                for label, source in sources.items():
                    work = tmp / f"{which}_{label}"
                    cache = {"new": tmp / f"cache_{which}_cold_{r}", "new, warm cache": warm}
                    total = 0.0
                    for cmd in commands(which, label == "old", work, cifar):
                        seconds, err = run_once(cmd, source, cache=cache.get(label))
                        total += seconds
                        if which == "import":
                            notes[label] = "loads " + (", ".join(heavy_imports(err)) or "none")
                    times[label].append(total)
                    print(f"  {which:8s} {label}: {total:7.2f} s", flush=True)
            if args.compiles and which not in ("help", "import"):
                for label in ("old", "new"):
                    if label not in sources:
                        continue
                    source = sources[label]
                    counts = 0
                    for cmd in commands(which, label == "old", tmp / f"{which}_c_{label}", cifar):
                        counts += run_once(cmd, source, compiles=True)[1].count("Compiling ")
                    notes[label] = f"{counts} compilations"
            rows.append((which, times, notes))
    finally:
        if args.old_rev:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")],
                capture_output=True,
            )
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmachine after: {machine()}")
    print(f"old = {args.old_rev or '-'}, new = {args.new}; medians of {args.repeats} round(s)\n")
    head = "| measurement | old (s) | new (s) | old / new | target | met | notes |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    for which, times, notes in rows:
        old = statistics.median(times["old"]) if "old" in times else None
        for label in ("new", "new, warm cache"):
            new = statistics.median(times[label])
            ratio = old / new if old else None
            kind, goal = TARGETS[which]
            if kind == "speedup" and goal is not None:
                target, met = f">= {goal:g}x", (ratio is not None and ratio >= goal)
            elif goal is not None:
                target, met = f"< {goal:g} s (new)", new < goal
            else:
                target, met = "-", None
            note = "; ".join(f"{k}: {v}" for k, v in notes.items()) if label == "new" else ""
            name = which if label == "new" else f"{which}, warm cache"
            print(
                f"| {name} | {'-' if old is None else f'{old:.1f}'} | {new:.2f} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | {target} | "
                f"{'-' if met is None else ('yes' if met else 'NO')} | {note} |"
            )


if __name__ == "__main__":
    main()
