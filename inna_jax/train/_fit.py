r"""``fit``: train a Flax NNX model with any optax optimizer, on one device or a device mesh.

One epoch is :math:`m = \lfloor n/b \rfloor` steps over the seeded batches of
:mod:`inna_jax.data` (:func:`~inna_jax.data.batch_indices`). After each epoch the loss on the
whole training set and the loss and accuracy (or RMSE) on the held-out split are computed with
the model in evaluation mode, and a row is added to the history (epoch 0 is before training).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding
from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

from inna_jax.data import batch_indices, steps_per_epoch
from inna_jax.train import _losses, _parallel
from inna_jax.train._checkpoint import Checkpointer
from inna_jax.train._step import TrainState, make_eval, make_step

_ON_NONFINITE = ("stop", "raise")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch (epoch 0 = before training) with keys ``epoch``,
            ``step``, ``train_loss``, ``test_loss``, ``test_accuracy`` (classification) or
            ``test_rmse`` (regression), and ``time_s`` (training wall time so far, summed
            over resumed runs).
        model: the trained model (the same object that was passed in, updated in place).
        opt_state: the final optimizer state.
        steps: the number of optimizer steps taken in total.
        stopped: ``None`` for a run that finished, else the message explaining why it stopped
            (a non-finite loss or parameter).
    """

    history: list[dict]
    model: nnx.Module
    opt_state: Any
    steps: int
    stopped: str | None = None

    @property
    def diverged(self) -> bool:
        """``True`` if the run stopped on a non-finite loss or parameter."""
        return self.stopped is not None


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def _write_metrics(out_dir: Path, history: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=2) + "\n")
    keys = list(history[0]) if history else []
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _view(model: nnx.Module, *, training: bool) -> nnx.Module:
    """The model in training or evaluation mode (dropout, batch norm), without mutating it."""
    return nnx.view(
        model,
        deterministic=not training,
        use_running_average=not training,
        raise_if_not_found=False,
    )


