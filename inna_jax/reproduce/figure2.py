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
import csv
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax.reproduce import cli_args, plots
from inna_jax.reproduce import registry as reg

#: Each method: a registry optimizer and its fixed hyperparameters (gamma_0 is searched).
METHOD_OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "SGD": ("sgd", {"decay_power": 0.5}),
    "Adagrad": ("adagrad", {}),
    "Adam": ("adam", {}),
    "INNA (0.1, 0.1)": ("inna", {"alpha": 0.1, "beta": 0.1, "decay_power": 0.5}),
    "INNA (0.5, 0.1)": ("inna", {"alpha": 0.5, "beta": 0.1, "decay_power": 0.5}),
    "INNA (0.5, 0.5)": ("inna", {"alpha": 0.5, "beta": 0.5, "decay_power": 0.5}),
    "INNAprop": ("innaprop", {"alpha": 0.1, "beta": 0.9, "weight_decay": 0.0}),
}
#: Every method that ``--methods`` accepts.
METHODS = tuple(METHOD_OPTIMIZERS)
#: The methods of the paper's Figure 2, run by default (INNAprop is asked for by name or with
#: ``--methods all``).
DEFAULT_METHODS = tuple(m for m in METHODS if m != "INNAprop")
INNA_SETTINGS = {
    m: (o["alpha"], o["beta"]) for m, (name, o) in METHOD_OPTIMIZERS.items() if name == "inna"
}
#: gamma_0 grids of the reduced runs (digits, mnist1d): 4 values each, to stay in minutes.
REDUCED_GRIDS: dict[str, tuple[float, ...]] = {
    "SGD": (0.1, 0.3, 1.0, 3.0),
    "Adagrad": (0.03, 0.1, 0.3, 1.0),
    "Adam": (0.001, 0.003, 0.01, 0.03),
    **{m: (0.1, 0.3, 1.0, 3.0) for m in INNA_SETTINGS},
    # INNAprop: Adam's grid; on digits a 3-epoch search over 1e-4..3e-2 picks 0.01 (the
    # training loss: 1.64, 0.52, 0.10, 0.025, 0.012, 0.39), inside this grid.
    "INNAprop": (0.001, 0.003, 0.01, 0.03),
}
#: gamma_0 grids of the CIFAR-100 runs: 6 values each, factors of about 3 (the paper does
#: not publish its grids).
PAPER_GRIDS: dict[str, tuple[float, ...]] = {
    "SGD": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    "Adagrad": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
    "Adam": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    **{m: (0.003, 0.01, 0.03, 0.1, 0.3, 1.0) for m in INNA_SETTINGS},
    # INNAprop: around 1e-3, the default of the authors' code, up to 0.03 (below beta = 0.9).
    "INNAprop": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
}
DATASETS = ("digits", "mnist1d", "cifar100")
#: The paper's setting: dataset, epochs, seeds, batch size, grid-search epochs.
PAPER = {"dataset": "cifar100", "epochs": 200, "seeds": 5, "batch_size": 32, "grid_epochs": 15}
_REDUCED_DEFAULTS = {"epochs": 20, "grid_epochs": 3}
_MODEL = {"digits": "cnn", "mnist1d": "cnn", "cifar100": "nin"}


def make_optimizer(method: str, gamma0: float):
    r"""The optimizer of one Figure-2 method with initial step :math:`\gamma_0`.

    INNA (:math:`\alpha, \beta`) and SGD use :math:`\gamma_k = \gamma_0/\sqrt{k+1}`
    (:func:`~inna_jax.power_decay` with power 1/2); Adam, Adagrad and INNAprop use the
    constant learning rate :math:`\gamma_0` and their own adaptivity (optax defaults for
    Adam and Adagrad; INNAprop with :math:`\alpha = 0.1`, :math:`\beta = 0.9`, no weight
    decay).

    Args:
        method: one of :data:`METHODS`.
        gamma0: the initial step size, ``> 0``.

    Returns:
        An :class:`~inna_jax.train.OptimizerSpec` (``.build()`` gives the optax optimizer).

    Example:
        >>> from inna_jax.reproduce.figure2 import make_optimizer
        >>> spec = make_optimizer("INNA (0.5, 0.1)", 0.1)
        >>> spec.hyperparams
        {'learning_rate': 0.1, 'alpha': 0.5, 'beta': 0.1, 'decay_power': 0.5}
    """
    if (
        not (
            isinstance(gamma0, int | float)
            and not isinstance(gamma0, bool)
            and math.isfinite(gamma0)
        )
        or gamma0 <= 0
    ):
        raise ValueError(f"gamma0 must be a finite number > 0, got gamma0={gamma0!r}")
    if method not in METHOD_OPTIMIZERS:
        raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
    name, options = METHOD_OPTIMIZERS[method]
    return reg.make_optimizer(name, float(gamma0), **options)


