"""INNAprop against AdamW on a small byte-level transformer language model.

A decoder-only transformer (:class:`inna_jax.models.CausalTransformer`) learns to predict the
next byte of Python source: a fixed list of the standard library's own files, present in
every CPython 3.11+ install (:mod:`inna_jax.reproduce.innaprop_lm_corpus`), with whole files
held out for validation. It compares INNAprop with (alpha, beta) = (0.1, 0.9) and (1, 1)
against AdamW, all with the recipe of the INNAprop authors' GPT-2 runs (Bolte, Boustany,
Pauwels, Purica 2024, arXiv:2410.05871, and their repository): gradients clipped at global norm 1, a
linear warm-up then a cosine decay to a tenth of the peak learning rate, decoupled weight
decay 0.1, INNAprop's sigma = 0.99, AdamW's betas (0.9, 0.95). Each seed fixes the initial
weights and the batches, the same for every method. The authors report INNAprop (0.1, 0.9)
below AdamW in validation loss for GPT-2 small (2.982 against 3.032 at 100k iterations).

It prints the final validation loss (nats per byte; mean, min and max over seeds) and writes
curves.csv, runs.csv, table.csv, table.json, innaprop_lm.png (validation loss against steps,
mean and min-max band over seeds) and summary.json (every setting, the corpus files and
sizes, the machine and the seconds). --scale gpu trains a larger model for longer; the size
flags (--depth, --width, --heads, --context, --batch-size, --steps, ...) override the scale.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inna_jax.reproduce import cli_args

__all__ = ["SCALES", "add_arguments", "main", "run"]

#: The default sizes of each ``--scale``: cpu finishes in about 3 minutes on a 2-core CPU.
SCALES: dict[str, dict[str, int]] = {
    "cpu": {"depth": 2, "width": 64, "heads": 4, "context": 64, "batch_size": 32,
            "steps": 600, "eval_every": 50, "eval_windows": 256},
    "gpu": {"depth": 6, "width": 384, "heads": 6, "context": 256, "batch_size": 64,
            "steps": 5000, "eval_every": 250, "eval_windows": 1024},
}  # fmt: skip
_METHODS = ("adamw", "innaprop-0.1-0.9", "innaprop-1-1")
_SIZES = ("depth", "width", "heads", "context", "batch_size", "steps", "eval_every",
          "eval_windows")  # fmt: skip


def _problem(s: dict[str, Any], flag: bool = False) -> str | None:
    """The first inconsistency of the settings ``s``, or ``None``; named as :func:`run`'s
    arguments, or as the command's flags with ``flag=True``."""
    from inna_jax.reproduce.innaprop_lm_runs import METHODS

    def n(name: str) -> str:
        return "--" + name.replace("_", "-") if flag else name

    for name in (*_SIZES, "warmup"):
        v, low = s[name], 0 if name == "warmup" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            return f"{n(name)} must be an integer >= {low}, got {v!r}"
    if s["width"] % s["heads"]:
        return f"{n('width')} {s['width']} must be a multiple of {n('heads')} {s['heads']}"
    if s["steps"] % s["eval_every"]:
        return (
            f"{n('steps')} {s['steps']} must be a multiple of {n('eval_every')} {s['eval_every']}"
        )
    if s["warmup"] >= s["steps"]:
        return f"{n('warmup')} {s['warmup']} must be below {n('steps')} {s['steps']}"
    if not s["methods"] or any(m not in METHODS for m in s["methods"]):
        return f"{n('methods')} must be among {', '.join(METHODS)}, got {list(s['methods'])!r}"
    betas = [METHODS[m][2]["beta"] for m in s["methods"] if "beta" in METHODS[m][2]]
    lr, top = s["lr"], min(betas, default=math.inf)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and 0 < lr < top):
        return f"{n('lr')} must be a number in (0, {top:g}) (below INNAprop's beta), got {lr!r}"
    if not s["seeds"]:
        return f"{n('seeds')} must hold at least one seed, got {s['seeds']!r}"
    return None


