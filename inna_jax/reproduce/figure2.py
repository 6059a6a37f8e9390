"""Figure 2 of the INNA paper: SGD, Adagrad, Adam and three INNA settings trained side by side.

``--methods all`` adds INNAprop (Bolte, Boustany, Pauwels, Purica 2024; not in the paper's
figure), with the authors' vision setting alpha = 0.1, beta = 0.9, a constant step and no
weight decay, like Adam.

The authors' protocol (Castera et al., JMLR 2021, Section 5): batch 32,
cross-entropy; gamma_k = gamma_0 / sqrt(k + 1) for INNA and SGD, constant learning rates for
Adam and Adagrad; gamma_0 per method chosen by a grid search on the first epochs (lowest
training loss); several seeds, all methods starting from the same initial weights for a
given seed; curves of log10 training loss and test accuracy (mean, min-max band) and a
final table. The paper's setting is ``--dataset cifar100 --data-dir DIR --epochs 200
--seeds 5`` (a Network-in-Network of 984,356 parameters; for accelerators). The default is
a REDUCED setting that runs on a CPU in a minute: scikit-learn's 8x8 digits and a small CNN.
Each method's gamma_0 grid trains as one group of runs, and so do its seeds; on a CPU their
training steps compile at LLVM -O1 (:func:`inna_jax.reproduce.protocol.fast_compile_options`:
a quarter less compiling, steps as fast, and on digits the same files bit for bit).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inna_jax.reproduce import cli_args, machine, plots
from inna_jax.reproduce import figure2_report as report
from inna_jax.reproduce.figure2_methods import (
    DATASETS,
    DEFAULT_METHODS,
    INNA_SETTINGS,
    METHOD_OPTIMIZERS,
    METHODS,
    MNIST1D_GRIDS,
    PAPER_GRIDS,
    REDUCED_GRIDS,
    _parse_grid,
    _split_methods,  # noqa: F401  (tests/test_figure2.py reads it here)
    grid_search,
    load_dataset,
    make_model,
    make_optimizer,
    parse_methods,
    train_method,
)

#: The methods, their grids, data and models live in :mod:`~inna_jax.reproduce.figure2_methods`;
#: this module re-exports them under its own name.
__all__ = [
    "DATASETS",
    "DEFAULT_METHODS",
    "INNA_SETTINGS",
    "METHOD_OPTIMIZERS",
    "METHODS",
    "MNIST1D_GRIDS",
    "PAPER_GRIDS",
    "REDUCED_GRIDS",
    "grid_search",
    "load_dataset",
    "make_model",
    "make_optimizer",
    "PAPER",
    "add_arguments",
    "main",
    "parse_methods",
    "run",
]

#: The paper's setting: dataset, epochs, seeds, batch size, grid-search epochs.
PAPER = {"dataset": "cifar100", "epochs": 200, "seeds": 5, "batch_size": 32, "grid_epochs": 15}
_REDUCED_DEFAULTS = {"epochs": 20, "grid_epochs": 3}


def _check_positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or int(v) != v or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")


def _settings(
    dataset, epochs, seeds, batch_size, grid_epochs, grids, methods
) -> tuple[list[str], bool, int, int, dict[str, tuple[float, ...]]]:
    """The checked settings of :func:`run`, with the defaults of the paper or reduced setting
    filled in (one-line errors naming the argument)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods}")
    paper = dataset == "cifar100"
    defaults = PAPER if paper else _REDUCED_DEFAULTS
    epochs = defaults["epochs"] if epochs is None else epochs
    for name, v in (("epochs", epochs), ("seeds", seeds), ("batch_size", batch_size)):
        _check_positive_int(name, v)
    grid_epochs = min(defaults["grid_epochs"], epochs) if grid_epochs is None else grid_epochs
    _check_positive_int("grid_epochs", grid_epochs)
    default_grids = {"cifar100": PAPER_GRIDS, "mnist1d": MNIST1D_GRIDS}.get(dataset, REDUCED_GRIDS)
    grids = {m: tuple(default_grids[m]) for m in methods} | {
        m: tuple(float(g) for g in v) for m, v in (grids or {}).items()
    }
    grids = {m: grids[m] for m in methods}
    for m, values in grids.items():
        if not values or any(not (math.isfinite(g) and g > 0) for g in values):
            raise ValueError(f"the grid of {m} must hold numbers > 0, got {values}")
    return methods, paper, epochs, grid_epochs, grids


