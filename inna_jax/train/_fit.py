r"""``fit`` and ``fit_many``: train Flax NNX models with optax, one run or a group of runs.

One epoch is :math:`m = \lfloor n/b \rfloor` steps over the seeded batches of
:mod:`inna_jax.data` (:func:`~inna_jax.data.batch_indices`). After each epoch the loss on the
whole training set and the loss and accuracy (or RMSE) on the held-out split are computed with
the model in evaluation mode, and a row is added to the history (epoch 0 is before training).

Both functions share one host loop. ``fit`` steps one state with a jitted step; ``fit_many``
steps R states, either stacked along a leading axis and advanced by one ``vmap``-ped program
(``strategy="vmap"``), or advanced one after another by the same single-run program
(``strategy="loop"``). The compiled programs are cached on a structural key
(:mod:`inna_jax.train._programs`), so later calls with the same model structure, optimizer
family, batch shape and mesh compile nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding
from tqdm import tqdm  # plain text bars: no ipywidgets needed in notebooks

from inna_jax.data import batch_indices, steps_per_epoch
from inna_jax.train import _checks, _losses, _parallel, _programs
from inna_jax.train._checkpoint import Checkpointer
from inna_jax.train._spec import OptimizerSpec
from inna_jax.train._step import TrainState

_ON_NONFINITE = ("stop", "raise", "record")
_CANCEL = threading.local()


@contextlib.contextmanager
def cancel_on(event: threading.Event) -> Iterator[None]:
    """In this block and this thread, ``fit``/``fit_many`` stop once ``event`` is set.

    They check it before every step and then raise ``KeyboardInterrupt`` (their progress bar
    and checkpointer closed, the checkpoints written so far kept). Groups trained in threads
    use it to stop together on Ctrl-C or on another group's error
    (:func:`inna_jax.reproduce.protocol.run_concurrently`).
    """
    previous = getattr(_CANCEL, "event", None)
    _CANCEL.event = event
    try:
        yield
    finally:
        _CANCEL.event = previous


_STRATEGIES = ("auto", "vmap", "loop")
Optimizer = OptimizerSpec | optax.GradientTransformation


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns, and :func:`fit_many` for each run.

    Attributes:
        history: one dict per evaluated epoch (epoch 0 = before training) with keys ``epoch``,
            ``step``, ``train_loss``, ``test_loss``, ``test_accuracy`` (classification) or
            ``test_rmse`` (regression), and ``time_s`` (wall time since the first step of
            the call had run, so without the compilation, summed over resumed runs; for a
            group, the group's time).
        model: the trained model (the same object that was passed in, updated in place).
        opt_state: the final optimizer state.
        steps: the number of optimizer steps taken in total.
        stopped: ``None`` for a run that finished, else the message explaining why it stopped
            (a non-finite loss or parameter).
        seed: the seed of the run's batch order.
        hyperparams: the run's hyperparameters (those of its
            :class:`~inna_jax.train.OptimizerSpec`; empty for a plain optax optimizer).
    """

    history: list[dict]
    model: nnx.Module
    opt_state: Any
    steps: int
    stopped: str | None = None
    seed: int = 0
    hyperparams: dict = dataclasses.field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """``True`` if the run stopped on a non-finite loss or parameter."""
        return self.stopped is not None


def _round_up(a: int, b: int) -> int:
    return -(-a // b) * b


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _write_metrics(out_dir: Path, histories: list[list[dict]], runs: list[dict] | None) -> None:
    """``metrics.json``/``metrics.csv``: one run's rows, or a group's with its run columns."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if runs is None:
        (out_dir / "metrics.json").write_text(json.dumps(histories[0], indent=2) + "\n")
        _write_csv(out_dir / "metrics.csv", histories[0])
        return
    doc = [{**info, "history": hist} for info, hist in zip(runs, histories, strict=True)]
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        {"run": info["run"], "seed": info["seed"], **info["hyperparams"], **row}
        for info, hist in zip(runs, histories, strict=True)
        for row in hist
    ]
    _write_csv(out_dir / "metrics.csv", rows)


def _view(model: nnx.Module, *, training: bool) -> nnx.Module:
    """The model in training or evaluation mode (dropout, batch norm), without mutating it."""
    return nnx.view(
        model,
        deterministic=not training,
        use_running_average=not training,
        raise_if_not_found=False,
    )


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _stack(trees: Sequence[Any]) -> Any:
    """Stacks the runs' pytrees along a new leading axis (on device)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, count: int) -> list[Any]:
    """The runs' pytrees of a stacked one (on device)."""
    return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(count)]


def _host_stack(trees: Sequence[Any]) -> Any:
    """:func:`_stack` through host memory: no program to compile for each leaf shape."""

    def stack(*xs):
        if _is_key(xs[0]):
            return jnp.stack(xs)
        return np.stack([np.asarray(x) for x in xs])

    return jax.tree.map(stack, *trees)


def _host_unstack(tree: Any, count: int) -> list[Any]:
    """:func:`_unstack` through host memory, each run's arrays put on the default device."""

    def host(x):
        return x if _is_key(x) else np.asarray(x)

    tree = jax.tree.map(host, tree)
    return [
        jax.tree.map(lambda x, r=r: x[r] if _is_key(x) else jax.device_put(x[r]), tree)
        for r in range(count)
    ]


def _fresh_state(params: Any, rest: Any, opt_state: Any) -> TrainState:
    return TrainState(
        params=params,
        rest=rest,
        opt_state=opt_state,
        ok=jnp.array(True),
        bad_step=jnp.array(-1, jnp.int32),
        step=jnp.array(0, jnp.int32),
    )


def _hyper_arrays(specs: Sequence[OptimizerSpec]) -> dict[str, np.ndarray]:
    """The hyperparameters of the runs as one array each (a leading axis of runs)."""
    return {k: np.asarray([s.hyperparams[k] for s in specs]) for k in specs[0].hyperparams}


