"""The group of runs that one ``fit``/``fit_many`` call trains, and its state.

:class:`Runs` is the device side of R runs of one model structure: their states (stacked
along a leading axis and advanced by one ``vmap``-ped program, or one state per run advanced
in turn by the single-run program), the compiled step and evaluation programs, and the
placement of batches on a mesh. :func:`build` makes it from the models and optimizers: the
layout (``strategy``), the loss checked against the model's outputs, the programs
(:mod:`inna_jax.train._programs`) and the initial states. :class:`GroupState` is the host
side: each run's history and stop message, and where the loop starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import SingleDeviceSharding

from inna_jax.train import _checks, _parallel, _programs
from inna_jax.train._arguments import Settings
from inna_jax.train._checkpoint import _is_key
from inna_jax.train._spec import OptimizerSpec
from inna_jax.train._step import TrainState


def round_up(a: int, b: int) -> int:
    """The least multiple of ``b`` that is ``>= a``."""
    return -(-a // b) * b


def view(model: nnx.Module, *, training: bool) -> nnx.Module:
    """The model in training or evaluation mode (dropout, batch norm), without mutating it."""
    return nnx.view(
        model,
        deterministic=not training,
        use_running_average=not training,
        raise_if_not_found=False,
    )


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


def _has_convolution(graphdef: Any, params: Any, rest: Any, x: np.ndarray) -> bool:
    """Whether the model's forward pass holds a convolution (traced once per structure)."""
    key = (graphdef, x.shape[1:], x.dtype.str)
    if key not in _CONV_CACHE:

        def forward(p, r, xb):
            return nnx.merge(graphdef, p, r)(xb)

        jaxpr = jax.make_jaxpr(forward)(params, rest, x)
        _CONV_CACHE[key] = "conv_general_dilated" in str(jaxpr)
    return _CONV_CACHE[key]


class Runs:
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
            self.put_data = lambda a: jax.device_put(a, device)
            self._put_batch = self._put_batches = lambda a: a
        else:
            state_sh = (_parallel.runs_sharded if batched else _parallel.replicated)(mesh)
            data_sh = _parallel.batch_sharded(mesh)
            runs_sh = _parallel.run_batches_sharded(mesh)
            self._put_state = lambda t: _parallel.put_global(t, state_sh)
            self.put_data = lambda a: _parallel.put_global(a, data_sh)
            self._put_batch = (lambda a: a) if local else self.put_data
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
        """The state a checkpoint holds: stacked for a group, the run's own for one run."""
        if self.batched:
            return self.state
        return _stack(self.states) if group else self.states[0]

    def load_checkpoint_state(self, state: Any, group: bool) -> None:
        """Puts back a state of :meth:`checkpoint_state`'s form."""
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
        """Waits for the last step."""
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

    # --- results --------------------------------------------------------------------------
    def final_states(self) -> list[TrainState]:
        """Each run's final state, on this process (gathered across hosts if needed)."""
        if self.batched:
            return _host_unstack(_parallel.gather(self.state), self.count)
        return [_parallel.to_local(s) for s in self.states]


@dataclasses.dataclass
class GroupState:
    """The host side of the runs: histories, stop messages and where the loop starts."""

    histories: list[list[dict]]
    stopped: list[str | None]
    start: int = 0
    time_before: float = 0.0

    @classmethod
    def fresh(cls, count: int) -> GroupState:
        """The state of R runs that have not started."""
        return cls(histories=[[] for _ in range(count)], stopped=[None] * count)

    def alive(self) -> list[int]:
        """The runs that have not stopped."""
        return [r for r, s in enumerate(self.stopped) if s is None]


@dataclasses.dataclass
class Built:
    """What :func:`build` makes: the runs and what the loop needs to know about them."""

    runs: Runs
    loss: Any
    classification: bool
    data_devices: int


def _split(models: list[nnx.Module]) -> tuple[Any, list[tuple[Any, Any, Any]]]:
    """Each model's (graphdef, parameters, other variables) in training mode, one structure."""
    split = [
        (g, nnx.to_pure_dict(p), nnx.to_pure_dict(rest))
        for g, p, rest in (nnx.split(view(m, training=True), nnx.Param, ...) for m in models)
    ]
    graphdef = split[0][0]
    for r, (g, _, _) in enumerate(split):
        if g != graphdef:
            raise ValueError(
                f"every model of a group must have the same structure; models[{r}] differs "
                "from models[0]"
            )
    return graphdef, split