def fit(
    model: nnx.Module,
    optimizer: optax.GradientTransformation,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] = "cross_entropy",
    seed: int = 0,
    extra_args: bool = False,
    out_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    mesh: Mesh | None = None,
    quiet: bool = False,
    desc: str | None = None,
    eval_batch_size: int | None = None,
    on_nonfinite: str = "stop",
    max_to_keep: int = 2,
    log_every: int = 20,
) -> FitResult:
    r"""Trains ``model`` in place on ``data`` with ``optimizer``; evaluates every epoch.

    Each step :math:`k` takes the batch :math:`B_k` drawn from ``seed``
    (:func:`~inna_jax.data.batch_at_step`: a uniform permutation per epoch, cut into
    :math:`\lfloor n/b \rfloor` batches) and applies

    .. math::

        g_k = \nabla_\theta \frac1b \sum_{i \in B_k} \ell(f(x_i; \theta_k), y_i),\qquad
        (u_k, s_{k+1}) = \mathrm{tx.update}(g_k, s_k, \theta_k),\qquad
        \theta_{k+1} = \theta_k + u_k .

    The optimizer always gets ``params`` (INNA needs them) and, with ``extra_args=True``,
    ``inputs=x`` and ``targets=y`` (EGN). With a ``mesh``, the same jitted step runs with
    the parameters replicated and each batch split over the mesh axis ``"data"``: the global
    batch, hence the result, does not depend on the device count. With several processes
    (after :func:`~inna_jax.train.initialize_distributed`), pass a mesh over all their devices
    (:func:`~inna_jax.train.data_mesh`); every process runs the same call.

    With ``checkpoint_dir``, an orbax checkpoint of the full state (parameters, other model
    variables, optimizer state, step, history) is written every ``checkpoint_every`` steps
    (default: every epoch) and at the end, and a later call with the same folder resumes
    from the newest one. Because the batch order is a pure function of
    ``(seed, epoch, step)``, a killed and resumed run ends with the same parameters, bit for
    bit, as an uninterrupted one.

    If a loss or an updated parameter is not finite, the update is dropped and the run stops:
    the model keeps the last finite parameters, no checkpoint is written past that point, and
    with ``on_nonfinite="stop"`` a ``RuntimeWarning`` gives the step and the last good
    checkpoint, also in :attr:`FitResult.stopped`; ``"raise"`` raises ``FloatingPointError``.

    Args:
        model: a Flax NNX module, trained in place.
        optimizer: an ``optax.GradientTransformation`` (INNA, optax's) or a
            ``GradientTransformationExtraArgs`` (EGN, with ``extra_args=True``).
        data: an :class:`~inna_jax.data.ArrayDataset`.
        epochs: number of passes over the training set (``>= 0``).
        batch_size: global batch size :math:`b` (a multiple of the mesh's ``"data"`` size).
        loss: ``"cross_entropy"`` (integer labels), ``"mse"`` (mean of
            :math:`\tfrac12\lVert f - y\rVert^2`), ``"binary_cross_entropy"``, or a callable
            ``(outputs, targets) -> scalar`` batch mean.
        seed: seed of the batch order.
        extra_args: pass ``inputs=`` and ``targets=`` to ``optimizer.update``.
        out_dir: if given, ``metrics.csv`` and ``metrics.json`` are (re)written there after
            every epoch.
        checkpoint_dir: orbax checkpoint folder; resumes from its newest checkpoint.
        checkpoint_every: checkpoint period in steps (default: one epoch).
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis; ``None`` for one device.
        quiet: turn the tqdm progress bar off.
        desc: label of the progress bar (default: the data set's name).
        eval_batch_size: batch size of the evaluation passes (default
            ``max(batch_size, 512)``, rounded to the mesh).
        on_nonfinite: ``"stop"`` (warn and return) or ``"raise"``.
        max_to_keep: number of recent checkpoints kept.
        log_every: the loss shown on the progress bar, and the finiteness flag, are read
            every ``log_every`` steps (and at every epoch end and checkpoint).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for a bad argument, or a checkpoint from a run with another seed, batch
            size or training set.
        FloatingPointError: with ``on_nonfinite="raise"``, on a non-finite loss.

    Example:
        >>> import optax
        >>> from flax import nnx
        >>> from inna_jax.data import load_digits
        >>> from inna_jax.models import MLP
        >>> from inna_jax.train import fit
        >>> data = load_digits()
        >>> model = MLP(64, (32,), 10, rngs=nnx.Rngs(0))
        >>> result = fit(model, optax.sgd(0.1), data, epochs=2, batch_size=64, quiet=True)
        >>> [row["epoch"] for row in result.history], result.history[-1]["test_accuracy"] > 0.8
        ([0, 1, 2], True)

    References:
        Castera, Bolte, Févotte, Pauwels, *An inertial Newton algorithm for deep learning*,
        JMLR 22 (2021), §5 (training protocol); the JAX guide *Distributed arrays and
        automatic parallelization* (``jax.jit`` with ``NamedSharding``).
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got epochs={epochs!r}")
    if on_nonfinite not in _ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {_ON_NONFINITE}, got {on_nonfinite!r}")
    if checkpoint_every is not None and (
        int(checkpoint_every) != checkpoint_every or checkpoint_every < 1
    ):
        raise ValueError(
            f"checkpoint_every must be an integer >= 1, got checkpoint_every={checkpoint_every!r}"
        )
    if int(log_every) < 1:
        raise ValueError(f"log_every must be >= 1, got log_every={log_every!r}")
    _losses.per_example_loss(loss)  # validates the name
    x_train, y_train = np.asarray(data.x_train), np.asarray(data.y_train)
    x_test, y_test = np.asarray(data.x_test), np.asarray(data.y_test)
    n = len(x_train)
    spe = steps_per_epoch(n, batch_size)
    total = int(epochs) * spe
    classification = int(data.num_classes) > 0
    metric_key = "test_accuracy" if classification else "test_rmse"
    every = spe if checkpoint_every is None else int(checkpoint_every)
    is_main = jax.process_index() == 0

    # --- placement -------------------------------------------------------------------------
    if mesh is None:
        devices = 1
        state_sharding = SingleDeviceSharding(jax.devices()[0])
        batch_sharding = state_sharding
    else:
        devices = _parallel.check_mesh(mesh, int(batch_size))
        state_sharding = _parallel.replicated(mesh)
        batch_sharding = _parallel.batch_sharded(mesh)

    graphdef, params, rest = nnx.split(_view(model, training=True), nnx.Param, ...)
    eval_graphdef = nnx.graphdef(_view(model, training=False))
    state = TrainState(
        params=params,
        rest=rest,
        opt_state=jax.jit(optimizer.init)(params),  # one compilation, not one per op
        ok=jnp.array(True),
        bad_step=jnp.array(-1, jnp.int32),
        step=jnp.array(0, jnp.int32),
    )
    state = _parallel.put_global(state, state_sharding)  # a copy: the model's arrays survive

    step_fn = make_step(graphdef, optimizer, loss, extra_args=extra_args)
    eval_fn = make_eval(eval_graphdef, loss, classification=classification)
    if mesh is None:
        step_fn = jax.jit(step_fn, donate_argnums=0)
        eval_fn = jax.jit(eval_fn)
    else:
        rep, bat = state_sharding, batch_sharding
        step_fn = jax.jit(
            step_fn, donate_argnums=0, in_shardings=(rep, bat, bat), out_shardings=(rep, rep)
        )
        eval_fn = jax.jit(eval_fn, in_shardings=(rep, rep, bat, bat, bat), out_shardings=(rep, rep))

    def put_batch(a: np.ndarray) -> jax.Array:
        if mesh is None:
            return jax.device_put(a, batch_sharding)
        return _parallel.put_global(a, batch_sharding)

    ebs = int(eval_batch_size) if eval_batch_size is not None else max(int(batch_size), 512)
    ebs = _round_up(min(ebs, max(len(x_train), len(x_test))), devices)

    def evaluate(st: TrainState, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        loss_sum, metric_sum = 0.0, 0.0
        for lo in range(0, len(x), ebs):
            xb, yb = x[lo : lo + ebs], y[lo : lo + ebs]
            valid = len(xb)
            mask = np.zeros(ebs, np.float32)
            mask[:valid] = 1.0
            if valid < ebs:
                xb = np.concatenate([xb, np.zeros((ebs - valid, *xb.shape[1:]), xb.dtype)])
                yb = np.concatenate([yb, np.zeros((ebs - valid, *yb.shape[1:]), yb.dtype)])
            ls, ms = eval_fn(st.params, st.rest, put_batch(xb), put_batch(yb), put_batch(mask))
            loss_sum += _parallel.host_scalar(ls)
            metric_sum += _parallel.host_scalar(ms)
        return loss_sum / len(x), metric_sum / len(x)

    def epoch_row(st: TrainState, epoch: int, step: int, time_s: float) -> dict:
        train_loss, _ = evaluate(st, x_train, y_train)
        test_loss, test_metric = evaluate(st, x_test, y_test)
        if not classification:
            test_metric = math.sqrt(test_metric)
        return {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "test_loss": test_loss,
            metric_key: test_metric,
            "time_s": round(time_s, 4),
        }

    # --- resume ----------------------------------------------------------------------------
    config = {"seed": int(seed), "batch_size": int(batch_size), "num_train": int(n)}
    ckpt = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep) if checkpoint_dir else None
    history: list[dict] = []
    start, time_before = 0, 0.0
    if ckpt is not None and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(ckpt.latest_step(), like=state)
        for key, value in config.items():
            if meta["config"][key] != value:
                raise ValueError(
                    f"checkpoint in {ckpt.directory} comes from a run with {key}="
                    f"{meta['config'][key]!r}, but this run has {key}={value!r}; use another "
                    "checkpoint_dir or the same settings"
                )
        history, start, time_before = list(meta["history"]), int(meta["step"]), meta["time_s"]
    t0 = time.perf_counter()
    elapsed = lambda: time_before + time.perf_counter() - t0
    if start == 0 and not history:
        history.append(epoch_row(state, 0, 0, 0.0))
        if out_dir is not None and is_main:
            _write_metrics(Path(out_dir), history)

    def save(st: TrainState, step: int) -> None:
        meta = {"step": step, "history": history, "time_s": elapsed(), "config": config}
        ckpt.save(step, st, meta)

    # --- train -----------------------------------------------------------------------------
    bar = tqdm(
        total=total,
        initial=min(start, total),
        desc=desc if desc is not None else data.name,
        unit="step",
        disable=quiet or not is_main,
        dynamic_ncols=True,
    )
    stopped: str | None = None
    order, order_epoch = None, -1
    last_saved = start if ckpt is not None and ckpt.latest_step() is not None else None
    try:
        for k in range(start, total):
            epoch, j = divmod(k, spe)
            if order_epoch != epoch:
                order, order_epoch = batch_indices(n, batch_size, seed=seed, epoch=epoch), epoch
            idx = order[j]
            state, value = step_fn(state, put_batch(x_train[idx]), put_batch(y_train[idx]))
            bar.update(1)
            done = k + 1
            epoch_end = done % spe == 0
            checkpoint_now = ckpt is not None and done % every == 0
            if not (epoch_end or checkpoint_now or done % log_every == 0 or done == total):
                continue
            if not bool(_parallel.host_scalar(state.ok)):
                bad = int(_parallel.host_scalar(state.bad_step))
                where = (
                    f"the last good checkpoint is step {last_saved} in {ckpt.directory}"
                    if ckpt is not None and last_saved is not None
                    else "no checkpoint was written"
                )
                stopped = (
                    f"non-finite loss or parameters at step {bad + 1} (epoch {bad // spe + 1}): "
                    f"training stopped; the model keeps the parameters of step {bad}, the last "
                    f"finite ones; {where}. Lower the learning rate or check the data."
                )
                break
            bar.set_postfix(epoch=epoch + 1, loss=f"{_parallel.host_scalar(value):.4g}")
            if epoch_end:
                history.append(epoch_row(state, done // spe, done, elapsed()))
                if out_dir is not None and is_main:
                    _write_metrics(Path(out_dir), history)
            if checkpoint_now:
                save(state, done)
                last_saved = done
        if ckpt is not None and stopped is None and last_saved != total and total > start:
            save(state, total)
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()

    if out_dir is not None and is_main:
        _write_metrics(Path(out_dir), history)
    nnx.update(model, _parallel.to_local(state.params), _parallel.to_local(state.rest))
    opt_state = _parallel.to_local(state.opt_state)
    if stopped is not None:
        if on_nonfinite == "raise":
            raise FloatingPointError(stopped)
        warnings.warn(stopped, RuntimeWarning, stacklevel=2)
    steps = int(_parallel.host_scalar(state.step))
    return FitResult(
        history=history, model=model, opt_state=opt_state, steps=steps, stopped=stopped
    )