def _parallel(devices: int | None, mesh: Any, workers: int | None) -> Any:
    """The mesh of the groups (``devices``, or every host's devices on several hosts), after
    checking ``workers``."""
    import jax

    from inna_jax.train import run_mesh

    if mesh is None and (devices is not None or jax.process_count() > 1):
        mesh = run_mesh(devices)  # several hosts: all their devices
    if workers is not None:
        _check_positive_int("workers", workers)
    if workers is not None and workers > 1 and jax.process_count() > 1:
        raise cli_args.UsageError(
            f"workers (--workers) must be 1 on several hosts (every process launches its "
            f"programs in the same order), got {workers}"
        )
    return mesh


def _is_reduced(paper: bool, num_train, num_test, epochs: int, seeds: int, batch: int) -> bool:
    """Whether a setting falls short of the paper's (its data, epochs, seeds, batch)."""
    return not (
        paper
        and num_train is None
        and num_test is None
        and epochs >= PAPER["epochs"]
        and seeds >= PAPER["seeds"]
        and batch == PAPER["batch_size"]
    )


def run(
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    epochs: int | None = None,
    seeds: int = 5,
    batch_size: int = 32,
    grid_epochs: int | None = None,
    grids: Mapping[str, Sequence[float]] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    num_train: int | None = None,
    num_test: int | None = None,
    num_samples: int | None = None,
    devices: int | None = None,
    mesh: Any = None,
    out: str | Path = "results/figure2",
    quiet: bool = True,
    verbose: bool = True,
    workers: int | None = None,
) -> dict:
    """Runs the Figure-2 protocol and writes its grid, curves, table and plot to ``out``.

    1. **Grid search.** For each method, every :math:`\\gamma_0` of its grid trains for
       ``grid_epochs`` epochs from the seed-0 weights, all candidates as one group of runs;
       the lowest final training loss wins (:func:`grid_search`).
    2. **Runs.** Each method, with its :math:`\\gamma_0`, trains for ``epochs`` epochs for
       each seed ``s`` in ``range(seeds)``, the seeds as one group; seed ``s`` fixes both the
       initial weights and the batch order, identical across methods. In both steps up to
       ``workers`` methods train at the same time.
    3. **Outputs** in ``out``: ``grid.csv``, ``histories.csv`` (method, seed, epoch,
       train_loss, test_loss, test_accuracy), ``table.csv`` and ``table.json`` (final log10
       training loss and test accuracy: mean, min, max over seeds), ``figure2.png`` and
       ``summary.json`` (the settings, and whether they are the paper's or reduced).

    Args:
        dataset: ``"digits"`` (default, reduced), ``"mnist1d"`` (reduced) or ``"cifar100"``.
        data_dir: folder of ``cifar-100-python/`` (CIFAR-100 only).
        epochs: training epochs (default 20, or 200 on CIFAR-100).
        seeds: number of seeds (the paper: 5).
        batch_size: the paper: 32.
        grid_epochs: epochs of the grid search (default 3, or 15 on CIFAR-100 as in JMLR;
            never more than ``epochs``).
        grids: candidate :math:`\\gamma_0` per method (default :data:`PAPER_GRIDS` on
            CIFAR-100, :data:`MNIST1D_GRIDS` on mnist1d, else :data:`REDUCED_GRIDS`).
        methods: a subset of :data:`METHODS` (default: :data:`DEFAULT_METHODS`, the
            paper's six).
        num_train: keep the first ``num_train`` training examples (a reduced run).
        num_test: keep the first ``num_test`` test examples.
        num_samples: mnist1d only: the number of signals generated (a multiple of 10,
            80 % for training; default: the generator's 5,000).
        devices: spread each group's runs over this many devices (a ``"runs"`` mesh axis);
            ``None``: one device.
        mesh: a mesh for the groups (:func:`inna_jax.train.run_mesh`), instead of
            ``devices``.
        out: output folder.
        quiet: hide the progress bars (one per group of runs).
        verbose: print the setting, the grid choices and the table.
        workers: how many methods' groups train at once, in threads
            (:func:`~inna_jax.reproduce.protocol.run_concurrently`); ``None``: one more than the
            CPU's cores on a CPU without a mesh, else 1. The results do not depend on it.

    Returns:
        A dict with keys ``setting`` (the settings and the ``reduced`` flag), ``gamma0``
        (chosen per method), ``table`` (rows as in ``table.json``) and ``files``.

    Example:
        >>> from inna_jax.reproduce import figure2
        >>> import tempfile
        >>> res = figure2.run(epochs=1, seeds=1, grid_epochs=1, num_train=64, num_test=64,
        ...                   methods=["SGD"], grids={"SGD": [0.1]}, out=tempfile.mkdtemp(),
        ...                   verbose=False)
        >>> res["setting"]["reduced"], [r["method"] for r in res["table"]]
        (True, ['SGD'])

    References:
        Castera, Bolte, Févotte, Pauwels, "An Inertial Newton Algorithm for Deep Learning",
        JMLR 22 (2021), Section 5 and Figure 2.
    """

    from inna_jax.models import count_params
    from inna_jax.reproduce import protocol

    names, paper, n_epochs, n_grid_epochs, grid_of = _settings(
        dataset, epochs, seeds, batch_size, grid_epochs, grids, methods
    )
    mesh = _parallel(devices, mesh, workers)

    t0 = time.perf_counter()
    plots.preload()  # matplotlib loads while the data and the first programs are built
    data = load_dataset(dataset, data_dir=data_dir, num_train=num_train, num_test=num_test,
                        num_samples=num_samples)  # fmt: skip
    if batch_size > len(data.x_train):
        raise cli_args.UsageError(
            f"batch_size (--batch-size) must be at most the {len(data.x_train)} training "
            f"examples, got {batch_size}"
        )
    models = protocol.cached_models(lambda key: make_model(dataset, data.num_classes, key))
    n_params = count_params(models(0))
    reduced = _is_reduced(paper, num_train, num_test, n_epochs, seeds, batch_size)
    label = report.setting_label(dataset, n_params, n_epochs, seeds, reduced, num_train,
                                 num_samples)  # fmt: skip
    say = print if verbose else (lambda *a, **k: None)
    say(f"Figure 2, {label}")
    say(
        f"  {len(data.x_train)} training / {len(data.x_test)} test examples, batch "
        f"{batch_size}; grid search over the first {n_grid_epochs} epoch(s)"
    )

    setting = {
        "dataset": dataset,
        "reduced": reduced,
        "label": label,
        "model": "NiN" if paper else "SmallCNN",
        "model_params": n_params,
        "num_train": len(data.x_train),
        "num_test": len(data.x_test),
        "epochs": n_epochs,
        "seeds": seeds,
        "batch_size": batch_size,
        "grid_epochs": n_grid_epochs,
        "grids": {m: list(v) for m, v in grid_of.items()},
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "wall_time_s": None,  # set when the runs are done
    }
    if num_samples is not None:  # only when asked: the default run's files stay as they were
        setting["num_samples"] = num_samples

    def method_protocol(m: str) -> tuple[float, list[dict], list]:
        return train_method(m, dataset, data, grid_of[m], models, epochs=n_epochs,
                            grid_epochs=n_grid_epochs, seeds=seeds, batch_size=batch_size,
                            mesh=mesh, quiet=quiet)  # fmt: skip

    # Each method goes from its grid search to its seeds without waiting for the others.
    done = protocol.run_concurrently(
        [lambda m=m: method_protocol(m) for m in names], workers=workers, mesh=mesh
    )
    gamma0 = {m: g for m, (g, _, _) in zip(names, done, strict=True)}
    for m in names:
        at_edge = len(grid_of[m]) > 1 and gamma0[m] in (min(grid_of[m]), max(grid_of[m]))
        edge = " (at the edge of its grid)" if at_edge else ""
        say(f"  gamma0[{m}] = {gamma0[m]:g}{edge}")

    return _finish(Path(out), setting, gamma0, done, t0, say)