def run(
    *,
    out: str | Path = "results/innaprop_lm",
    scale: str = "cpu",
    methods: Sequence[str] = _METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    lr: float = 1e-3,
    warmup: int | None = None,
    weight_decay: float = 0.1,
    verbose: bool = True,
    **sizes: int,
) -> dict[str, Any]:
    """Trains every method from every seed; writes the curves, the table, the figure, the
    summary.

    Args:
        out: output folder.
        scale: ``"cpu"`` or ``"gpu"``, the default sizes (:data:`SCALES`).
        methods: names among ``adamw``, ``innaprop-0.1-0.9``, ``innaprop-1-1``.
        seeds: the seeds (initial weights and batches, the same for every method).
        lr: peak learning rate of the warm-up and cosine schedule (the same for all methods).
        warmup: warm-up steps (default: 2 % of the steps, as the authors' 2,000 of 100k).
        weight_decay: decoupled weight decay of every method.
        verbose: print the settings, the progress and the table.
        **sizes: overrides of the scale's ``depth``, ``width``, ``heads``, ``context``,
            ``batch_size``, ``steps``, ``eval_every``, ``eval_windows``.

    Returns:
        The summary: the settings, the corpus, the table rows, the machine and the seconds.

    Raises:
        ValueError: one line naming the argument, for a bad setting (before any training).
        FileNotFoundError: one line naming a corpus file missing from the standard library.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    unknown = sorted(set(sizes) - set(SCALES[scale]))
    if unknown:
        raise ValueError(f"unknown size {unknown[0]!r}; sizes are {', '.join(SCALES[scale])}")
    s: dict[str, Any] = {**SCALES[scale], **sizes}
    s.update(methods=list(methods), seeds=[int(x) for x in seeds], lr=lr, weight_decay=weight_decay)
    s["warmup"] = s["steps"] // 50 if warmup is None else warmup
    problem = _problem(s)
    if problem:
        raise ValueError(problem)
    return _train_and_report(Path(out), s, scale, verbose)


def _train_and_report(out: Path, s: dict[str, Any], scale: str, verbose: bool) -> dict[str, Any]:
    from flax import nnx

    from inna_jax.models import CausalTransformer, count_params
    from inna_jax.reproduce import files, machine
    from inna_jax.reproduce import innaprop_lm_report as report
    from inna_jax.reproduce.innaprop_lm_corpus import load_corpus
    from inna_jax.reproduce.innaprop_lm_runs import METHODS, train_method, validation_windows

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus()
    val = validation_windows(corpus.validation, s["context"], s["eval_windows"])

    def make_model(key):
        return CausalTransformer(256, s["context"], width=s["width"], depth=s["depth"],
                                 heads=s["heads"], rngs=nnx.Rngs(key))  # fmt: skip

    params = count_params(nnx.eval_shape(lambda: make_model(0)))
    where = machine.machine_description()
    if verbose:
        print(f"corpus: {corpus.train.size:,} training bytes ({len(corpus.train_files)} files), "
              f"{corpus.validation.size:,} validation bytes ({len(corpus.validation_files)} "
              f"files, {len(val)} windows); model: {params:,} parameters")  # fmt: skip
        print(machine.describe(where))
    curves = {}
    for name in s["methods"]:
        label = METHODS[name][0]
        curves[label] = train_method(
            name, make_model, corpus.train, val, seeds=s["seeds"], steps=s["steps"],
            eval_every=s["eval_every"], batch_size=s["batch_size"], context=s["context"],
            lr=s["lr"], warmup=s["warmup"], weight_decay=s["weight_decay"],
        )  # fmt: skip
        if verbose:
            final = curves[label]["val_loss"][:, -1]
            print(f"  {label}: validation loss {final.mean():.4f} after {s['steps']} steps "
                  f"({curves[label]['seconds']:.0f} s)")  # fmt: skip
    rows = report.table_rows(curves)
    files.write_csv(out / "curves.csv", report.curve_rows(curves, s["seeds"]))
    files.write_csv(out / "runs.csv", report.seed_rows(curves, s["seeds"]))
    files.write_table(out, "table", rows)
    title = (f"byte-level transformer, {params:,} parameters, {s['steps']} steps, "
             f"{len(s['seeds'])} seeds")  # fmt: skip
    report.plot(out / "innaprop_lm.png", curves, title)
    summary = {"command": "inna-jax innaprop-lm", "scale": scale, "settings": s,
               "parameters": params, "corpus": corpus.describe(), "table": rows,
               "machine": where, "seconds": time.perf_counter() - start}  # fmt: skip
    files.write_json(out / "summary.json", summary, default=float)
    if verbose:
        print("\nvalidation loss (nats per byte) at the last step, mean, min and max over seeds")
        print(report.format_table(rows))
        print(f"\nwrote {out}/ ({', '.join(report.FILES)}) in {summary['seconds']:.0f} s")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax innaprop-lm``."""
    pos = cli_args.positive_int
    size = "default: from --scale"
    cli_args.add_flags(parser, [
        ("--out", str, "results/innaprop_lm", "output folder"),
        ("--scale", cli_args.choice(tuple(SCALES)), "cpu",
         "default sizes: cpu (about 3 minutes on 2 cores) or gpu (a larger model, longer)"),
        ("--methods", cli_args.choice(_METHODS), list(_METHODS), "methods to compare",
         {"nargs": "+"}),
        ("--seeds", pos, 3, "number of seeds (0, 1, ...)"),
        ("--lr", cli_args.positive_float, 1e-3, "peak learning rate (below INNAprop's beta)"),
        ("--warmup", cli_args.nonnegative_int, None, "warm-up steps; default: 2%% of --steps"),
        ("--weight-decay", cli_args.nonnegative_float, 0.1, "decoupled weight decay"),
        ("--depth", pos, None, f"transformer blocks; {size}"),
        ("--width", pos, None, f"model width (a multiple of --heads); {size}"),
        ("--heads", pos, None, f"attention heads; {size}"),
        ("--context", pos, None, f"context length in bytes; {size}"),
        ("--batch-size", pos, None, f"windows per batch; {size}"),
        ("--steps", pos, None, f"training steps (a multiple of --eval-every); {size}"),
        ("--eval-every", pos, None, f"steps between validation losses; {size}"),
        ("--eval-windows", pos, None, f"validation windows of --context bytes; {size}"),
    ])  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Runs :func:`run` from parsed command-line flags."""
    sizes = {n: getattr(args, n) for n in _SIZES if getattr(args, n) is not None}
    settings = {**SCALES[args.scale], **sizes, "methods": args.methods, "lr": args.lr,
                "seeds": list(range(args.seeds)), "weight_decay": args.weight_decay}  # fmt: skip
    settings["warmup"] = settings["steps"] // 50 if args.warmup is None else args.warmup
    problem = _problem(settings, flag=True)  # run() checks again, with its arguments' names
    if problem:
        raise cli_args.UsageError(problem)
    run(out=args.out, scale=args.scale, methods=args.methods, seeds=range(args.seeds),
        lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay, **sizes)  # fmt: skip
    return 0