def load_dataset(
    dataset: str,
    *,
    data_dir: str | Path | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
):
    """The data set of a run, optionally cut to its first ``num_train``/``num_test`` examples.

    Example:
        >>> from inna_jax.reproduce.figure2 import load_dataset
        >>> load_dataset("digits", num_train=100).x_train.shape
        (100, 64)
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")
    return reg.load_dataset(dataset, data_dir=data_dir, num_train=num_train, num_test=num_test)


def make_model(dataset: str, num_classes: int, seed: Any):
    """The model of a data set, initialised from ``seed`` (an int or a PRNG key): NiN on
    CIFAR-100, else a small CNN.

    Example:
        >>> from inna_jax.models import count_params
        >>> from inna_jax.reproduce.figure2 import make_model
        >>> count_params(make_model("digits", 10, seed=0))
        9930
    """
    from flax import nnx

    from inna_jax.models import NiN, SmallCNN

    if dataset == "cifar100":
        return NiN(num_classes, rngs=nnx.Rngs(seed))
    return SmallCNN(reg.CNN_SHAPES[dataset], num_classes, rngs=nnx.Rngs(seed))


def _final_train_loss(runs: list) -> float:
    run = runs[0]
    if run.diverged or not run.history:
        return math.inf
    return run.history[-1]["train_loss"]


def grid_search(
    dataset: str,
    data: Any,
    grids: Mapping[str, Sequence[float]],
    *,
    epochs: int,
    batch_size: int = 32,
    seed: int = 0,
    mesh: Any = None,
    quiet: bool = True,
    models: Any = None,
    workers: int | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Picks each method's :math:`\\gamma_0`: the lowest training loss after ``epochs`` epochs.

    Every candidate starts from the weights of ``seed`` and sees the same batches; a
    method's candidates train as one group (:func:`inna_jax.reproduce.protocol.grid_search`).
    A run that diverges (non-finite loss) scores ``inf``; ties go to the smaller value. A
    grid of one value is taken as is, without training (its row has ``train_loss=None``).

    ``models`` is a ``make_model(seed)`` (default: the data set's model, each seed built
    once). Up to ``workers`` methods search at once
    (:func:`~inna_jax.reproduce.protocol.run_concurrently`; ``None``:
    :func:`~inna_jax.reproduce.protocol.default_workers`, one more than the CPU's cores on a
    CPU without a mesh, else 1).

    Returns:
        ``(best, rows)``: the chosen value per method, and one row per candidate with keys
        ``method``, ``gamma0``, ``train_loss``, ``diverged``, ``chosen``.
    """
    from inna_jax.reproduce import protocol

    if models is None:
        models = protocol.cached_models(lambda key: make_model(dataset, data.num_classes, key))

    def search(method: str, values: Sequence[float]):
        return protocol.grid_search(
            data,
            models,
            make_optimizer(method, float(values[0])),
            values,
            score=_final_train_loss,
            seeds=(seed,),
            epochs=epochs,
            batch_size=batch_size,
            loss="cross_entropy",
            mesh=mesh,
            quiet=quiet,
            desc=f"grid {method}",
            eval_every=None,  # the score needs the final training loss only
            eval_test=False,
            compiler_options=protocol.fast_compile_options(mesh),
        )

    searched = [m for m, values in grids.items() if len(values) > 1]
    found = dict(
        zip(
            searched,
            protocol.run_concurrently(
                [lambda m=m: search(m, grids[m]) for m in searched], workers=workers, mesh=mesh
            ),
            strict=True,
        )
    )
    best, rows = {}, []
    for method, values in grids.items():
        if method not in found:  # one value, nothing to choose: no run
            best[method] = float(values[0])
            rows.append(
                {
                    "method": method,
                    "gamma0": best[method],
                    "train_loss": None,
                    "diverged": None,
                    "chosen": True,
                }
            )
            continue
        best[method] = found[method].best
        rows += [
            {
                "method": method,
                "gamma0": row["value"],
                "train_loss": row["score"],
                "diverged": bool(row["diverged"]),
                "chosen": row["chosen"],
            }
            for row in found[method].rows
        ]
    return best, rows


