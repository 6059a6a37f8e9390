"""The methods of Figure 2 (Castera et al., JMLR 2021, Section 5): their optimizers, grids,
data sets, models, and the grid search then seeds that each method runs.

:mod:`inna_jax.reproduce.figure2` reads its settings and hands each method to
:func:`train_method`; :mod:`inna_jax.reproduce.figure2_report` turns the runs into tables and
the figure.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inna_jax.reproduce import cli_args
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
#: gamma_0 grids of the digits runs: 4 values each, to stay in a minute.
REDUCED_GRIDS: dict[str, tuple[float, ...]] = {
    "SGD": (0.1, 0.3, 1.0, 3.0),
    "Adagrad": (0.03, 0.1, 0.3, 1.0),
    "Adam": (0.001, 0.003, 0.01, 0.03),
    **{m: (0.1, 0.3, 1.0, 3.0) for m in INNA_SETTINGS},
    # INNAprop: Adam's grid; on digits a 3-epoch search over 1e-4..3e-2 picks 0.01 (the
    # training loss: 1.64, 0.52, 0.10, 0.025, 0.012, 0.39), inside this grid.
    "INNAprop": (0.001, 0.003, 0.01, 0.03),
}
#: gamma_0 grids of the mnist1d runs: 6 values each, factors of about 3. On 20,000 signals
#: a 3-epoch search picks inside every grid (SGD and INNA (0.5, *) 1, INNA (0.1, 0.1) and
#: Adagrad 0.3, Adam 0.01, INNAprop 0.003; experiments/results/figure2_mnist1d/), where the
#: 4-value grids of the digits had SGD and every INNA at their largest value.
MNIST1D_GRIDS: dict[str, tuple[float, ...]] = {
    "SGD": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    "Adagrad": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    "Adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    **{m: (0.03, 0.1, 0.3, 1.0, 3.0, 10.0) for m in INNA_SETTINGS},
    "INNAprop": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
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
#: The data sets: digits and mnist1d (reduced, small CNN), cifar100 (the paper's, NiN).
DATASETS = ("digits", "mnist1d", "cifar100")


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
    num_samples: int | None = None,
):
    """The data set of a run, optionally cut to its first ``num_train``/``num_test`` examples
    (``num_samples``: the number of signals mnist1d generates, as
    :func:`inna_jax.reproduce.registry.load_dataset`).

    Example:
        >>> from inna_jax.reproduce.figure2 import load_dataset
        >>> load_dataset("digits", num_train=100).x_train.shape
        (100, 64)
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")
    return reg.load_dataset(
        dataset, data_dir=data_dir, num_train=num_train, num_test=num_test, num_samples=num_samples
    )


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


def group_options(epochs: int, batch_size: int, mesh: Any, quiet: bool) -> dict[str, Any]:
    """What every group of Figure 2 trains with, grid searches and seeds alike: cross-entropy,
    the batch size, the mesh, and LLVM -O1 on a CPU
    (:func:`~inna_jax.reproduce.protocol.fast_compile_options`)."""
    from inna_jax.reproduce import protocol

    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "loss": "cross_entropy",
        "mesh": mesh,
        "quiet": quiet,
        "compiler_options": protocol.fast_compile_options(mesh),
    }


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
            desc=f"grid {method}",
            eval_every=None,  # the score needs the final training loss only
            eval_test=False,
            **group_options(epochs, batch_size, mesh, quiet),
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
        if method in found:
            best[method] = found[method].best
        else:  # one value, nothing to choose: no run
            best[method] = float(values[0])
        rows += _grid_rows(method, best[method], found.get(method))
    return best, rows


def _grid_rows(method: str, best: float, found: Any) -> list[dict]:
    """The rows of one method's grid (one row, ``train_loss=None``, for a grid of one)."""
    if found is None:
        return [
            {"method": method, "gamma0": best, "train_loss": None, "diverged": None,
             "chosen": True}
        ]  # fmt: skip
    return [
        {
            "method": method,
            "gamma0": row["value"],
            "train_loss": row["score"],
            "diverged": bool(row["diverged"]),
            "chosen": row["chosen"],
        }
        for row in found.rows
    ]


def train_method(
    method: str,
    dataset: str,
    data: Any,
    grid: Sequence[float],
    models: Any,
    *,
    epochs: int,
    grid_epochs: int,
    seeds: int,
    batch_size: int,
    mesh: Any = None,
    quiet: bool = True,
) -> tuple[float, list[dict], list]:
    r"""One method's protocol: its grid search (:func:`grid_search`, over ``grid_epochs``
    epochs), then its ``seeds`` runs of ``epochs`` epochs with the chosen :math:`\gamma_0`,
    as one group of runs (:func:`inna_jax.reproduce.protocol.train_group`).

    Returns:
        ``(gamma0, grid_rows, runs)``: the chosen value, the grid's rows and one
        :class:`~inna_jax.train.FitResult` per seed.
    """
    from inna_jax.reproduce import protocol

    best, rows = grid_search(
        dataset,
        data,
        {method: grid},
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
        [make_optimizer(method, best[method])] * seeds,
        range(seeds),
        desc=f"{method} g0={best[method]:g}, {seeds} seeds",
        **group_options(epochs, batch_size, mesh, quiet),
    )
    return best[method], rows, runs


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