def _finish(out: Path, setting: dict, gamma0: dict, done: list, t0: float, say) -> dict:
    """Tables, files and the printed table from each method's ``(gamma0, grid rows, runs)``."""
    import jax

    names, epochs, seeds = list(gamma0), setting["epochs"], setting["seeds"]
    runs_of = {m: runs for m, (_, _, runs) in zip(names, done, strict=True)}
    curves = {m: report.curves([r.history for r in runs_of[m]], epochs) for m in names}
    rows = [report.table_row(m, gamma0[m], runs_of[m], curves[m], epochs, seeds) for m in names]
    out.mkdir(parents=True, exist_ok=True)
    setting["wall_time_s"] = round(time.perf_counter() - t0, 1)
    summary = {"setting": setting, "gamma0": gamma0, "table": rows,
               "machine": machine.machine_description()}  # fmt: skip
    if jax.process_index() == 0:  # several hosts compute the same results; one writes them
        grid_rows = [row for _, method_rows, _ in done for row in method_rows]
        history = [row for m in names for row in report.history_rows(m, runs_of[m])]
        report.write(out, summary, grid_rows, history, curves)
    say(f"\nFinal table after {epochs} epochs ({setting['label']}):")
    say(report.format_table(rows))
    say(f"\nwrote {', '.join(report.FILES)} to {out} in {setting['wall_time_s']} s")
    return {**summary, "files": {name: str(out / name) for name in report.FILES}}


