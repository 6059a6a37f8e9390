"""EGN vs SGN, SGD and Adam on regression and classification (MLP 32-64-32; CPU, about a minute).

The EGN paper (Korbit et al. 2024) compares its exact Gauss-Newton optimizer with SGN and
tuned first-order methods on small supervised problems. This command trains the same
Flax NNX MLP (hidden layers 32-64-32) on every data set available offline: scikit-learn's
diabetes (regression, standardized target; California housing too when it is already on
disk), scikit-learn's digits, breast-cancer and wine sets and mnist1d (classification;
``--num-samples`` generates more signals) with

* EGN (batch-space Gauss-Newton, Armijo line search, lambda = 1), and EGN+LM (the same with
  the Levenberg-Marquardt adaptive lambda),
* SGN (Gauss-Newton by 10 conjugate-gradient iterations, damping 1e-3, Armijo),
* SGD and Adam, each with a learning-rate grid (EGN and SGN get a small grid of step caps
  too); the best rate per method and data set is the one with the best mean final test
  metric (a choice made on the test set, the same for every method).

Every method starts from the same weights and sees the same batches for a given seed. Each
method's grid and seeds train together as one group of runs (one compiled program). The
command prints a table (final test RMSE or accuracy, mean and standard deviation over seeds,
training seconds per run, steps, runs stopped by a non-finite loss) and writes
``egn_curves.png`` (test metric against wall-clock time and against steps), ``table.csv``,
``table.json``, ``histories.csv`` (one row per run and epoch) and ``summary.json`` into
``--out``. ``--full`` uses the paper-like settings (5 seeds, more epochs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax.reproduce import cli_args, machine
from inna_jax.reproduce import egn_report as report
from inna_jax.reproduce import registry as reg

HIDDEN = (32, 64, 32)
DATASETS = ("diabetes", "california", "digits", "breast_cancer", "wine", "mnist1d")
METHODS = ("egn", "egn_lm", "sgn", "sgd", "adam")
SGD_GRID = (1e-3, 1e-2, 1e-1)
ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
DEFAULT_EPOCHS = {"diabetes": 30, "california": 2, "digits": 5, "breast_cancer": 10, "wine": 30,
                  "mnist1d": 4}  # fmt: skip
FULL_EPOCHS = {"diabetes": 100, "california": 10, "digits": 30, "breast_cancer": 50, "wine": 100,
               "mnist1d": 30}  # fmt: skip


def load(name: str, num_samples: int | None = None):
    """One of :data:`DATASETS`, or ``None`` for California housing when it is not on disk.

    ``num_samples``: the number of signals mnist1d generates (ignored for the other sets;
    ``None``: the generator's 5,000).

    Example:
        >>> from inna_jax.reproduce import egn
        >>> egn.load("diabetes").task
        'regression'
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    try:
        sized = num_samples if name == "mnist1d" else None
        return reg.load_dataset(name, num_samples=sized)
    except FileNotFoundError:
        if name == "california":
            return None
        raise


def make_model(data, seed: Any):
    """The MLP 32-64-32 for ``data`` (one output for regression), from ``seed`` (an int or a
    PRNG key)."""
    return reg.make_model("mlp", data, seed, hidden=HIDDEN)


def make_optimizer(method: str, model, loss: str, lr: float, egn_regularizer: float):
    """``"egn"``, ``"egn_lm"``, ``"sgn"``, ``"sgd"`` or ``"adam"`` for ``model``.

    ``"egn"`` is EGN with the Armijo line search and a fixed :math:`\\lambda`; ``"egn_lm"`` adds
    the Levenberg-Marquardt adaptive :math:`\\lambda`. The model's graph gives ``predict_fn``.

    Returns:
        An :class:`~inna_jax.train.OptimizerSpec` of :mod:`inna_jax.reproduce.registry`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method in ("egn", "egn_lm"):
        return reg.make_optimizer(
            method, lr, model=model, loss=loss, regularizer=egn_regularizer
        )  # fmt: skip
    if method == "sgn":
        return reg.make_optimizer(method, lr, model=model, loss=loss)
    return reg.make_optimizer(method, lr)


def run(
    *,
    out: str | Path = "out/egn",
    datasets: tuple[str, ...] = DATASETS,
    num_samples: int | None = None,
    seeds: int = 2,
    epochs: dict[str, int] | None = None,
    batch_size: int = 32,
    egn_learning_rates: tuple[float, ...] = (0.3, 1.0),
    egn_regularizer: float = 1.0,
    sgn_learning_rates: tuple[float, ...] = (0.1, 1.0),
    sgd_grid: tuple[float, ...] = SGD_GRID,
    adam_grid: tuple[float, ...] = ADAM_GRID,
    quiet: bool = True,
    blas_threads: int = 1,
    mesh: Any = None,
) -> list[dict[str, Any]]:
    """Trains EGN, SGN and the tuned SGD and Adam on each data set; writes table and figure.

    For each data set and method, the runs of every candidate rate and every seed form one
    group (:func:`inna_jax.reproduce.protocol.grid_search`); the best rate is the one with
    the best mean final test metric. ``seconds`` and the time axis of the figure are the
    group's training wall time divided by its number of runs.

    Args:
        out: output folder.
        datasets: names from :data:`DATASETS`; California housing is skipped, with a note,
            when scikit-learn does not have it on disk.
        num_samples: the number of signals mnist1d generates (a multiple of 10, 80 % for
            training); ``None``: the generator's 5,000.
        seeds: seeds per method (weights and batch order).
        epochs: epochs per data set (default :data:`DEFAULT_EPOCHS`).
        batch_size: the batch size of every method.
        egn_learning_rates: EGN's step caps tried (line search on), for EGN and EGN+LM.
        egn_regularizer: EGN's :math:`\\lambda` (the initial one for EGN+LM).
        sgn_learning_rates: SGN's step caps tried (line search on).
        sgd_grid: SGD learning rates tried.
        adam_grid: Adam learning rates tried.
        quiet: turn the progress bars off.
        blas_threads: OpenBLAS/LAPACK threads during the run (``threadpoolctl``).
        mesh: a mesh for the groups of runs (:func:`inna_jax.train.run_mesh`), or ``None``.

    Returns:
        One row per (data set, method): ``dataset``, ``method``, ``learning_rate``, ``metric``,
        ``final_mean``, ``final_std``, ``seconds`` (training seconds per run), ``steps`` and
        ``stopped`` (seeds whose run hit a non-finite loss and stopped early; their final
        metric is that of the last finite parameters).

    Raises:
        ValueError: for an unknown data set, or when no requested data set is available.
    """
    import scipy.linalg.cython_lapack  # noqa: F401  (see below)
    from threadpoolctl import threadpool_limits

    bad = [d for d in datasets if d not in DATASETS]
    if bad or not datasets:
        raise ValueError(f"datasets must be a non-empty subset of {DATASETS}, got {datasets}")
    # One LAPACK thread: jaxlib's CPU Cholesky calls OpenBLAS, whose threaded potrf for
    # n >= 256 (EGN's b*C = 320 here) spins for ~0.2 s per call on a busy machine. That is
    # SciPy's OpenBLAS (jaxlib takes its LAPACK from scipy.linalg.cython_lapack), loaded
    # above: threadpoolctl limits only the libraries already loaded when it is entered.
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _run(
            out=Path(out),
            datasets=datasets,
            num_samples=num_samples,
            seeds=seeds,
            epochs={**DEFAULT_EPOCHS, **(epochs or {})},
            batch_size=batch_size,
            grids={
                "egn": tuple(egn_learning_rates),
                "egn_lm": tuple(egn_learning_rates),
                "sgn": tuple(sgn_learning_rates),
                "sgd": tuple(sgd_grid),
                "adam": tuple(adam_grid),
            },
            egn_regularizer=egn_regularizer,
            quiet=quiet,
            mesh=mesh,
        )


#: Gauss-Newton methods: on CPU their groups loop over the runs (see ``_run``).
GAUSS_NEWTON = ("egn", "egn_lm", "sgn")


def _load_all(datasets, batch_size: int, num_samples: int | None) -> tuple[list, list[str]]:
    """The data sets that are on disk, and a note for each one skipped."""
    loaded, skipped = [], []
    for name in datasets:
        data = load(name, num_samples)
        if data is None:
            skipped.append(f"{name}: not on disk (fetch_california_housing without download)")
            print(f"skipping {name}: scikit-learn does not have it on disk (no download)")
        else:
            loaded.append(data)
    if not loaded:
        raise ValueError(
            "no data set left to run: " + "; ".join(skipped) + f"; choose among {DATASETS}"
        )
    too_small = [d.name for d in loaded if len(d.x_train) < batch_size]
    if too_small:
        raise cli_args.UsageError(
            f"batch_size (--batch-size) {batch_size} is larger than the training set of "
            f"{', '.join(too_small)}"
        )
    return loaded, skipped


def _search(data, method, grid, models, model0, *, seeds, epochs, batch_size,
            egn_regularizer, quiet, mesh, strategy):  # fmt: skip
    """One method's group on one data set: every rate of ``grid`` and every seed."""
    from inna_jax.reproduce import protocol

    key, loss = report.metric(data), reg.loss_for(data)
    return protocol.grid_search(
        data,
        models,
        make_optimizer(method, model0, loss, float(grid[0]), egn_regularizer),
        grid,
        score=lambda runs, key=key: float(np.mean([r.history[-1][key] for r in runs])),
        higher_is_better=data.num_classes > 0,
        seeds=range(seeds),
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        mesh=mesh,
        quiet=quiet,
        desc=f"{data.name} {method} ({len(grid)} rates x {seeds} seeds)",
        strategy=strategy,
    )


def _run(*, out, datasets, num_samples, seeds, epochs, batch_size, grids, egn_regularizer, quiet,
         mesh):  # fmt: skip
    from inna_jax.reproduce import protocol
    from inna_jax.train import _parallel

    # On CPU the Gauss-Newton groups apply one compiled single-run step to each run in turn
    # (fit_many's strategy="loop"): their steps are compute-bound (a bC x bC Gram matrix and
    # its Cholesky), so a vmapped program is no faster there, and the single-run program
    # gives each run exactly the numbers of a separate run, while a vmapped float32 program
    # differs in the last bits, which SGN's CG and line search and the Levenberg-Marquardt
    # rule amplify. SGD and Adam groups are vmapped. On accelerators every group is vmapped.
    # The groups train one after the other (not protocol.run_concurrently, as figure2 does):
    # the table compares the methods' seconds, which groups sharing the cores would blur.
    cpu = _parallel.platform(mesh) == "cpu"
    runs_axis = mesh is not None and dict(mesh.shape).get("runs", 1) > 1

    loaded, skipped = _load_all(datasets, batch_size, num_samples)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    history_rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple]] = {}
    start = time.perf_counter()
    for data in loaded:
        key = report.metric(data)
        models = protocol.cached_models(lambda key, data=data: make_model(data, key))
        model0 = models(0)
        curves[data.name] = {}
        for method in METHODS:
            grid = grids[method]
            loop = cpu and method in GAUSS_NEWTON and not runs_axis
            found = _search(data, method, grid, models, model0, seeds=seeds,
                            epochs=int(epochs[data.name]), batch_size=batch_size,
                            egn_regularizer=egn_regularizer, quiet=quiet, mesh=mesh,
                            strategy="loop" if loop else "auto")  # fmt: skip
            per_run = len(grid) * seeds  # the group's time is shared by its runs
            history_rows += report.history_rows(data.name, method, found, per_run, key)
            rows.append(report.table_row(data.name, method, found, per_run, key))
            hists = [r.history for r in found.results[found.best]]
            curves[data.name][rows[-1]["method"]] = (hists, per_run)
    print(report.format_table(rows))
    for row, method in zip(rows, [m for _ in loaded for m in METHODS], strict=True):
        grid = grids[method]
        if len(grid) > 1 and row["learning_rate"] in (min(grid), max(grid)):
            print(f"note: {row['dataset']} {row['method']} is at the edge of its grid {grid}")
    report.plot(out / "egn_curves.png", curves, loaded, hidden=HIDDEN, batch_size=batch_size,
                seeds=seeds, lam=egn_regularizer)  # fmt: skip
    summary = {
        "hidden": HIDDEN,
        "seeds": seeds,
        "epochs": {d.name: int(epochs[d.name]) for d in loaded},
        "batch_size": batch_size,
        "egn": {"learning_rates": list(grids["egn"]), "regularizer": egn_regularizer},
        "sgn": {
            "learning_rates": list(grids["sgn"]),
            "regularizer": reg.OPTIMIZERS["sgn"].hyperparams["regularizer"],
            "cg_iterations": 10,
        },
        "sgd_grid": list(grids["sgd"]),
        "adam_grid": list(grids["adam"]),
        "sizes": {
            d.name: {"train": len(d.x_train), "test": len(d.x_test), "classes": d.num_classes}
            for d in loaded
        },  # fmt: skip
        "num_samples_mnist1d": num_samples,
        "skipped": skipped,
        "machine": machine.machine_description(),
        "seconds": "training wall time of each method's group (rates x seeds) / its runs",
        "wall_seconds": None,  # set once the tables are written
    }
    report.write(out, rows, history_rows, summary, start)
    return rows