def _curves(histories: list[list[dict]], epochs: int) -> dict[str, np.ndarray]:
    """Per-seed arrays ``(seeds, epochs + 1)``, NaN after a divergence."""
    out = {}
    for key in ("train_loss", "test_accuracy"):
        a = np.full((len(histories), epochs + 1), np.nan)
        for s, hist in enumerate(histories):
            for row in hist:
                a[s, row["epoch"]] = row[key]
        out[key] = a
    with np.errstate(divide="ignore", invalid="ignore"):
        out["log10_train_loss"] = np.log10(out["train_loss"])
    return out


def _band(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after divergence
        return np.nanmean(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)


def _setting_label(dataset, model_params, epochs, seeds, reduced, num_train):
    name = {"digits": "digits 8x8", "mnist1d": "mnist1d", "cifar100": "CIFAR-100"}[dataset]
    model = "NiN" if dataset == "cifar100" else "small CNN"
    subset = f", first {num_train} training examples" if num_train else ""
    plural = lambda n, word: f"{n} {word}" + ("s" if n != 1 else "")  # noqa: E731
    what = (
        f"{name}{subset}, {model} ({model_params:,} params), {plural(epochs, 'epoch')}, "
        f"{plural(seeds, 'seed')}"
    )
    if reduced:
        return f"REDUCED setting, not the paper's (CIFAR-100, NiN, 200 epochs, 5 seeds): {what}"
    return f"paper setting: {what}"


def _plot(path: Path, curves: dict, table: dict, label: str, batch_size: int) -> None:
    import textwrap

    fig, axes = plots.figure(2, width=5.4, height=4.2)
    seeds = 0
    for method, c in curves.items():
        g0 = table[method]["gamma0"]
        seeds = c["train_loss"].shape[0]
        epochs = np.arange(c["train_loss"].shape[1])
        line = None
        for ax, key in zip(axes[0], ("log10_train_loss", "test_accuracy"), strict=True):
            line = plots.band(
                ax, epochs, c[key], label=f"{method}, $\\gamma_0$={g0:g}",
                color=None if line is None else line.get_color(),
            )  # fmt: skip
    spread = f"mean and min-max band over {seeds} seeds" if seeds > 1 else "one seed"
    axes[0, 0].set(
        xlabel="epoch", ylabel="log10 training loss", title=f"training loss (batch {batch_size})"
    )
    acc = axes[0, 1]
    acc.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    last = max(c["test_accuracy"].shape[1] for c in curves.values()) - 1
    if last >= 2:  # zoom to the trained epochs: epoch 0 is chance level
        acc.set_xlim(1, last)
        acc.set_title("test accuracy (from epoch 1)")
    plots.zoom(acc, [c["test_accuracy"][:, 1:] for c in curves.values()], lower=0, upper=1)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        plots.integer_ticks(ax)
    plots.legend_outside(fig, axes[0, 0], where="bottom", ncols=3)
    title = f"Figure 2 ({spread}; INNA and SGD: $\\gamma_k = \\gamma_0/\\sqrt{{k+1}}$). {label}"
    fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    plots.save(fig, path)


def _format_table(rows: list[dict]) -> str:
    head = (
        f"{'method':16s} {'gamma0':>8s} {'log10 train loss (min..max)':>30s} "
        f"{'test accuracy (min..max)':>28s} {'diverged':>8s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        loss = (
            f"{r['log10_train_loss']:+.3f} ({r['log10_train_loss_min']:+.3f}.."
            f"{r['log10_train_loss_max']:+.3f})"
        )
        acc = (
            f"{r['test_accuracy']:.4f} ({r['test_accuracy_min']:.4f}..{r['test_accuracy_max']:.4f})"
        )
        lines.append(
            f"{r['method']:16s} {r['gamma0']:8g} {loss:>30s} {acc:>28s} {r['diverged_seeds']:>8d}"
        )
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _check_positive_int(name: str, v: Any) -> None:
    if isinstance(v, bool) or int(v) != v or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")


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
            CIFAR-100, else :data:`REDUCED_GRIDS`).
        methods: a subset of :data:`METHODS` (default: :data:`DEFAULT_METHODS`, the
            paper's six).
        num_train: keep the first ``num_train`` training examples (a reduced run).
        num_test: keep the first ``num_test`` test examples.
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
    import jax

    from inna_jax.models import count_params
    from inna_jax.reproduce import protocol
    from inna_jax.train import run_mesh

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
    default_grids = PAPER_GRIDS if paper else REDUCED_GRIDS
    grids = {m: tuple(default_grids[m]) for m in methods} | {
        m: tuple(float(g) for g in v) for m, v in (grids or {}).items()
    }
    grids = {m: grids[m] for m in methods}
    for m, values in grids.items():
        if not values or any(not (math.isfinite(g) and g > 0) for g in values):
            raise ValueError(f"the grid of {m} must hold numbers > 0, got {values}")
    if mesh is None and (devices is not None or jax.process_count() > 1):
        mesh = run_mesh(devices)  # several hosts: all their devices
    if workers is not None:
        _check_positive_int("workers", workers)
    if workers is not None and workers > 1 and jax.process_count() > 1:
        raise cli_args.UsageError(
            f"workers (--workers) must be 1 on several hosts (every process launches its "
            f"programs in the same order), got {workers}"
        )

    t0 = time.perf_counter()
    plots.preload()  # matplotlib loads while the data and the first programs are built
    data = load_dataset(dataset, data_dir=data_dir, num_train=num_train, num_test=num_test)
    if batch_size > len(data.x_train):
        raise cli_args.UsageError(
            f"batch_size (--batch-size) must be at most the {len(data.x_train)} training "
            f"examples, got {batch_size}"
        )
    models = protocol.cached_models(lambda key: make_model(dataset, data.num_classes, key))
    n_params = count_params(models(0))
    reduced = not (
        paper
        and num_train is None
        and num_test is None
        and epochs >= PAPER["epochs"]
        and seeds >= PAPER["seeds"]
        and batch_size == PAPER["batch_size"]
    )
    label = _setting_label(dataset, n_params, epochs, seeds, reduced, num_train)
    say = print if verbose else (lambda *a, **k: None)
    say(f"Figure 2, {label}")
    say(
        f"  {len(data.x_train)} training / {len(data.x_test)} test examples, batch "
        f"{batch_size}; grid search over the first {grid_epochs} epoch(s)"
    )

    def method_protocol(m: str) -> tuple[float, list[dict], list]:
        """Step 1 then step 2 for one method: its grid search, then its seeds."""
        best, rows = grid_search(
            dataset,
            data,
            {m: grids[m]},
            epochs=grid_epochs,
            batch_size=batch_size,
            mesh=mesh,
            quiet=quiet,
            models=models,
            workers=1,
        )
        runs = protocol.train_group(
            data,
            models,
            [make_optimizer(m, best[m])] * seeds,
            range(seeds),
            epochs=epochs,
            batch_size=batch_size,
            loss="cross_entropy",
            mesh=mesh,
            quiet=quiet,
            desc=f"{m} g0={best[m]:g}, {seeds} seeds",
            compiler_options=protocol.fast_compile_options(mesh),
        )
        return best[m], rows, runs

    # Each method goes from its grid search to its seeds without waiting for the others.
    done = protocol.run_concurrently(
        [lambda m=m: method_protocol(m) for m in methods], workers=workers, mesh=mesh
    )
    gamma0 = {m: g for m, (g, _, _) in zip(methods, done, strict=True)}
    grid_rows = [row for _, rows, _ in done for row in rows]
    groups = [runs for _, _, runs in done]
    for m in methods:
        at_edge = len(grids[m]) > 1 and gamma0[m] in (min(grids[m]), max(grids[m]))
        edge = " (at the edge of its grid)" if at_edge else ""
        say(f"  gamma0[{m}] = {gamma0[m]:g}{edge}")

    curves, history_rows, table = {}, [], {}
    for m, runs in zip(methods, groups, strict=True):
        histories = [r.history for r in runs]
        for s, hist in enumerate(histories):
            history_rows += [
                {
                    "method": m,
                    "seed": s,
                    "epoch": r["epoch"],
                    "train_loss": r["train_loss"],
                    "test_loss": r["test_loss"],
                    "test_accuracy": r["test_accuracy"],
                }
                for r in hist
            ]
        curves[m] = c = _curves(histories, epochs)
        loss, loss_lo, loss_hi = (v[-1] for v in _band(c["log10_train_loss"]))
        acc, acc_lo, acc_hi = (v[-1] for v in _band(c["test_accuracy"]))
        table[m] = {
            "method": m,
            "gamma0": gamma0[m],
            "epochs": epochs,
            "seeds": seeds,
            "log10_train_loss": float(loss),
            "log10_train_loss_min": float(loss_lo),
            "log10_train_loss_max": float(loss_hi),
            "test_accuracy": float(acc),
            "test_accuracy_min": float(acc_lo),
            "test_accuracy_max": float(acc_hi),
            "diverged_seeds": sum(r.diverged for r in runs),
        }

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [table[m] for m in methods]
    setting = {
        "dataset": dataset,
        "reduced": reduced,
        "label": label,
        "model": "NiN" if paper else "SmallCNN",
        "model_params": n_params,
        "num_train": len(data.x_train),
        "num_test": len(data.x_test),
        "epochs": epochs,
        "seeds": seeds,
        "batch_size": batch_size,
        "grid_epochs": grid_epochs,
        "grids": {m: list(v) for m, v in grids.items()},
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "wall_time_s": None,
    }
    files = {
        name: str(out / name)
        for name in (
            "grid.csv",
            "histories.csv",
            "table.csv",
            "table.json",
            "figure2.png",
            "summary.json",
        )
    }
    setting["wall_time_s"] = round(time.perf_counter() - t0, 1)
    summary = {"setting": setting, "gamma0": gamma0, "table": rows}
    if jax.process_index() == 0:  # several hosts compute the same results; one writes them
        _write_csv(out / "grid.csv", grid_rows)
        _write_csv(out / "histories.csv", history_rows)
        _write_csv(out / "table.csv", rows)
        (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
        _plot(out / "figure2.png", curves, table, label, batch_size)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say(f"\nFinal table after {epochs} epochs ({label}):")
    say(_format_table(rows))
    say(f"\nwrote {', '.join(files)} to {out} in {setting['wall_time_s']} s")
    return {**summary, "files": files}


def _parse_grid(text: str) -> tuple[str, tuple[float, ...]]:
    method, sep, values = text.partition("=")
    key = _method_key(method)
    if not sep or key not in _BY_KEY:
        raise argparse.ArgumentTypeError(
            f"takes METHOD=v1,v2,... with METHOD in {', '.join(METHODS)}, got {text!r}"
        )
    try:
        grid = tuple(float(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad numbers in {text!r}") from None
    if any(not (math.isfinite(g) and g > 0) for g in grid):
        raise argparse.ArgumentTypeError(f"values must be finite numbers > 0, got {text!r}")
    return _BY_KEY[key], grid


def _method_key(text: str) -> str:
    return "".join(text.split()).lower()


_BY_KEY = {_method_key(m): m for m in METHODS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax figure2``."""
    parser.add_argument(
        "--dataset",
        type=cli_args.choice(DATASETS),
        default="digits",
        help="digits and mnist1d are the reduced CPU settings (small CNN); "
        "cifar100 is the paper's (NiN), needs --data-dir",
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder holding cifar-100-python/ (train, test, meta)"
    )
    parser.add_argument(
        "--epochs",
        type=cli_args.positive_int,
        default=None,
        help="training epochs (default: 20, or 200 with cifar100)",
    )
    parser.add_argument(
        "--seeds",
        type=cli_args.positive_int,
        default=5,
        help="seeds; seed s gives the same initial weights and batches to every method",
    )
    parser.add_argument(
        "--batch-size", type=cli_args.positive_int, default=32, help="batch size (paper: 32)"
    )
    parser.add_argument(
        "--grid-epochs",
        type=cli_args.positive_int,
        default=None,
        help="epochs of the gamma0 grid search (default: 3, or 15 with cifar100; at most --epochs)",
    )
    parser.add_argument(
        "--grid",
        type=_parse_grid,
        action="append",
        default=[],
        metavar="METHOD=v1,v2,...",
        help="replace one method's gamma0 grid, e.g. --grid 'Adam=1e-4,1e-3' (repeatable)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated methods (any case), or 'all' to add INNAprop to the paper's six; "
        f"choose from {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--num-train",
        type=cli_args.positive_int,
        default=None,
        help="keep only the first N training examples",
    )
    parser.add_argument(
        "--num-test",
        type=cli_args.positive_int,
        default=None,
        help="keep only the first N test examples",
    )
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


def parse_methods(text: str) -> list[str]:
    """The methods named in ``text`` (comma-separated, any case and spacing; ``all``: every
    method of :data:`METHODS`).

    Raises:
        cli_args.UsageError: naming ``--methods`` and the unknown name.

    Example:
        >>> from inna_jax.reproduce.figure2 import parse_methods
        >>> parse_methods("adam, inna(0.5,0.1), innaprop")
        ['Adam', 'INNA (0.5, 0.1)', 'INNAprop']
    """
    if text.strip().lower() == "all":
        return list(METHODS)
    methods = []
    for part in _split_methods(text):
        key = _method_key(part)
        if key not in _BY_KEY:
            raise cli_args.UsageError(
                f"--methods: unknown method {part!r}; choose from {', '.join(METHODS)}"
            )
        methods.append(_BY_KEY[key])
    if not methods:
        raise cli_args.UsageError(f"--methods: give at least one of {', '.join(METHODS)}")
    return methods


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` from parsed command-line flags."""
    methods = parse_methods(args.methods)
    if args.dataset == "cifar100" and args.data_dir is None:
        raise cli_args.UsageError(
            "--dataset cifar100 needs --data-dir, the folder holding cifar-100-python/"
        )
    if args.grid_epochs is not None and args.epochs is not None and args.grid_epochs > args.epochs:
        raise cli_args.UsageError(
            f"--grid-epochs {args.grid_epochs} must be at most --epochs {args.epochs}"
        )
    cli_args.setup_parallel(args)  # jax.distributed on several hosts; a no-op for one process
    mesh = cli_args.device_mesh(args, groups=True)
    if args.batch_size % args.data_devices:
        raise cli_args.UsageError(
            f"--batch-size {args.batch_size} must be a multiple of --data-devices "
            f"{args.data_devices}"
        )
    try:
        _run_from_args(args, methods, mesh)
    except FileNotFoundError as err:  # e.g. no CIFAR-100 in --data-dir: a usage error
        raise cli_args.UsageError(
            f"--dataset {args.dataset} --data-dir {args.data_dir}: {err}"
        ) from err
    return 0


def _run_from_args(args: argparse.Namespace, methods: list[str], mesh: Any) -> dict:
    return run(
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
        mesh=mesh,
        out=args.out,
        quiet=not args.progress,
        workers=args.workers,
    )


def _split_methods(text: str) -> list[str]:
    """Splits "SGD,INNA (0.5, 0.1)" on the commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]
