"""EGN vs SGN, SGD and Adam on regression and classification (MLP 32-64-32; CPU, a few minutes).

The EGN paper (Korbit et al. 2024) compares its exact Gauss-Newton optimizer with SGN and
tuned first-order methods on small supervised problems. This command trains the same
Flax NNX MLP (hidden layers 32-64-32) on scikit-learn's diabetes (regression, standardized
target; California housing too when it is already on disk), scikit-learn's digits and
mnist1d (classification) with

* EGN (batch-space Gauss-Newton, Armijo line search, lambda = 1), and EGN+LM (the same with
  the Levenberg-Marquardt adaptive lambda),
* SGN (Gauss-Newton by 10 conjugate-gradient iterations, damping 1e-3, Armijo),
* SGD and Adam, each with a learning-rate grid (EGN and SGN get a small grid of step caps
  too); the best rate per method and data set is the one with the best mean final test
  metric (a choice made on the test set, the same for every method).

Every method starts from the same weights and sees the same batches for a given seed.
The command prints a table (final test RMSE or accuracy, mean and standard deviation over
seeds, training seconds, steps, runs stopped by a non-finite loss) and writes
``egn_curves.png`` (test metric against wall-clock time and against steps), ``table.csv``,
``table.json``, ``histories.csv`` (one row per run and epoch) and ``summary.json`` into
``--out``. ``--full`` uses the paper-like settings (5 seeds, more epochs).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optax
from flax import nnx

import inna_jax
from inna_jax.data import ArrayDataset, load_diabetes, load_digits, load_mnist1d
from inna_jax.models import MLP
from inna_jax.train import fit

HIDDEN = (32, 64, 32)
DATASETS = ("diabetes", "california", "digits", "mnist1d")
SGD_GRID = (1e-3, 1e-2, 1e-1)
ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
DEFAULT_EPOCHS = {"diabetes": 30, "california": 2, "digits": 5, "mnist1d": 4}
FULL_EPOCHS = {"diabetes": 100, "california": 10, "digits": 30, "mnist1d": 30}


def load_california(seed: int = 0) -> ArrayDataset | None:
    """California housing if scikit-learn finds it on disk (no download), else ``None``."""
    import sklearn.datasets

    from inna_jax.data._arrays import split_and_standardize

    try:
        bunch = sklearn.datasets.fetch_california_housing(download_if_missing=False)
    except OSError:
        return None
    x_tr, y_tr, x_te, y_te = split_and_standardize(
        bunch.data, bunch.target.astype(np.float64), test_fraction=0.25, seed=seed,
        standardize_targets=True,
    )  # fmt: skip
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=0, name="california")


def load(name: str) -> ArrayDataset | None:
    """One of :data:`DATASETS` (``None`` for California housing when it is not on disk)."""
    if name == "diabetes":
        return load_diabetes()
    if name == "digits":
        return load_digits()
    if name == "mnist1d":
        return load_mnist1d()
    if name == "california":
        return load_california()
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def make_model(data: ArrayDataset, seed: int) -> MLP:
    """The MLP 32-64-32 for ``data`` (one output for regression)."""
    in_features = int(np.prod(data.x_train.shape[1:]))
    out = data.num_classes if data.num_classes > 0 else 1
    return MLP(in_features, HIDDEN, out, rngs=nnx.Rngs(seed))


def make_optimizer(
    method: str, model: MLP, loss: str, lr: float, egn_regularizer: float
) -> optax.GradientTransformation:
    """``"egn"``, ``"egn_lm"``, ``"sgn"``, ``"sgd"`` or ``"adam"`` for ``model``.

    ``"egn"`` is EGN with the Armijo line search and a fixed :math:`\\lambda`; ``"egn_lm"`` adds
    the Levenberg-Marquardt adaptive :math:`\\lambda`. The model's graph gives ``predict_fn``.
    """
    graphdef, _ = nnx.split(model, nnx.Param)

    def predict_fn(params, x):
        return nnx.merge(graphdef, params)(x)

    if method in ("egn", "egn_lm"):
        return inna_jax.egn(
            predict_fn,
            loss,
            learning_rate=lr,
            regularizer=egn_regularizer,
            line_search=True,
            adaptive_regularization=method == "egn_lm",
        )
    if method == "sgn":
        return inna_jax.sgn(predict_fn, loss, learning_rate=lr, regularizer=1e-3)
    if method == "sgd":
        return optax.sgd(lr)
    if method == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown method {method!r}")


def _train(data, method, lr, *, seed, epochs, batch_size, egn_regularizer, quiet):
    loss = "cross_entropy" if data.num_classes > 0 else "mse"
    model = make_model(data, seed)
    tx = make_optimizer(method, model, loss, lr, egn_regularizer)
    result = fit(
        model,
        tx,
        data,
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        seed=seed,
        extra_args=method in ("egn", "egn_lm", "sgn"),
        quiet=quiet,
        desc=f"{data.name} {method} lr={lr:g} seed={seed}",
    )
    return result.history


def _metric(data: ArrayDataset) -> str:
    return "test_accuracy" if data.num_classes > 0 else "test_rmse"


def _better(data: ArrayDataset, a: float, b: float) -> bool:
    """Is ``a`` better than ``b`` (higher accuracy, lower RMSE; NaN is worst)?"""
    if not np.isfinite(a):
        return False
    if not np.isfinite(b):
        return True
    return a > b if data.num_classes > 0 else a < b


def _plot(path: Path, curves: dict[str, dict[str, list]], datasets: list[ArrayDataset]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.5), squeeze=False)
    for col, data in enumerate(datasets):
        key = _metric(data)
        for label, hist_list in curves[data.name].items():
            for row, xkey in enumerate(("time_s", "step")):
                ax = axes[row, col]
                n = min(len(hist) for hist in hist_list)  # a stopped run is shorter
                xs = np.mean([[h[xkey] for h in hist[:n]] for hist in hist_list], axis=0)
                ys = np.array([[h[key] for h in hist[:n]] for hist in hist_list], dtype=float)
                (line,) = ax.plot(xs, ys.mean(0), label=label)
                if len(hist_list) > 1:
                    ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.2, color=line.get_color())
                ax.set_xlabel("wall-clock seconds" if xkey == "time_s" else "steps")
                ax.set_ylabel(key.replace("_", " "))
                if data.num_classes == 0:
                    ax.set_yscale("log")
        axes[0, col].set_title(data.name)
        axes[0, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'dataset':<11}{'method':<17}{'metric':<14}{'final (mean ± std)':<22}{'seconds':>9}"
    lines = [head + f"{'steps':>8}{'stopped':>9}", "-" * (len(head) + 17)]
    for r in rows:
        final = f"{r['final_mean']:.4f} ± {r['final_std']:.4f}"
        lines.append(
            f"{r['dataset']:<11}{r['method']:<17}{r['metric']:<14}{final:<22}"
            f"{r['seconds']:>9.1f}{r['steps']:>8d}{r['stopped']:>9d}"
        )
    return "\n".join(lines)


def run(
    *,
    out: str | Path = "out/egn",
    datasets: tuple[str, ...] = ("diabetes", "california", "digits", "mnist1d"),
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
) -> list[dict[str, Any]]:
    """Trains EGN, SGN and the tuned SGD and Adam on each data set; writes table and figure.

    Args:
        out: output folder.
        datasets: names from :data:`DATASETS`; California housing is skipped, with a note,
            when scikit-learn does not have it on disk.
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

    Returns:
        One row per (data set, method): ``dataset``, ``method``, ``learning_rate``, ``metric``,
        ``final_mean``, ``final_std``, ``seconds`` (mean training time), ``steps`` and
        ``stopped`` (seeds whose run hit a non-finite loss and stopped early; their final
        metric is that of the last finite parameters).
    """
    from threadpoolctl import threadpool_limits

    # One LAPACK thread: jaxlib's CPU Cholesky calls OpenBLAS, whose threaded potrf for
    # n >= 256 (EGN's b*C = 320 here) spins for ~0.2 s per call on a busy machine.
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _run(
            out=Path(out),
            datasets=datasets,
            seeds=seeds,
            epochs={**DEFAULT_EPOCHS, **(epochs or {})},
            batch_size=batch_size,
            egn_learning_rates=tuple(egn_learning_rates),
            egn_regularizer=egn_regularizer,
            sgn_learning_rates=tuple(sgn_learning_rates),
            sgd_grid=sgd_grid,
            adam_grid=adam_grid,
            quiet=quiet,
        )


def _run(
    *,
    out,
    datasets,
    seeds,
    epochs,
    batch_size,
    egn_learning_rates,
    egn_regularizer,
    sgn_learning_rates,
    sgd_grid,
    adam_grid,
    quiet,
) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    loaded, skipped = [], []
    for name in datasets:
        data = load(name)
        if data is None:
            skipped.append(f"{name}: not on disk (fetch_california_housing without download)")
            print(f"skipping {name}: scikit-learn does not have it on disk (no download)")
        else:
            loaded.append(data)
    rows: list[dict[str, Any]] = []
    history_rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, list]] = {}
    start = time.perf_counter()
    for data in loaded:
        key = _metric(data)
        ep = int(epochs[data.name])
        curves[data.name] = {}
        candidates = [("egn", lr) for lr in egn_learning_rates]
        candidates += [("egn_lm", lr) for lr in egn_learning_rates]
        candidates += [("sgn", lr) for lr in sgn_learning_rates]
        candidates += [("sgd", lr) for lr in sgd_grid] + [("adam", lr) for lr in adam_grid]
        results: dict[tuple[str, float], list[list[dict]]] = {}
        for method, lr in candidates:
            results[(method, lr)] = [
                _train(
                    data,
                    method,
                    lr,
                    seed=s,
                    epochs=ep,
                    batch_size=batch_size,
                    egn_regularizer=egn_regularizer,
                    quiet=quiet,
                )
                for s in range(seeds)
            ]
            for s, hist in enumerate(results[(method, lr)]):
                for h in hist:
                    history_rows.append(
                        {"dataset": data.name, "method": method, "learning_rate": lr, "seed": s}
                        | {k: h.get(k) for k in ("epoch", "step", "time_s", "train_loss")}
                        | {"metric": key, "value": h.get(key)}
                    )
        for method in ("egn", "egn_lm", "sgn", "sgd", "adam"):
            best = None
            for (m, lr), hists in results.items():
                if m != method:
                    continue
                finals = np.array([h[-1][key] for h in hists], dtype=float)
                score = float(np.mean(finals))
                if best is None or _better(data, score, best[0]):
                    best = (score, lr, finals, hists)
            _, lr, finals, hists = best
            label = f"{method.upper().replace('_LM', '+LM')} (lr={lr:g})"
            curves[data.name][label] = hists
            rows.append(
                {
                    "dataset": data.name,
                    "method": label,
                    "learning_rate": lr,
                    "metric": key,
                    "final_mean": float(np.mean(finals)),
                    "final_std": float(np.std(finals)),
                    "seconds": float(np.mean([h[-1]["time_s"] for h in hists])),
                    "steps": int(max(h[-1]["step"] for h in hists)),
                    "stopped": int(sum(len(h) < ep + 1 for h in hists)),
                }
            )
    table = _format_table(rows)
    print(table)
    if loaded:
        _plot(out / "egn_curves.png", curves, loaded)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    if history_rows:
        with open(out / "histories.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history_rows[0]))
            writer.writeheader()
            writer.writerows(history_rows)
    summary = {
        "hidden": HIDDEN,
        "seeds": seeds,
        "epochs": {d.name: int(epochs[d.name]) for d in loaded},
        "batch_size": batch_size,
        "egn": {"learning_rates": list(egn_learning_rates), "regularizer": egn_regularizer},
        "sgn": {
            "learning_rates": list(sgn_learning_rates),
            "regularizer": 1e-3,
            "cg_iterations": 10,
        },
        "sgd_grid": list(sgd_grid),
        "adam_grid": list(adam_grid),
        "skipped": skipped,
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``inna-jax egn``."""
    parser.add_argument("--out", default="out/egn", help="output folder (CSV, JSON, PNG)")
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        choices=DATASETS,
        help="data sets (California housing only if already on disk)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per method")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs for every data set (default per set)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every method")
    parser.add_argument(
        "--egn-lr", type=float, nargs="+", default=[0.3, 1.0], help="EGN step caps tried"
    )
    parser.add_argument("--egn-regularizer", type=float, default=1.0, help="EGN initial lambda")
    parser.add_argument(
        "--sgn-lr", type=float, nargs="+", default=[0.1, 1.0], help="SGN step caps tried"
    )
    parser.add_argument(
        "--full", action="store_true", help="paper-like run: 5 seeds and more epochs (slow)"
    )
    parser.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="OpenBLAS/LAPACK threads (Cholesky on CPU)"
    )


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` with the parsed flags."""
    seeds = 5 if args.full else args.seeds
    epochs = dict(FULL_EPOCHS) if args.full else {}
    if args.epochs is not None:
        epochs = {name: args.epochs for name in DATASETS}
    run(
        out=args.out,
        datasets=tuple(args.datasets),
        seeds=seeds,
        epochs=epochs,
        batch_size=args.batch_size,
        egn_learning_rates=tuple(args.egn_lr),
        egn_regularizer=args.egn_regularizer,
        sgn_learning_rates=tuple(args.sgn_lr),
        quiet=not args.progress,
        blas_threads=args.blas_threads,
    )
    return 0