_pint, _pfloat = cli_args.positive_int, cli_args.positive_float
_FLAGS = (
    ("--out", None, "out/egn", "output folder (CSV, JSON, PNG)"),
    ("--datasets", cli_args.choice(DATASETS), list(DATASETS),
     "data sets (California housing only if already on disk)", {"nargs": "+"}),
    ("--seeds", _pint, 2, "seeds per method"),
    ("--epochs", _pint, None, "epochs for every data set (default per set)"),
    ("--batch-size", _pint, 32, "batch size of every method"),
    ("--egn-lr", _pfloat, [0.3, 1.0], "EGN step caps tried", {"nargs": "+"}),
    ("--egn-regularizer", _pfloat, 1.0, "EGN initial lambda"),
    ("--sgn-lr", _pfloat, [0.1, 1.0], "SGN step caps tried", {"nargs": "+"}),
    ("--sgd-lr", _pfloat, list(SGD_GRID), "SGD learning rates tried", {"nargs": "+"}),
    ("--adam-lr", _pfloat, list(ADAM_GRID), "Adam learning rates tried", {"nargs": "+"}),
    ("--num-samples", cli_args.multiple_of(10, 20), None,
     "mnist1d's number of generated signals, 80%% for training (default: 5000)"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``inna-jax egn``."""
    cli_args.add_flags(parser, _FLAGS)
    parser.add_argument(
        "--full", action="store_true", help="paper-like run: 5 seeds and more epochs (slow)"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar per group")
    parser.add_argument(
        "--blas-threads", type=_pint, default=1, help="OpenBLAS/LAPACK threads (Cholesky on CPU)"
    )
    cli_args.add_parallel_arguments(parser, groups=True)


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` with the parsed flags."""
    seeds = 5 if args.full else args.seeds
    epochs = dict(FULL_EPOCHS) if args.full else {}
    if args.epochs is not None:
        epochs = {name: args.epochs for name in DATASETS}
    mesh = cli_args.group_mesh(args)  # jax.distributed on several hosts, then the mesh
    try:
        run(
            out=args.out,
            datasets=tuple(dict.fromkeys(args.datasets)),
            num_samples=args.num_samples,
            seeds=seeds,
            epochs=epochs,
            batch_size=args.batch_size,
            egn_learning_rates=tuple(args.egn_lr),
            egn_regularizer=args.egn_regularizer,
            sgn_learning_rates=tuple(args.sgn_lr),
            sgd_grid=tuple(args.sgd_lr),
            adam_grid=tuple(args.adam_lr),
            quiet=not args.progress,
            blas_threads=args.blas_threads,
            mesh=mesh,
        )
    except ValueError as err:
        if str(err).startswith("no data set left"):
            raise cli_args.UsageError(f"--datasets: {err}") from err
        raise
    return 0