_CONV_CACHE: dict[Any, bool] = {}


def _eval_chunk(n: int, most: int, multiple: int) -> int:
    """Rows per evaluation chunk: ``n`` rows in as few chunks of at most ``most`` (rounded
    up to ``multiple``) as possible, all of one size."""
    chunks = -(-n // max(int(most), 1))
    return _round_up(-(-n // chunks), multiple)


def _has_convolution(graphdef: Any, params: Any, rest: Any, x: np.ndarray) -> bool:
    """Whether the model's forward pass holds a convolution (traced once per structure)."""
    key = (graphdef, x.shape[1:], x.dtype.str)
    if key not in _CONV_CACHE:

        def forward(p, r, xb):
            return nnx.merge(graphdef, p, r)(xb)

        jaxpr = jax.make_jaxpr(forward)(params, rest, x)
        _CONV_CACHE[key] = "conv_general_dilated" in str(jaxpr)
    return _CONV_CACHE[key]


class _Runs:
    """The device side of R runs: their states, the compiled step and evaluation."""

    def __init__(self, *, batched, step_fn, eval_fn, mesh, count, padded):
        self.batched, self.step_fn, self.eval_fn = batched, step_fn, eval_fn
        self.mesh, self.count, self.padded = mesh, count, padded
        self.skip = [False] * count
        self.aux: Any = None
        # Batches go to the jitted step as NumPy arrays when one process owns every device:
        # jit's C++ dispatch moves them (and splits them over the mesh) far faster than a
        # Python-level device_put per run and step. Several processes build global arrays.
        local = jax.process_count() == 1
        if mesh is None:
            device = jax.devices()[0]
            one = SingleDeviceSharding(device)
            # a copy (through the host): the models' own arrays survive the step's donation
            self._put_state = lambda t: _parallel.put_global(t, one)
            self._put_data = lambda a: jax.device_put(a, device)
            self._put_batch = self._put_batches = lambda a: a
        else:
            state_sh = (_parallel.runs_sharded if batched else _parallel.replicated)(mesh)
            data_sh = _parallel.batch_sharded(mesh)
            runs_sh = _parallel.run_batches_sharded(mesh)
            self._put_state = lambda t: _parallel.put_global(t, state_sh)
            self._put_data = lambda a: _parallel.put_global(a, data_sh)
            self._put_batch = (lambda a: a) if local else self._put_data
            self._put_batches = (
                (lambda a: a) if local else (lambda a: _parallel.put_global(a, runs_sh))
            )

    # --- states ---------------------------------------------------------------------------
    def set_states(self, states: TrainState | list[TrainState]) -> None:
        """Places the runs' initial states: a stacked state (padded here with copies of the
        last run if the mesh needs more runs), or one state per run."""
        if self.batched:
            pad = self.padded - self.count
            if pad:
                states = jax.tree.map(
                    lambda x: (
                        np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[-1:], pad, 0)])
                        if not _is_key(x)
                        else jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)])
                    ),
                    states,
                )
            self.state = self._put_state(states)
        else:
            self.states = [self._put_state(s) for s in states]

    def checkpoint_state(self, group: bool) -> Any:
        if self.batched:
            return self.state
        return _stack(self.states) if group else self.states[0]

    def load_checkpoint_state(self, state: Any, group: bool) -> None:
        if self.batched:
            self.state = state
        else:
            self.states = _unstack(state, self.count) if group else [state]

    # --- steps ----------------------------------------------------------------------------
    def step(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """One step of every run; ``xs``/``ys`` hold the runs' batches, ``(R, b, ...)``."""
        if self.batched:
            if self.padded > self.count:
                pad = self.padded - self.count
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, 0)])
                ys = np.concatenate([ys, np.repeat(ys[-1:], pad, 0)])
            self.state, self.aux = self.step_fn(
                self.state, self._put_batches(xs), self._put_batches(ys)
            )
            return
        if self.aux is None:
            self.aux = [None] * self.count
        for r in range(self.count):
            if not self.skip[r]:
                self.states[r], self.aux[r] = self.step_fn(
                    self.states[r], self._put_batch(xs[r]), self._put_batch(ys[r])
                )

    def block(self) -> None:
        jax.block_until_ready(self.aux)

    def status(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last step's loss, finiteness flag and first bad step of each run (host)."""
        if self.batched:
            loss, ok, bad = (a[: self.count] for a in _parallel.host_arrays(self.aux))
            return loss, ok, bad
        got = iter(_parallel.host_arrays([a for a in self.aux if a is not None]))
        rows = [(np.nan, False, -1) if aux is None else next(got) for aux in self.aux]
        loss, ok, bad = zip(*rows, strict=True)
        return np.asarray(loss, float), np.asarray(ok, bool), np.asarray(bad, int)

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, x: np.ndarray, y: np.ndarray, ebs: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and metric sum / n on ``(x, y)`` for every run, in chunks of ``ebs``."""
        sums = []  # device values, read in one transfer at the end
        for lo in range(0, len(x), ebs):
            xb, yb = x[lo : lo + ebs], y[lo : lo + ebs]
            valid = len(xb)
            mask = np.zeros(ebs, np.float32)
            mask[:valid] = 1.0
            if valid < ebs:
                xb = np.concatenate([xb, np.zeros((ebs - valid, *xb.shape[1:]), xb.dtype)])
                yb = np.concatenate([yb, np.zeros((ebs - valid, *yb.shape[1:]), yb.dtype)])
            xb, yb, mask = self._put_data(xb), self._put_data(yb), self._put_data(mask)
            if self.batched:
                sums.append(self.eval_fn(self.state.params, self.state.rest, xb, yb, mask))
            else:
                sums += [self.eval_fn(st.params, st.rest, xb, yb, mask) for st in self.states]
        loss_sum, metric_sum = np.zeros(self.count), np.zeros(self.count)
        per_chunk = 1 if self.batched else self.count
        for i, (ls, ms) in enumerate(_parallel.host_arrays(sums)):
            if self.batched:
                loss_sum += ls[: self.count]
                metric_sum += ms[: self.count]
            else:
                loss_sum[i % per_chunk] += ls
                metric_sum[i % per_chunk] += ms
        return loss_sum / len(x), metric_sum / len(x)

    # --- results --------------------------------------------------------------------------
    def final_states(self) -> list[TrainState]:
        """Each run's final state, on this process (gathered across hosts if needed)."""
        if self.batched:
            return _host_unstack(_parallel.gather(self.state), self.count)
        return [_parallel.to_local(s) for s in self.states]


class _Progress:
    """One tqdm bar; until the first step of this call has run it says "compiling"."""

    def __init__(self, *, total, start, desc, disable):
        self.total, self.desc, self.disable = total, desc, disable
        self.bar = tqdm(
            total=total,
            initial=min(start, total),
            desc=f"{desc} (compiling)",
            unit="step",
            disable=disable,
            dynamic_ncols=True,
            leave=False,
        )
        self.compiling = True

    def started(self, done: int) -> None:
        """The first step is done: a fresh bar whose clock (and ETA) starts now."""
        self.bar.close()
        self.compiling = False
        self.bar = tqdm(
            total=self.total,
            initial=done,
            desc=self.desc,
            unit="step",
            disable=self.disable,
            dynamic_ncols=True,
        )

    def close(self) -> None:
        self.bar.close()


def _check_common(epochs, on_nonfinite, checkpoint_every, log_every, eval_every, loss):
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
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
    if eval_every is not None and (int(eval_every) != eval_every or eval_every < 1):
        raise ValueError(
            f"eval_every must be an integer >= 1 or None, got eval_every={eval_every!r}"
        )
    if loss is not None:
        _losses.per_example_loss(loss)  # validates the name


def _train(
    models: list[nnx.Module],
    optimizers: list[Optimizer],
    data: Any,
    *,
    group: bool,
    seeds: list[int],
    strategy: str,
    epochs: int,
    batch_size: int,
    loss: Any,
    out_dir: str | Path | None,
    checkpoint_dir: str | Path | None,
    checkpoint_every: int | None,
    mesh: Mesh | None,
    quiet: bool,
    desc: str | None,
    eval_batch_size: int | None,
    on_nonfinite: str,
    max_to_keep: int,
    log_every: int,
    eval_every: int | None,
    eval_test: bool,
    compiler_options: dict[str, Any] | None,
) -> list[FitResult]:
    """The host loop shared by :func:`fit` (one run) and :func:`fit_many` (a group)."""
    x_train, y_train = np.asarray(data.x_train), np.asarray(data.y_train)
    x_test, y_test = np.asarray(data.x_test), np.asarray(data.y_test)
    n = len(x_train)
    spe = steps_per_epoch(n, batch_size)
    total = int(epochs) * spe
    count = len(models)
    classification = _checks.task_of(data) == "classification"
    metric_key = "test_accuracy" if classification else "test_rmse"
    every = spe if checkpoint_every is None else int(checkpoint_every)
    is_main = jax.process_index() == 0
    specs = (
        cast(list[OptimizerSpec], optimizers) if isinstance(optimizers[0], OptimizerSpec) else None
    )
    optimizer = optimizers[0]

    # --- the runs' starting points ---------------------------------------------------------
    split = [
        (g, nnx.to_pure_dict(p), nnx.to_pure_dict(rest))
        for g, p, rest in (nnx.split(_view(m, training=True), nnx.Param, ...) for m in models)
    ]
    graphdef = split[0][0]
    for r, (g, _, _) in enumerate(split):
        if g != graphdef:
            raise ValueError(
                f"every model of a group must have the same structure; models[{r}] differs "
                "from models[0]"
            )
    eval_graphdef = nnx.graphdef(_view(models[0], training=False))

    # --- layout ----------------------------------------------------------------------------
    data_devices = 1
    if mesh is not None:
        data_devices = _parallel.check_mesh(mesh, int(batch_size), runs=group)
    runs_devices = _parallel.axis_size(mesh, _parallel.RUNS_AXIS)
    if not group:
        batched = False
    elif strategy == "vmap" or runs_devices > 1:
        if strategy == "loop":
            raise ValueError(
                "strategy='loop' cannot split runs over a mesh's 'runs' axis of size "
                f"{runs_devices}; use strategy='vmap' or a mesh without a 'runs' axis"
            )
        batched = True
    elif strategy == "loop":
        batched = False
    else:  # auto: XLA:CPU runs a vmapped convolution as a slow grouped convolution
        batched = not (
            _parallel.platform(mesh) == "cpu"
            and _has_convolution(graphdef, *split[0][1:], x_train[:1])
        )
    padded = _round_up(count, runs_devices) if batched else count

    # --- the loss, checked against the targets and the model's outputs ---------------------
    batch = jax.ShapeDtypeStruct((int(batch_size), *x_train.shape[1:]), x_train.dtype)
    outputs = _checks.output_shape(eval_graphdef, *split[0][1:], batch)
    loss, why = _checks.resolve_loss(loss, data, outputs)
    _checks.check_targets(loss, data, outputs, why)
    _checks.warn_if_optimizer_loss_differs(optimizer, loss, why, stacklevel=3)

    opt_init = _programs.init_program(optimizer, batched=batched, compiler_options=compiler_options)
    step_fn = _programs.step_program(
        graphdef, optimizer, loss, batched=batched, mesh=mesh, compiler_options=compiler_options
    )
    eval_fn = _programs.eval_program(
        eval_graphdef, loss, classification=classification, batched=batched, mesh=mesh
    )
    runs = _Runs(
        batched=batched, step_fn=step_fn, eval_fn=eval_fn, mesh=mesh, count=count, padded=padded
    )

    if batched:  # one init call for the whole group
        params = _host_stack([p for _, p, _ in split])
        if specs is not None:
            opt_states = opt_init(params, _hyper_arrays(specs))
        else:
            opt_states = opt_init(params)
        states = TrainState(
            params=params,
            rest=_host_stack([rest for _, _, rest in split]),
            opt_state=opt_states,
            ok=cast(jax.Array, np.ones(count, bool)),  # host arrays, placed by the first step
            bad_step=cast(jax.Array, np.full(count, -1, np.int32)),
            step=cast(jax.Array, np.zeros(count, np.int32)),
        )
    else:
        states = []
        for r, (_, p, rest) in enumerate(split):
            if specs is not None:
                opt_state = opt_init(p, {k: np.asarray(v) for k, v in specs[r].hyperparams.items()})
            else:
                opt_state = opt_init(p)
            states.append(_fresh_state(p, rest, opt_state))
    runs.set_states(states)  # copies: the models' own arrays survive donation

    ebs = int(eval_batch_size) if eval_batch_size is not None else max(int(batch_size), 512)
    # each split in equal chunks of at most ebs rows (the last one padded and masked), so
    # that little is computed for padding: 1,348 rows and ebs 512 give 3 chunks of 450
    ebs_train = _eval_chunk(len(x_train), ebs, data_devices)
    ebs_test = _eval_chunk(max(len(x_test), 1), ebs, data_devices)

    def epoch_rows(epoch: int, step: int, time_s: float) -> list[dict]:
        train_loss, _ = runs.evaluate(x_train, y_train, ebs_train)
        if eval_test:
            test_loss, test_metric = runs.evaluate(x_test, y_test, ebs_test)
        rows = []
        for r in range(count):
            row = {"epoch": epoch, "step": step, "train_loss": float(train_loss[r])}
            if eval_test:
                metric = float(test_metric[r])
                row["test_loss"] = float(test_loss[r])
                row[metric_key] = metric if classification else math.sqrt(metric)
            row["time_s"] = round(time_s, 4)
            rows.append(row)
        return rows

    def evaluated(epoch: int) -> bool:
        if eval_every is None:
            return epoch == epochs
        return epoch % int(eval_every) == 0 or epoch == epochs

    run_info = [
        {"run": r, "seed": seeds[r], "hyperparams": specs[r].hyperparams if specs else {}}
        for r in range(count)
    ]

    def write_metrics() -> None:
        if out_dir is not None and is_main:
            _write_metrics(Path(out_dir), histories, run_info if group else None)

    # --- resume ----------------------------------------------------------------------------
    config: dict[str, Any] = {"batch_size": int(batch_size), "num_train": int(n)}
    if group:
        config |= {"seeds": [int(s) for s in seeds], "runs": count, "padded_runs": padded}
        config["hyperparams"] = [info["hyperparams"] for info in run_info]
    else:
        config["seed"] = int(seeds[0])
    ckpt = Checkpointer(checkpoint_dir, max_to_keep=max_to_keep) if checkpoint_dir else None
    histories: list[list[dict]] = [[] for _ in range(count)]
    stopped: list[str | None] = [None] * count
    start, time_before = 0, 0.0
    if ckpt is not None and ckpt.latest_step() is not None:
        state, meta = ckpt.restore(cast(int, ckpt.latest_step()), like=runs.checkpoint_state(group))
        for key, value in config.items():
            if meta["config"].get(key) != value:
                raise ValueError(
                    f"checkpoint in {ckpt.directory} comes from a run with {key}="
                    f"{meta['config'].get(key)!r}, but this run has {key}={value!r}; use "
                    "another checkpoint_dir or the same settings"
                )
        runs.load_checkpoint_state(state, group)
        start, time_before = int(meta["step"]), meta["time_s"]
        if group:
            histories = [list(h) for h in meta["histories"]]
            stopped = list(meta["stopped"])
        else:
            histories = [list(meta["history"])]
        runs.skip = [s is not None for s in stopped]
    # The clock starts when the first step of this call has run: its compilation and the
    # epoch-0 evaluation are not training time.
    clock: dict[str, float | None] = {"t0": None}

    def elapsed() -> float:
        t0 = clock["t0"]
        return time_before + (0.0 if t0 is None else time.perf_counter() - t0)

    if start == 0 and not any(histories) and evaluated(0):
        for hist, row in zip(histories, epoch_rows(0, 0, 0.0), strict=True):
            hist.append(row)
        write_metrics()

    def save(step: int) -> None:
        meta: dict[str, Any] = {"step": step, "time_s": elapsed(), "config": config}
        if group:
            meta |= {"histories": histories, "stopped": stopped}
        else:
            meta["history"] = histories[0]
        cast(Checkpointer, ckpt).save(step, runs.checkpoint_state(group), meta)

    def finite_at_start(r: int) -> bool:
        """Whether run r's training loss was finite at its initial parameters (where a run
        stopped at its first step still is)."""
        rows = histories[r]
        if rows and rows[0]["epoch"] == 0:
            return math.isfinite(rows[0]["train_loss"])
        return math.isfinite(runs.evaluate(x_train, y_train, ebs_train)[0][r])

    # --- train -----------------------------------------------------------------------------
    if desc is None:
        desc = data.name if not group else f"{data.name}, {count} runs"
    progress = _Progress(total=total, start=start, desc=desc, disable=quiet or not is_main)
    orders: list[np.ndarray] = []
    order_epoch = -1
    last_saved = start if ckpt is not None and ckpt.latest_step() is not None else None
    cancel = getattr(_CANCEL, "event", None)
    try:
        for k in range(start, total):
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt(f"training stopped at step {k} (cancelled)")
            epoch, j = divmod(k, spe)
            if order_epoch != epoch:
                orders = [
                    batch_indices(n, batch_size, seed=s, epoch=epoch) for s in seeds
                ]  # fmt: skip
                order_epoch = epoch
            if group:
                idx = np.stack([order[j] for order in orders])
                runs.step(x_train[idx], y_train[idx])
            else:
                idx = orders[0][j]
                runs.step(x_train[idx][None], y_train[idx][None])
            done = k + 1
            if progress.compiling:
                runs.block()
                clock["t0"] = time.perf_counter()
                progress.started(done)
            else:
                progress.bar.update(1)
            epoch_end = done % spe == 0
            checkpoint_now = ckpt is not None and done % every == 0
            if not (epoch_end or checkpoint_now or done % log_every == 0 or done == total):
                continue
            value, ok, bad = runs.status()
            for r in range(count):
                if stopped[r] is None and not bool(ok[r]):
                    never = int(bad[r]) == 0 and not finite_at_start(r)
                    stopped[r] = _stop_message(
                        int(bad[r]), spe, r, seeds[r], group, ckpt, last_saved,
                        never_finite=loss if never else None,
                    )  # fmt: skip
                    runs.skip[r] = True
            if all(s is not None for s in stopped) or (not group and stopped[0]):
                break
            if any(s is not None for s in stopped) and on_nonfinite == "raise":
                break
            alive = [r for r in range(count) if stopped[r] is None]
            shown = float(np.median(value[alive]))
            postfix = {"epoch": epoch + 1, "loss": f"{shown:.4g}"}
            if group:
                postfix["alive"] = f"{len(alive)}/{count}"
            progress.bar.set_postfix(postfix)
            if epoch_end and evaluated(done // spe):
                rows = epoch_rows(done // spe, done, elapsed())
                for r in alive:
                    histories[r].append(rows[r])
                write_metrics()
            if checkpoint_now:
                save(done)
                last_saved = done
        else:  # the loop ran to its end (some runs of a group may have stopped on the way)
            if ckpt is not None and last_saved != total and total > start:
                save(total)
    finally:
        progress.close()
        if ckpt is not None:
            ckpt.close()

    write_metrics()
    finals = runs.final_states()
    results = []
    for r, (model, final) in enumerate(zip(models, finals, strict=True)):
        nnx.update(model, final.params, final.rest)
        results.append(
            FitResult(
                history=histories[r],
                model=model,
                opt_state=final.opt_state,
                steps=int(_parallel.host_scalar(final.step)),
                stopped=stopped[r],
                seed=int(seeds[r]),
                hyperparams=run_info[r]["hyperparams"],
            )
        )
    for message in stopped:
        if message is None:
            continue
        if on_nonfinite == "raise":
            raise FloatingPointError(message)
        if on_nonfinite == "stop":
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    return results


def _stop_message(bad, spe, run, seed, group, ckpt, last_saved, never_finite=None) -> str:
    """Why a run stopped; ``never_finite``: the loss, when it was not finite from the start."""
    where = (
        f"the last good checkpoint is step {last_saved} in {ckpt.directory}"
        if ckpt is not None and last_saved is not None
        else "no checkpoint was written"
    )
    if never_finite is not None:
        return _never_finite_message(never_finite, run, seed, group, where)
    what = f"non-finite loss or parameters at step {bad + 1} (epoch {bad // spe + 1})"
    if not group:
        return (
            f"{what}: training stopped; the model keeps the parameters of step {bad}, the last "
            f"finite ones; {where}. Lower the learning rate or check the data."
        )
    kept = "; the group's later checkpoints hold them" if ckpt is not None else ""
    return (
        f"run {run} (seed {seed}): {what}: this run stopped and keeps the parameters of step "
        f"{bad}, the last finite ones{kept}; the other runs went on. Lower the learning rate "
        "or check the data."
    )


def _never_finite_message(loss, run, seed, group, where) -> str:
    """A run whose loss was not finite at its initial parameters: not a step-size problem."""
    what = "non-finite loss at step 1 (epoch 1), already at the initial parameters"
    if group:
        what = f"run {run} (seed {seed}): {what}: this run stopped and keeps its initial "
        what += "parameters; the other runs went on"
    else:
        what += f": training stopped; the model keeps its initial parameters; {where}"
    return (
        f"{what}. A lower learning rate will not help: the loss "
        f"(loss={_checks.describe(loss)}), the targets or the model are likely wrong, or the "
        "inputs hold NaN or inf."
    )


def fit(
    model: nnx.Module,
    optimizer: OptimizerSpec | optax.GradientTransformation,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    seed: int = 0,
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
    eval_every: int | None = 1,
    eval_test: bool = True,
    compiler_options: Mapping[str, Any] | None = None,
    extra_args: bool | None = None,
) -> FitResult:
    r"""Trains ``model`` in place on ``data`` with ``optimizer``; evaluates every epoch.

    Each step :math:`k` takes the batch :math:`B_k` drawn from ``seed``
    (:func:`~inna_jax.data.batch_at_step`: a uniform permutation per epoch, cut into
    :math:`\lfloor n/b \rfloor` batches) and applies

    .. math::

        g_k = \nabla_\theta \frac1b \sum_{i \in B_k} \ell(f(x_i; \theta_k), y_i),\qquad
        (u_k, s_{k+1}) = \mathrm{tx.update}(g_k, s_k, \theta_k, x_{B_k}, y_{B_k}),\qquad
        \theta_{k+1} = \theta_k + u_k .

    The optimizer always gets ``params`` (INNA needs them) and ``inputs=x``, ``targets=y``
    (EGN and SGN need them); a plain ``GradientTransformation`` is wrapped by
    ``optax.with_extra_args_support``, which drops them.

    **Compiled once.** The step and the evaluation are compiled on the first call and kept
    for later calls with the same model structure, optimizer family, loss, batch shape and
    mesh. With an :class:`~inna_jax.train.OptimizerSpec` the hyperparameters are values in
    the optimizer state, so a call with another :math:`\gamma_0`, :math:`(\alpha, \beta)`,
    seed or initial weights compiles nothing; a plain optax object is reused only when the
    same object is passed again.

    With a ``mesh``, the same jitted step runs with the parameters replicated and each batch
    split over the mesh axis ``"data"``: the global batch, hence the result, does not depend
    on the device count. With several processes (after
    :func:`~inna_jax.train.initialize_distributed`), pass a mesh over all their devices
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
    checkpoint, also in :attr:`FitResult.stopped`; ``"record"`` stops the same way without
    the warning (the message is only in :attr:`FitResult.stopped`); ``"raise"`` raises
    ``FloatingPointError``.

    A loss that is not finite already at the initial parameters is not a step-size problem:
    the message then says so, and names the loss, the targets and the model as the likely
    culprits instead of advising a lower learning rate.

    **Checked before the first step.** The loss defaults to the data set's task (its
    ``num_classes``, see :class:`~inna_jax.data.ArrayDataset`): the MSE for a regression set
    (diabetes, California housing), the cross-entropy for a classification set (digits,
    mnist1d, CIFAR-100), the binary cross-entropy for two classes and a model with one
    output. The model's outputs for one batch come from one ``jax.eval_shape`` (a trace, no
    compilation), and the targets of both splits must suit the loss: integer labels of shape
    ``(n,)`` in :math:`[0, C)` for the cross-entropy, with :math:`C \ge 2` the width of the
    outputs; finite float targets shaped like the outputs for the MSE; values in
    :math:`[0, 1]` shaped like the outputs for the binary cross-entropy (a callable loss is
    not checked). EGN and SGN (:func:`inna_jax.egn`, :func:`inna_jax.sgn`) get the raw batch
    and minimise their own ``loss=``, ignoring the gradient of ``fit``'s; when the two
    differ, a ``UserWarning`` says that the reported losses are not what they minimise.

    The progress bar says "compiling" until the first step has run, then starts its clock,
    so that its time estimate does not extrapolate the compilation.

    Args:
        model: a Flax NNX module (``flax.nnx.Module``), trained in place. Equinox and Flax
            Linen modules and plain functions are refused: the documentation's guides show
            the optimizers in their own training loops.
        optimizer: an :class:`~inna_jax.train.OptimizerSpec` (hyperparameters as values), or
            any optax ``GradientTransformation`` (INNA, EGN, optax's).
        data: an :class:`~inna_jax.data.ArrayDataset`.
        epochs: number of passes over the training set (``>= 0``).
        batch_size: global batch size :math:`b` (a multiple of the mesh's ``"data"`` size).
        loss: ``"cross_entropy"`` (integer labels), ``"mse"`` (mean of
            :math:`\tfrac12\lVert f - y\rVert^2`), ``"binary_cross_entropy"``, a callable
            ``(outputs, targets) -> scalar`` batch mean, or ``None`` (default): from the data
            set's task, as above.
        seed: seed of the batch order.
        out_dir: if given, ``metrics.csv`` and ``metrics.json`` are (re)written there after
            every evaluation.
        checkpoint_dir: orbax checkpoint folder; resumes from its newest checkpoint.
        checkpoint_every: checkpoint period in steps (default: one epoch).
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis; ``None`` for one device.
        quiet: turn the tqdm progress bar off.
        desc: label of the progress bar (default: the data set's name).
        eval_batch_size: the most rows of one evaluation pass (default
            ``max(batch_size, 512)``); each split is cut into equal chunks of at most this
            size (rounded up to the mesh's ``"data"`` size), the last one padded.
        on_nonfinite: ``"stop"`` (warn and return), ``"record"`` (return; the reason is in
            :attr:`FitResult.stopped`) or ``"raise"``.
        max_to_keep: number of recent checkpoints kept.
        log_every: the loss shown on the progress bar, and the finiteness flag, are read
            every ``log_every`` steps (and at every epoch end and checkpoint).
        eval_every: evaluate at epoch 0, every ``eval_every`` epochs and after the last one;
            ``None``: only after the last epoch.
        eval_test: also evaluate the held-out split (``False``: rows hold the training loss
            only).
        compiler_options: XLA options of the compiled training step and optimizer
            initialisation (``jax.jit(..., compiler_options=...)``; the evaluation keeps
            XLA's defaults). On a CPU, ``{"xla_backend_optimization_level": 1}`` (LLVM
            ``-O1`` instead of ``-O2``) compiles a small CNN's step about a quarter faster
            and runs it as fast, which pays when compiling is most of a short run
            (``inna-jax figure2`` uses it); for large elementwise work it can be slower
            (INNA's update of 1e6 parameters: 0.27 ms instead of 0.22 ms).
        extra_args: deprecated and ignored: the optimizer always gets ``inputs=`` and
            ``targets=``.

    Returns:
        A :class:`FitResult`.

    Raises:
        TypeError: for a model that is not a Flax NNX module.
        ValueError: for a bad argument, targets that do not suit the loss or the model's
            outputs, or a checkpoint from a run with another seed, batch size or training set.
        FloatingPointError: with ``on_nonfinite="raise"``, on a non-finite loss.

    Warns:
        UserWarning: when an EGN or SGN optimizer minimises another loss than ``loss``.

    Example:
        >>> import optax
        >>> from flax import nnx
        >>> from inna_jax.data import load_digits
        >>> from inna_jax.models import MLP
        >>> from inna_jax.train import OptimizerSpec, fit
        >>> data = load_digits()
        >>> model = MLP(64, (32,), 10, rngs=nnx.Rngs(0))
        >>> result = fit(model, optax.sgd(0.1), data, epochs=2, batch_size=64, quiet=True)
        >>> [row["epoch"] for row in result.history], result.history[-1]["test_accuracy"] > 0.8
        ([0, 1, 2], True)
        >>> spec = OptimizerSpec(optax.sgd, learning_rate=0.05)  # compiled once for all rates
        >>> for lr in (0.05, 0.2):
        ...     result = fit(MLP(64, (32,), 10, rngs=nnx.Rngs(1)), spec.replace(learning_rate=lr),
        ...                  data, epochs=1, batch_size=64, quiet=True)
        >>> from inna_jax.data import load_diabetes  # a regression set: MSE, test RMSE
        >>> result = fit(MLP(10, (32,), 1, rngs=nnx.Rngs(0)), optax.adam(1e-2), load_diabetes(),
        ...              epochs=2, batch_size=32, quiet=True)
        >>> sorted(result.history[-1]), result.history[-1]["test_rmse"] < 1.0
        (['epoch', 'step', 'test_loss', 'test_rmse', 'time_s', 'train_loss'], True)

    References:
        Castera, Bolte, Févotte, Pauwels, *An inertial Newton algorithm for deep learning*,
        JMLR 22 (2021), §5 (training protocol); the JAX guide *Distributed arrays and
        automatic parallelization* (``jax.jit`` with ``NamedSharding``).
    """
    if extra_args is not None:
        warnings.warn(
            "fit(extra_args=...) is deprecated and has no effect: the optimizer always gets "
            "inputs= and targets= (plain optax transformations ignore them)",
            DeprecationWarning,
            stacklevel=2,
        )
    _checks.check_model(model)
    _check_common(epochs, on_nonfinite, checkpoint_every, log_every, eval_every, loss)
    _check_optimizer(optimizer, "optimizer")
    compiler_options = _check_compiler_options(compiler_options)
    return _train(
        [model],
        [optimizer],
        data,
        group=False,
        seeds=[_check_seed(seed, "seed")],
        strategy="loop",
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        out_dir=out_dir,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        mesh=mesh,
        quiet=quiet,
        desc=desc,
        eval_batch_size=eval_batch_size,
        on_nonfinite=on_nonfinite,
        max_to_keep=max_to_keep,
        log_every=log_every,
        eval_every=eval_every,
        eval_test=eval_test,
        compiler_options=compiler_options,
    )[0]


def _check_seed(seed: Any, name: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {name}={seed!r}")
    return int(seed)


def _check_compiler_options(options: Any) -> dict[str, Any] | None:
    if options is None:
        return None
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(
            "compiler_options must be None or a mapping from XLA option names (str) to "
            f"values, got compiler_options={options!r}"
        )
    return dict(options) or None


def _check_optimizer(optimizer: Any, name: str) -> None:
    if isinstance(optimizer, OptimizerSpec):
        return
    init, update = getattr(optimizer, "init", None), getattr(optimizer, "update", None)
    if not (callable(init) and callable(update)):
        raise TypeError(
            f"{name} must be an optax GradientTransformation or an OptimizerSpec, got "
            f"{type(optimizer).__name__}"
        )


def fit_many(
    models: Sequence[nnx.Module],
    optimizers: OptimizerSpec | optax.GradientTransformation | Sequence[OptimizerSpec],
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    seeds: int | Sequence[int] = 0,
    strategy: str = "auto",
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
    eval_every: int | None = 1,
    eval_test: bool = True,
    compiler_options: Mapping[str, Any] | None = None,
) -> list[FitResult]:
    r"""Trains R independent runs of one model structure and one optimizer family together.

    Run :math:`r` has its own initial weights (``models[r]``), batch order (``seeds[r]``)
    and hyperparameters :math:`h_r` (``optimizers[r]``), and follows exactly the recursion of
    :func:`fit`,

    .. math::

        \theta^{(r)}_{k+1} = \theta^{(r)}_k + u^{(r)}_k,\qquad
        (u^{(r)}_k, s^{(r)}_{k+1}) = \mathcal F(h_r).\mathrm{update}\big(
        \nabla_\theta L_{B^{(r)}_k}(\theta^{(r)}_k), s^{(r)}_k, \theta^{(r)}_k\big),

    so the results equal R separate :func:`fit` calls (up to the order of floating-point
    operations). Each run has its own history and its own non-finite stop: a diverging run
    is frozen at its last finite state and the others go on. One progress bar shows the
    group; one checkpoint folder holds every run's state (stacked), and a resumed group ends
    bit-identical to an uninterrupted one.

    How the runs share the device (``strategy``):

    - ``"vmap"``: the states are stacked along a leading axis of runs and one ``jax.vmap``-ped
      program advances them all: one compilation and one dispatch per step for the group.
      On a mesh with a ``"runs"`` axis (:func:`~inna_jax.train.run_mesh`) the runs are split
      over it (the group is padded with copies of its last run to a multiple of its size),
      and each run's batch over ``"data"``.
    - ``"loop"``: the single-run program of :func:`fit` advances each run in turn (one
      compilation too, R dispatches per step).
    - ``"auto"`` (default): ``"vmap"``, except on CPU for models with convolutions: XLA:CPU
      turns a convolution vmapped over per-run kernels into a grouped convolution that runs
      5–7 times slower than the R separate ones (measured on a small CNN and the NiN).

    Args:
        models: the R Flax NNX models (the same structure), trained in place.
        optimizers: one :class:`~inna_jax.train.OptimizerSpec` or optax optimizer for every
            run, or a sequence of R specs of one family (per-run hyperparameters).
        data: an :class:`~inna_jax.data.ArrayDataset`.
        epochs: number of passes over the training set.
        batch_size: batch size of every run.
        loss: as in :func:`fit` (default: from the data set's task); the same checks run
            before the first step.
        seeds: the batch-order seed of each run (one int: the same for all).
        strategy: ``"auto"``, ``"vmap"`` or ``"loop"``.
        out_dir: if given, ``metrics.csv`` (one row per run and epoch, with the run's index,
            seed and hyperparameters) and ``metrics.json`` are written there.
        checkpoint_dir: orbax checkpoint folder of the group; resumes from its newest.
        checkpoint_every: checkpoint period in steps (default: one epoch).
        mesh: ``None``, a mesh with a ``"data"`` axis (every run's batch split over it), or
            a mesh with axes ``"runs"`` and ``"data"``.
        quiet: turn the progress bar off.
        desc: label of the progress bar.
        eval_batch_size: as in :func:`fit`.
        on_nonfinite: ``"stop"`` (warn for each stopped run and go on with the others),
            ``"record"`` (the same without the warnings: each reason is in its
            :attr:`FitResult.stopped`; a protocol that reports divergence itself, or runs
            groups in threads, where ``warnings.catch_warnings`` is not safe) or ``"raise"``
            (raise ``FloatingPointError`` when a run stops).
        max_to_keep: number of recent checkpoints kept.
        log_every: as in :func:`fit`.
        eval_every: as in :func:`fit`.
        eval_test: as in :func:`fit`.
        compiler_options: as in :func:`fit`.

    Returns:
        One :class:`FitResult` per run, in order.

    Raises:
        TypeError: for a model that is not a Flax NNX module.
        ValueError: for a bad argument: models of different structures, optimizers of
            different families, a seed list of the wrong length, targets that do not suit
            the loss or the models' outputs (as in :func:`fit`), a checkpoint of another
            group.
        FloatingPointError: with ``on_nonfinite="raise"``.

    Warns:
        UserWarning: when EGN or SGN minimise another loss than ``loss`` (as in :func:`fit`).

    Example:
        >>> import optax
        >>> from flax import nnx
        >>> from inna_jax.data import load_digits
        >>> from inna_jax.models import MLP
        >>> from inna_jax.train import OptimizerSpec, fit_many
        >>> data = load_digits()
        >>> grid = [OptimizerSpec(optax.sgd, learning_rate=lr) for lr in (0.01, 0.1, 1.0)]
        >>> models = [MLP(64, (32,), 10, rngs=nnx.Rngs(0)) for _ in grid]  # same start
        >>> results = fit_many(models, grid, data, epochs=2, batch_size=64, quiet=True)
        >>> [r.hyperparams["learning_rate"] for r in results]
        [0.01, 0.1, 1.0]
        >>> results[1].history[-1]["train_loss"] < results[0].history[-1]["train_loss"]
        True

    References:
        Castera, Bolte, Févotte, Pauwels, *An inertial Newton algorithm for deep learning*,
        JMLR 22 (2021), §5 (a γ₀ grid and several seeds per method); the JAX documentation
        of ``jax.vmap``.
    """
    _check_common(epochs, on_nonfinite, checkpoint_every, log_every, eval_every, loss)
    compiler_options = _check_compiler_options(compiler_options)
    models = list(models)
    if not models:
        raise ValueError("models must be a non-empty sequence of Flax NNX modules, got none")
    for i, m in enumerate(models):
        _checks.check_model(m, f"models[{i}]")
    count = len(models)
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}, got strategy={strategy!r}")
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be an integer or a sequence of integers, got seeds={seeds!r}")
    seed_list = [seeds] * count if isinstance(seeds, int | np.integer) else list(seeds)
    run_seeds = [_check_seed(s, f"seeds[{i}]") for i, s in enumerate(seed_list)]
    if len(run_seeds) != count:
        raise ValueError(f"seeds must hold one seed per model ({count}), got {len(run_seeds)}")
    single = isinstance(optimizers, OptimizerSpec | str) or callable(
        getattr(optimizers, "update", None)
    )
    run_optimizers: list[Any]
    if single or not isinstance(optimizers, Sequence):
        _check_optimizer(optimizers, "optimizers")
        run_optimizers = [optimizers] * count
    else:
        run_optimizers = list(optimizers)
        if len(run_optimizers) != count:
            raise ValueError(
                f"optimizers must be one optimizer or one per model ({count}), got "
                f"{len(run_optimizers)}"
            )
        for i, o in enumerate(run_optimizers):
            _check_optimizer(o, f"optimizers[{i}]")
        if not all(isinstance(o, OptimizerSpec) for o in run_optimizers):
            if any(o is not run_optimizers[0] for o in run_optimizers):
                raise ValueError(
                    "per-run optimizers must be OptimizerSpecs of one family (plain optax "
                    "objects cannot carry per-run hyperparameters); pass one optax optimizer "
                    "for every run, or OptimizerSpecs"
                )
        elif any(o.family != run_optimizers[0].family for o in run_optimizers):
            raise ValueError(
                "the optimizers of a group must be of one family (same factory, same static "
                f"arguments, same hyperparameter names); got {run_optimizers[0]!r} and "
                f"{next(o for o in run_optimizers if o.family != run_optimizers[0].family)!r}"
            )
    return _train(
        models,
        run_optimizers,
        data,
        group=True,
        seeds=run_seeds,
        strategy=strategy,
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        out_dir=out_dir,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        mesh=mesh,
        quiet=quiet,
        desc=desc,
        eval_batch_size=eval_batch_size,
        on_nonfinite=on_nonfinite,
        max_to_keep=max_to_keep,
        log_every=log_every,
        eval_every=eval_every,
        eval_test=eval_test,
        compiler_options=compiler_options,
    )