_pint = cli_args.positive_int
_FLAGS = (
    ("--dataset", cli_args.choice(DATASETS), "digits",
     "digits and mnist1d are the reduced CPU settings (small CNN); "
     "cifar100 is the paper's (NiN), needs --data-dir"),
    ("--data-dir", None, None, "folder holding cifar-100-python/ (train, test, meta)"),
    ("--epochs", _pint, None, "training epochs (default: 20, or 200 with cifar100)"),
    ("--seeds", _pint, 5,
     "seeds; seed s gives the same initial weights and batches to every method"),
    ("--batch-size", _pint, 32, "batch size (paper: 32)"),
    ("--grid-epochs", _pint, None,
     "epochs of the gamma0 grid search (default: 3, or 15 with cifar100; at most --epochs)"),
    ("--grid", _parse_grid, [],
     "replace one method's gamma0 grid, e.g. --grid 'Adam=1e-4,1e-3' (repeatable)",
     {"action": "append", "metavar": "METHOD=v1,v2,..."}),
    ("--methods", None, ",".join(DEFAULT_METHODS),
     "comma-separated methods (any case), or 'all' to add INNAprop to the paper's six; "
     f"choose from {', '.join(METHODS)}"),
    ("--num-train", _pint, None, "keep only the first N training examples"),
    ("--num-test", _pint, None, "keep only the first N test examples"),
    ("--num-samples", cli_args.multiple_of(10, 20), None,
     "mnist1d only: the number of signals to generate, 80%% for training (default: 5000)"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax figure2``."""
    cli_args.add_flags(parser, _FLAGS)
    cli_args.add_parallel_arguments(parser, groups=True)  # --devices and the multi-host flags
    parser.add_argument("--out", default="results/figure2", help="output folder")
    parser.add_argument(
        "--progress", action="store_true", help="show a progress bar per group of runs"
    )
    parser.add_argument(
        "--workers",
        type=cli_args.positive_int,
        default=None,
        help="methods trained at the same time, in threads (default: one more than the CPU "
        "cores when training on a CPU without --devices, else 1); the results do not depend "
        "on it",
    )


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` from parsed command-line flags."""
    methods = parse_methods(args.methods)
    if args.dataset == "cifar100" and args.data_dir is None:
        raise cli_args.UsageError(
            "--dataset cifar100 needs --data-dir, the folder holding cifar-100-python/"
        )
    if args.num_samples is not None and args.dataset != "mnist1d":
        raise cli_args.UsageError(
            f"--num-samples applies only to --dataset mnist1d, got --dataset {args.dataset}"
        )
    if args.grid_epochs is not None and args.epochs is not None and args.grid_epochs > args.epochs:
        raise cli_args.UsageError(
            f"--grid-epochs {args.grid_epochs} must be at most --epochs {args.epochs}"
        )
    mesh = cli_args.group_mesh(args)  # jax.distributed on several hosts, then the mesh
    try:
        run(
            dataset=args.dataset,
            data_dir=args.data_dir,
            epochs=args.epochs,
            seeds=args.seeds,
            batch_size=args.batch_size,
            grid_epochs=args.grid_epochs,
            grids=dict(args.grid),
            methods=methods,
            num_train=args.num_train,
            num_test=args.num_test,
            num_samples=args.num_samples,
            mesh=mesh,
            out=args.out,
            quiet=not args.progress,
            workers=args.workers,
        )
    except FileNotFoundError as err:  # e.g. no CIFAR-100 in --data-dir: a usage error
        raise cli_args.UsageError(
            f"--dataset {args.dataset} --data-dir {args.data_dir}: {err}"
        ) from err
    return 0
