"""Demo: INNA, SGD, Adagrad and Adam train the same MLP on scikit-learn's digits (CPU, ~1 min).

Every method starts from the same initial weights and sees the same batches. The command
prints a table (final training loss, test accuracy, seconds per method) and writes
``demo.png`` (training loss and test accuracy per epoch), ``results.csv`` and
``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import optax
from flax import nnx

import inna_jax
from inna_jax.data import load_digits
from inna_jax.models import MLP
from inna_jax.train import fit


def optimizers(
    inna_lr: float, sgd_lr: float, adagrad_lr: float, adam_lr: float, alpha: float, beta: float
) -> dict[str, optax.GradientTransformation]:
    """The four optimizers of the demo, by name."""
    return {
        f"INNA (alpha={alpha:g}, beta={beta:g})": inna_jax.inna(inna_lr, alpha, beta),
        "SGD": optax.sgd(sgd_lr),
        "Adagrad": optax.adagrad(adagrad_lr),
        "Adam": optax.adam(adam_lr),
    }


def run(
    *,
    out: str | Path = "out/demo",
    epochs: int = 20,
    batch_size: int = 32,
    hidden: tuple[int, ...] = (64, 64),
    seed: int = 0,
    inna_lr: float = 0.1,
    alpha: float = 0.5,
    beta: float = 0.1,
    sgd_lr: float = 0.1,
    adagrad_lr: float = 0.05,
    adam_lr: float = 1e-3,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Trains the four optimizers and writes the table and the figure.

    Returns:
        One dict per method: ``method``, ``train_loss``, ``test_accuracy``, ``seconds`` and
        ``history`` (the per-epoch metrics of :func:`inna_jax.train.fit`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed=seed)
    results = []
    txs = optimizers(inna_lr, sgd_lr, adagrad_lr, adam_lr, alpha, beta)
    for name, tx in txs.items():
        model = MLP(64, hidden, 10, rngs=nnx.Rngs(seed))  # same initial weights for all
        start = time.perf_counter()
        result = fit(
            model,
            tx,
            data,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            quiet=quiet,
            desc=name,
        )
        seconds = time.perf_counter() - start
        last = result.history[-1]
        results.append(
            dict(
                method=name,
                train_loss=float(last["train_loss"]),
                test_accuracy=float(last["test_accuracy"]),
                seconds=seconds,
                history=result.history,
            )
        )
    _write(results, out)
    return results


def _write(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "train_loss", "test_accuracy", "seconds"])
        for r in results:
            writer.writerow([r["method"], r["train_loss"], r["test_accuracy"], r["seconds"]])
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        epochs = [h["epoch"] for h in r["history"]]
        ax_loss.semilogy(epochs, [h["train_loss"] for h in r["history"]], label=r["method"])
        ax_acc.plot(epochs, [h["test_accuracy"] for h in r["history"]], label=r["method"])
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="Training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    ax_acc.legend()
    fig.suptitle("scikit-learn digits, MLP, batch 32")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=120)
    plt.close(fig)


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| method | final training loss | test accuracy | time (s) |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['train_loss']:.4f} | {r['test_accuracy']:.4f} | "
            f"{r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's command-line flags."""
    parser.add_argument("--out", default="out/demo", help="output folder for PNG/CSV/JSON")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per method")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, split and batches")
    parser.add_argument("--inna-lr", type=float, default=0.1, help="INNA step size gamma")
    parser.add_argument("--alpha", type=float, default=0.5, help="INNA friction alpha")
    parser.add_argument("--beta", type=float, default=0.1, help="INNA Newtonian damping beta")
    parser.add_argument("--sgd-lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--adagrad-lr", type=float, default=0.05, help="Adagrad learning rate")
    parser.add_argument("--adam-lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """Runs the demo from parsed command-line arguments."""
    results = run(
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        inna_lr=args.inna_lr,
        alpha=args.alpha,
        beta=args.beta,
        sgd_lr=args.sgd_lr,
        adagrad_lr=args.adagrad_lr,
        adam_lr=args.adam_lr,
        quiet=args.quiet,
    )
    print(format_table(results))
    print(f"\nwrote {Path(args.out) / 'demo.png'}, results.csv and results.json")
    return 0