def _batched(group: bool, strategy: str, runs_devices: int, mesh, convolution) -> bool:
    """Whether the runs are stacked and vmapped (else stepped one after another)."""
    if not group:
        return False
    if strategy == "vmap" or runs_devices > 1:
        if strategy == "loop":
            raise ValueError(
                "strategy='loop' cannot split runs over a mesh's 'runs' axis of size "
                f"{runs_devices}; use strategy='vmap' or a mesh without a 'runs' axis"
            )
        return True
    if strategy == "loop":
        return False
    # auto: XLA:CPU runs a vmapped convolution as a slow grouped convolution
    return not (_parallel.platform(mesh) == "cpu" and convolution())


def _initial_states(opt_init, split, specs, batched: bool) -> TrainState | list[TrainState]:
    """The runs' initial training states: stacked (one init call) or one per run."""
    count = len(split)
    if batched:  # one init call for the whole group
        params = _host_stack([p for _, p, _ in split])
        if specs is not None:
            opt_states = opt_init(params, _hyper_arrays(specs))
        else:
            opt_states = opt_init(params)
        return TrainState(
            params=params,
            rest=_host_stack([rest for _, _, rest in split]),
            opt_state=opt_states,
            ok=cast(jax.Array, np.ones(count, bool)),  # host arrays, placed by the first step
            bad_step=cast(jax.Array, np.full(count, -1, np.int32)),
            step=cast(jax.Array, np.zeros(count, np.int32)),
        )
    states = []
    for r, (_, p, rest) in enumerate(split):
        if specs is not None:
            opt_state = opt_init(p, {k: np.asarray(v) for k, v in specs[r].hyperparams.items()})
        else:
            opt_state = opt_init(p)
        states.append(_fresh_state(p, rest, opt_state))
    return states


def build(
    models, optimizers, data, x_train, *, group, strategy, specs, settings: Settings,
    stacklevel: int,
):  # fmt: skip
    """The :class:`Runs` of ``models`` with ``optimizers``, their loss checked and states set.

    The loss is checked against the targets and the model's outputs for one batch, and a
    warning (``stacklevel`` frames up from here: the caller of ``fit``/``fit_many``) says
    when an EGN/SGN optimizer minimises another loss.
    """
    graphdef, split = _split(models)
    eval_graphdef = nnx.graphdef(view(models[0], training=False))
    mesh, batch_size = settings.mesh, int(settings.batch_size)
    data_devices = 1
    if mesh is not None:
        data_devices = _parallel.check_mesh(mesh, batch_size, runs=group)
    runs_devices = _parallel.axis_size(mesh, _parallel.RUNS_AXIS)
    batched = _batched(
        group, strategy, runs_devices, mesh,
        lambda: _has_convolution(graphdef, *split[0][1:], x_train[:1]),
    )  # fmt: skip
    padded = round_up(len(models), runs_devices) if batched else len(models)

    # the loss, checked against the targets and the model's outputs
    batch = jax.ShapeDtypeStruct((batch_size, *x_train.shape[1:]), x_train.dtype)
    outputs = _checks.output_shape(eval_graphdef, *split[0][1:], batch)
    loss, why = _checks.resolve_loss(settings.loss, data, outputs)
    _checks.check_targets(loss, data, outputs, why)
    _checks.warn_if_optimizer_loss_differs(optimizers[0], loss, why, stacklevel=stacklevel)

    classification = _checks.task_of(data) == "classification"
    options = settings.compiler_options
    opt_init = _programs.init_program(optimizers[0], batched=batched, compiler_options=options)
    step_fn = _programs.step_program(
        graphdef, optimizers[0], loss, batched=batched, mesh=mesh, compiler_options=options
    )
    eval_fn = _programs.eval_program(
        eval_graphdef, loss, classification=classification, batched=batched, mesh=mesh
    )
    runs = Runs(
        batched=batched, step_fn=step_fn, eval_fn=eval_fn, mesh=mesh, count=len(models),
        padded=padded,
    )  # fmt: skip
    runs.set_states(_initial_states(opt_init, split, specs, batched))  # copies: see Runs
    return Built(runs=runs, loss=loss, classification=classification, data_devices=data_devices)
