"""Train one model with one optimizer: one device, a device mesh, or several hosts.

A thin face over :func:`inna_jax.train.fit`. It writes ``metrics.csv`` and ``metrics.json``
(one row per epoch, epoch 0 before training), ``summary.json`` (settings, devices, final
metrics) and ``train.png`` (training loss and test metric per epoch) into ``--out``. With
``--checkpoint-dir`` it writes orbax checkpoints and resumes from the newest one. With
``--devices N`` each batch is split over N devices (a ``"data"`` mesh). On several hosts, run
the same command on every host with ``--coordinator-address``, ``--num-processes`` and
``--process-id`` (or none of them on a TPU pod or under SLURM, where the environment says
it), and the mesh spans every host's devices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import optax
from flax import nnx

import inna_jax
from inna_jax.train._fit import FitResult, fit
from inna_jax.train._parallel import data_mesh, initialize_distributed

DATASETS = ("digits", "diabetes", "mnist1d", "cifar100")
MODELS = ("auto", "mlp", "cnn", "nin")
OPTIMIZERS = ("inna", "sgd", "adam", "adagrad")


def load_dataset(
    dataset: str, *, data_dir: str | Path | None = None, num_train: int | None = None
) -> Any:
    """One of :data:`DATASETS` as an :class:`~inna_jax.data.ArrayDataset`."""
    from inna_jax import data as d

    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got dataset={dataset!r}")
    if dataset == "cifar100":
        if data_dir is None:
            raise ValueError("dataset='cifar100' needs data_dir (the cifar-100-python folder)")
        data = d.load_cifar100(data_dir, num_train=num_train)
    else:
        data = {"digits": d.load_digits, "diabetes": d.load_diabetes}.get(dataset, d.load_mnist1d)()
        if num_train is not None:
            data = data._replace(x_train=data.x_train[:num_train], y_train=data.y_train[:num_train])
    return data


def make_model(model: str, data: Any, seed: int) -> nnx.Module:
    """The model named ``model`` for ``data``; ``"auto"``: CNN for images/signals, NiN for
    CIFAR-100, MLP for tabular data."""
    from inna_jax.models import MLP, NiN, SmallCNN

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got model={model!r}")
    rngs = nnx.Rngs(seed)
    outputs = data.num_classes if data.num_classes > 0 else 1
    if model == "auto":
        model = {"cifar100": "nin", "diabetes": "mlp"}.get(data.name, "cnn")
    if model == "nin":
        return NiN(outputs, in_channels=data.x_train.shape[-1], rngs=rngs)
    if model == "cnn":
        shapes = {"digits": (8, 8, 1), "mnist1d": (40, 1)}
        if data.name not in shapes:
            raise ValueError(f"model='cnn' takes digits or mnist1d, got dataset={data.name!r}")
        return SmallCNN(shapes[data.name], outputs, rngs=rngs)
    features = int(data.x_train[0].size)
    return MLP(features, (64, 64), outputs, rngs=rngs)


def make_optimizer(
    name: str, learning_rate: float, *, alpha: float, beta: float, decay_power: float
) -> optax.GradientTransformation:
    """INNA or SGD with γ_k = γ_0 (k+1)^(−q), or Adam/Adagrad with a constant rate."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got optimizer={name!r}")
    schedule = inna_jax.power_decay(learning_rate, decay_power) if decay_power else learning_rate
    if name == "inna":
        return inna_jax.inna(schedule, alpha, beta)
    if name == "sgd":
        return optax.sgd(schedule)
    return {"adam": optax.adam, "adagrad": optax.adagrad}[name](learning_rate)


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "test_accuracy" if "test_accuracy" in history[0] else "test_rmse"
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.semilogy(epochs, [r["train_loss"] for r in history], label="train")
    a.semilogy(epochs, [r["test_loss"] for r in history], label="test")
    a.set(xlabel="epoch", ylabel="loss")
    a.legend()
    b.plot(epochs, [r[metric] for r in history])
    b.set(xlabel="epoch", ylabel=metric.replace("_", " "))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    num_train: int | None = None,
    model: str = "auto",
    optimizer: str = "inna",
    learning_rate: float = 0.1,
    alpha: float = 0.5,
    beta: float = 0.1,
    decay_power: float = 0.5,
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    out: str | Path = "results/train",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    devices: int | None = None,
    quiet: bool = False,
) -> FitResult:
    """Loads the data, builds the model and optimizer, trains with :func:`fit`, writes files.

    ``devices=None`` uses one device in a single process, and every device of every process
    when ``jax.distributed`` is running; ``devices=N`` uses the first N.
    """
    data = load_dataset(dataset, data_dir=data_dir, num_train=num_train)
    net = make_model(model, data, seed)
    tx = make_optimizer(optimizer, learning_rate, alpha=alpha, beta=beta, decay_power=decay_power)
    mesh = None
    if devices is not None or jax.process_count() > 1:
        mesh = data_mesh(devices)
    out = Path(out)
    result = fit(
        net,
        tx,
        data,
        epochs=epochs,
        batch_size=batch_size,
        loss="cross_entropy" if data.num_classes > 0 else "mse",
        seed=seed,
        out_dir=out,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        mesh=mesh,
        quiet=quiet,
        desc=f"{optimizer} on {data.name}",
    )
    if jax.process_index() == 0:
        summary = {
            "dataset": data.name,
            "model": type(net).__name__,
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "alpha": alpha,
            "beta": beta,
            "decay_power": decay_power,
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "processes": jax.process_count(),
            "devices": 1 if mesh is None else int(mesh.devices.size),
            "platform": jax.devices()[0].platform,
            "steps": result.steps,
            "stopped": result.stopped,
            "final": result.history[-1],
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _plot(result.history, out / "train.png", f"{optimizer} on {data.name}")
    return result


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--devices`` and the multi-host flags (see :func:`setup_parallel`).

    Example:
        >>> import argparse
        >>> from inna_jax.train import add_parallel_arguments
        >>> parser = argparse.ArgumentParser()
        >>> add_parallel_arguments(parser)
        >>> args = parser.parse_args(["--devices", "4", "--num-processes", "2"])
        >>> args.devices, args.num_processes, args.coordinator_address
        (4, 2, None)
    """
    g = parser.add_argument_group("devices and hosts")
    g.add_argument(
        "--devices",
        type=int,
        default=None,
        help="split each batch over this many devices (a 'data' mesh); default: one device, "
        "or all devices of all hosts when running multi-host",
    )
    g.add_argument(
        "--coordinator-address",
        default=None,
        help="multi-host: host:port of process 0 (also INNA_JAX_COORDINATOR_ADDRESS); "
        "leave out on TPU pods and under SLURM, where JAX reads the environment",
    )
    g.add_argument(
        "--num-processes", type=int, default=None, help="multi-host: number of processes"
    )
    g.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    g.add_argument(
        "--cpu-collectives",
        choices=("gloo", "mpi"),
        default=None,
        help="multi-host on CPU only: the collectives library",
    )


def setup_parallel(args: argparse.Namespace) -> None:
    """Starts ``jax.distributed`` from the flags of :func:`add_parallel_arguments` or from the
    environment (TPU pod, SLURM); a no-op for one process.

    Example:
        >>> import argparse, jax
        >>> from inna_jax.train import add_parallel_arguments, setup_parallel
        >>> parser = argparse.ArgumentParser()
        >>> add_parallel_arguments(parser)
        >>> setup_parallel(parser.parse_args([]))  # no flags, no cluster: one process
        >>> jax.process_count()
        1
    """
    initialize_distributed(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        cpu_collectives=args.cpu_collectives,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``inna-jax train``."""
    parser.add_argument("--dataset", choices=DATASETS, default="digits", help="data set")
    parser.add_argument(
        "--data-dir", default=None, help="cifar100 only: the unpacked cifar-100-python folder"
    )
    parser.add_argument(
        "--num-train", type=int, default=None, help="use only the first N training examples"
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="auto",
        help="auto: small CNN (digits, mnist1d), NiN (cifar100), MLP (diabetes)",
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="inna", help="optimizer")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate gamma_0")
    parser.add_argument("--alpha", type=float, default=0.5, help="INNA friction alpha")
    parser.add_argument("--beta", type=float, default=0.1, help="INNA Newtonian damping beta")
    parser.add_argument(
        "--decay-power",
        type=float,
        default=0.5,
        help="INNA and SGD: gamma_k = gamma_0 / (k+1)^power (0: constant)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="number of epochs")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch order")
    parser.add_argument("--out", default="results/train", help="output folder")
    parser.add_argument(
        "--checkpoint-dir", default=None, help="orbax checkpoints; resumes from the newest"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="checkpoint period in steps (1 epoch)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_parallel_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Runs ``inna-jax train``; prints the last row of metrics. Returns 0, or 1 if stopped."""
    setup_parallel(args)
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
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        devices=args.devices,
        quiet=args.quiet,
    )
    if jax.process_index() == 0:
        last = result.history[-1]
        used = args.devices or (len(jax.devices()) if jax.process_count() > 1 else 1)
        print(
            f"processes={jax.process_count()} devices={used} "
            + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()
            )
        )
        if result.stopped:
            print(result.stopped)
    return 1 if result.stopped else 0
