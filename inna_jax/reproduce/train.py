r"""Train one model with one optimizer: one device, a device mesh, or several hosts.

A thin face over :func:`inna_jax.train.fit`, with the data sets, models and optimizers of
:mod:`inna_jax.reproduce.registry`. It writes ``metrics.csv`` and ``metrics.json`` (one row
per epoch, epoch 0 before training), ``summary.json`` (settings, devices, final metrics) and
``train.png`` (training loss and test metric per epoch) into ``--out``. With
``--checkpoint-dir`` it writes orbax checkpoints and resumes from the newest one. With
``--devices N`` each batch is split over N devices (a ``"data"`` mesh). On several hosts, run
the same command on every host with ``--coordinator-address``, ``--num-processes`` and
``--process-id`` (or none of them on a TPU pod or under SLURM, where the environment says
it), and the mesh spans every host's devices.

``--optimizer egn`` and ``sgn`` are the exact and the CG Gauss-Newton optimizers
(:func:`inna_jax.egn`, :func:`inna_jax.sgn`), built as ``inna-jax egn`` builds them
(:func:`inna_jax.reproduce.registry.make_optimizer`): the model's structure gives their
``predict_fn``, the data set's loss is theirs too (cross-entropy for classes, MSE for
regression), ``--regularizer`` sets :math:`\lambda` and ``--line-search on|off`` the Armijo
backtracking (on: ``--lr`` caps each step; off: ``--lr`` is the step).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from inna_jax.reproduce import cli_args, files, plots
from inna_jax.reproduce import registry as reg

DATASETS = ("digits", "diabetes", "mnist1d", "cifar100", "california")
MODELS = ("auto", *reg.MODELS)
OPTIMIZERS = ("inna", "innaprop", "sgd", "adam", "adagrad", "egn", "sgn")
#: the flags of hyperparameters, each taken only by the optimizers that have it
_HYPER_FLAGS = ("alpha", "beta", "weight_decay", "regularizer")


def _plot(history: list[dict], path: Path, title: str) -> None:
    metric = "test_accuracy" if "test_accuracy" in history[0] else "test_rmse"
    epochs = [r["epoch"] for r in history]
    fig, axes = plots.figure(2, width=4.6, height=3.6)
    a, b = axes[0]
    a.semilogy(epochs, [r["train_loss"] for r in history], label="train")
    a.semilogy(epochs, [r["test_loss"] for r in history], label="test")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend(fontsize=8)
    values = [r[metric] for r in history]
    b.plot(epochs, values, marker="o", ms=3)
    b.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
    if metric == "test_accuracy":
        plots.zoom(b, values, lower=0, upper=1)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        plots.integer_ticks(ax)
    fig.suptitle(title, fontsize=9)
    plots.save(fig, path, dpi=110)


def _describe(optimizer: str, learning_rate: float, hyper: dict) -> str:
    parts = [f"γ0={learning_rate:g}"]
    if "decay_power" in hyper:
        q = hyper["decay_power"]
        parts[0] = f"γk=γ0/(k+1)^{q:g}, γ0={learning_rate:g}" if q else parts[0]
    parts += [f"{k}={v:g}" for k, v in hyper.items() if k in ("alpha", "beta", "weight_decay")]
    if "regularizer" in hyper:
        parts.append(f"λ={hyper['regularizer']:g}")
    return f"{reg.OPTIMIZERS[optimizer].label} ({', '.join(parts)})"


def _builder(optimizer: str, learning_rate: float, given: dict[str, Any], line_search):
    """``(build, hyper)``: ``build(**model_and_loss)`` makes the optimizer with the registry's
    hyperparameters overridden by the flags ``given`` (a refused value is a usage error),
    ``hyper`` those hyperparameters."""
    entry = reg.OPTIMIZERS[optimizer]
    _check_flags(optimizer, given, line_search)
    hyper = {**entry.hyperparams}
    hyper |= {k: v for k, v in given.items() if k in entry.hyperparams and v is not None}
    static: dict[str, Any] = {} if line_search is None else {"line_search": bool(line_search)}

    def build(**model_and_loss):
        try:
            return reg.make_optimizer(optimizer, learning_rate, **model_and_loss, **hyper, **static)
        except ValueError as err:
            raise cli_args.UsageError(
                f"--optimizer {optimizer}: {err} (set by --lr, --alpha, --beta, --weight-decay, "
                "--regularizer)"
            ) from err

    return build, hyper


def _check_flags(optimizer: str, given: dict[str, Any], line_search: bool | None) -> None:
    """Refuses a hyperparameter flag that ``optimizer`` does not take (one line)."""
    entry = reg.OPTIMIZERS[optimizer]
    unused = [k for k in _HYPER_FLAGS if given[k] is not None and k not in entry.hyperparams]
    if line_search is not None and "line_search" not in entry.static:
        unused.append("line_search")
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise cli_args.UsageError(f"--optimizer {optimizer} takes no {flags}")


def _blas_limit(optimizer: str):
    """EGN on CPU: one OpenBLAS thread for its Cholesky (as ``inna-jax egn``; see
    :func:`inna_jax.egn`); nothing for the others."""
    if optimizer != "egn":
        return contextlib.nullcontext()
    import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK, loaded before the limit)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def run(
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    num_train: int | None = None,
    model: str = "auto",
    optimizer: str = "inna",
    learning_rate: float = 0.1,
    alpha: float | None = None,
    beta: float | None = None,
    decay_power: float = 0.5,
    weight_decay: float | None = None,
    regularizer: float | None = None,
    line_search: bool | None = None,
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    out: str | Path = "results/train",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    devices: int | None = None,
    mesh: Any = None,
    quiet: bool = False,
):
    """Loads the data, builds the model and optimizer, trains with :func:`fit`, writes files.

    ``devices=None`` uses one device in a single process, and every device of every process
    when ``jax.distributed`` is running; ``devices=N`` uses the first N. INNA and SGD use
    :math:`\\gamma_k = \\gamma_0 (k+1)^{-q}` with ``decay_power`` :math:`q`; Adam,
    Adagrad and INNAprop a constant rate. ``alpha``, ``beta`` (INNA, INNAprop),
    ``weight_decay`` (INNAprop), ``regularizer`` and ``line_search`` (EGN, SGN) left at
    ``None`` take the registry's defaults (:data:`inna_jax.reproduce.registry.OPTIMIZERS`).
    EGN and SGN are built for the model (its ``predict_fn``) and the data set's loss.

    Returns:
        The :class:`~inna_jax.train.FitResult`.

    Raises:
        cli_args.UsageError: for a value that does not fit the data (a batch larger than the
            training set, a model that does not take the data set) or that the optimizer
            refuses (INNAprop's ``learning_rate >= beta``), or a flag the optimizer does not
            take.
    """
    import jax

    from inna_jax.train import data_mesh, fit

    entry = reg.OPTIMIZERS[optimizer]
    given = {
        "alpha": alpha,
        "beta": beta,
        "decay_power": decay_power,
        "weight_decay": weight_decay,
        "regularizer": regularizer,
    }
    build, hyper = _builder(optimizer, learning_rate, given, line_search)
    tx: Any = None if entry.needs_model else build()  # a bad value is refused before any loading
    data = reg.load_dataset(dataset, data_dir=data_dir, num_train=num_train)
    if batch_size > len(data.x_train):
        raise cli_args.UsageError(
            f"batch_size (--batch-size) must be at most the {len(data.x_train)} training "
            f"examples of {data.name}, got {batch_size}"
        )
    try:
        net = reg.make_model(model, data, seed)
    except ValueError as err:
        raise cli_args.UsageError(f"--model {model}: {err}") from err
    if entry.needs_model:  # EGN, SGN: the model's predict_fn and the data set's loss
        tx = build(model=net, loss=reg.loss_for(data))
    if mesh is None and (devices is not None or jax.process_count() > 1):
        mesh = data_mesh(devices)
    out = Path(out)
    title = f"{_describe(optimizer, learning_rate, hyper)} on {data.name}, batch {batch_size}"
    with _blas_limit(optimizer):
        result = fit(
            net,
            tx,
            data,
            epochs=epochs,
            batch_size=batch_size,
            loss=reg.loss_for(data),
            seed=seed,
            out_dir=out,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            mesh=mesh,
            quiet=quiet,
            desc=f"{optimizer} on {data.name}",
        )
    if jax.process_index() == 0:
        summary = _summary(data, net, optimizer, learning_rate, hyper, tx, result, mesh,
                           epochs=epochs, batch_size=batch_size, seed=seed)  # fmt: skip
        files.write_json(out / "summary.json", summary)
        _plot(result.history, out / "train.png", title)
    return result


_pint, _pfloat = cli_args.positive_int, cli_args.positive_float
_nnfloat = cli_args.nonnegative_float
_FLAGS = (
    ("--dataset", cli_args.choice(DATASETS), "digits", "data set"),
    ("--data-dir", None, None, "cifar100 only: the folder holding cifar-100-python/"),
    ("--num-train", _pint, None, "use only the first N training examples"),
    ("--model", cli_args.choice(MODELS), "auto",
     "auto: small CNN (digits, mnist1d), NiN (cifar100), MLP (diabetes, california)"),
    ("--optimizer", cli_args.choice(OPTIMIZERS), "inna",
     f"one of {', '.join(OPTIMIZERS)} (egn, sgn: Gauss-Newton for the model and the "
     "data set's loss)"),
    ("--lr", _pfloat, 0.1, "learning rate gamma_0"),
    ("--alpha", _pfloat, None,
     "INNA and INNAprop friction alpha (default: INNA 0.5, INNAprop 0.1)"),
    ("--beta", _pfloat, None,
     "INNA and INNAprop Newtonian damping beta (default: INNA 0.1, INNAprop 0.9)"),
    ("--weight-decay", _nnfloat, None, "INNAprop: decoupled weight decay (default 0.01)"),
    ("--regularizer", _pfloat, None,
     "EGN and SGN: the damping lambda of the Gauss-Newton system (default: EGN 1, SGN 1e-3)"),
    ("--line-search", cli_args.choice(("on", "off")), None,
     "EGN and SGN: Armijo backtracking on each batch, on (default; --lr caps the step) "
     "or off (--lr is the step)"),
    ("--decay-power", _nnfloat, 0.5,
     "INNA and SGD: gamma_k = gamma_0 / (k+1)^power (0: constant)"),
    ("--epochs", cli_args.nonnegative_int, 5, "number of epochs"),
    ("--batch-size", _pint, 32, "global batch size"),
    ("--seed", cli_args.nonnegative_int, 0, "seed of weights and batch order"),
    ("--out", None, "results/train", "output folder"),
    ("--checkpoint-dir", None, None, "orbax checkpoints; resumes from the newest"),
    ("--checkpoint-every", _pint, None, "checkpoint period in steps (default: one epoch)"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax train``."""
    cli_args.add_flags(parser, _FLAGS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    cli_args.add_parallel_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Runs ``inna-jax train``; prints the last row of metrics. Returns 0, or 1 if stopped."""
    import jax

    if args.dataset == "cifar100" and args.data_dir is None:
        raise cli_args.UsageError(
            "--dataset cifar100 needs --data-dir, the folder holding cifar-100-python/"
        )
    cli_args.setup_parallel(args)
    mesh = cli_args.device_mesh(args)
    if mesh is not None and args.batch_size % mesh.devices.size:
        raise cli_args.UsageError(
            f"--batch-size {args.batch_size} must be a multiple of the {mesh.devices.size} "
            "devices (--devices) that split each batch"
        )
    try:
        result = run(
            dataset=args.dataset,
            data_dir=args.data_dir,
            num_train=args.num_train,
            model=args.model,
            optimizer=args.optimizer,
            learning_rate=args.lr,
            alpha=args.alpha,
            beta=args.beta,
            decay_power=args.decay_power,
            weight_decay=args.weight_decay,
            regularizer=args.regularizer,
            line_search=None if args.line_search is None else args.line_search == "on",
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            out=args.out,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            mesh=mesh,
            quiet=args.quiet,
        )
    except FileNotFoundError as err:  # no CIFAR-100 in --data-dir, California not on disk
        where = f" --data-dir {args.data_dir}" if args.data_dir is not None else ""
        raise cli_args.UsageError(f"--dataset {args.dataset}{where}: {err}") from err
    if jax.process_index() == 0:
        last = result.history[-1]
        used = 1 if mesh is None else int(mesh.devices.size)
        print(
            f"processes={jax.process_count()} devices={used} "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()
            )
        )
        if result.stopped:
            print(result.stopped)
    return 1 if result.stopped else 0


def _summary(data, net, optimizer, learning_rate, hyper, tx, result, mesh, **settings) -> dict:
    """``summary.json``: the settings, the devices, the steps and the final metrics."""
    import jax

    return {
        "dataset": data.name,
        "model": type(net).__name__,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        **hyper,
        **{k: tx.static[k] for k in ("line_search",) if k in tx.static},
        **settings,
        "processes": jax.process_count(),
        "devices": 1 if mesh is None else int(mesh.devices.size),
        "platform": jax.devices()[0].platform,
        "steps": result.steps,
        "stopped": result.stopped,
        "final": result.history[-1],
    }
