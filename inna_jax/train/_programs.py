"""The compiled programs of ``fit``/``fit_many``, cached on a structural key.

A program (optimizer init, training step, evaluation) is a ``jax.jit`` of a closure over the
model's graph, the loss and the optimizer. ``jax.jit`` caches compilations per function
object, so a new closure per ``fit`` call would compile again. Here each jitted function is
kept under a key made of what its closure depends on: the kind of program, how the runs are
laid out (``"single"``: one run's state; ``"vmap"``: a leading axis of runs), the optimizer
family (:attr:`~inna_jax.train.OptimizerSpec.family`, or the identity of a plain optax
object), the model's ``GraphDef``, the loss, the mesh and the XLA ``compiler_options`` of
the step and the init (a dict, or ``None`` for XLA's defaults, as ``fit`` checked them).
``jax.jit`` itself then keys on shapes, dtypes and shardings. Hyperparameters live in the
optimizer state, so they are not part of any key.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Hashable
from typing import Any

import jax
import optax
from jax.sharding import Mesh

from inna_jax.train import _parallel
from inna_jax.train._spec import OptimizerSpec
from inna_jax.train._step import make_eval, make_step

_MAX_ENTRIES = 64
_CACHE: collections.OrderedDict[Hashable, Callable] = collections.OrderedDict()
_LOCK = threading.Lock()


def _cached(key: Hashable, build: Callable[[], Callable]) -> Callable:
    # Building only wraps functions (nothing is traced), so it happens under the lock: groups
    # trained in threads then share one jitted function, and jax compiles it once.
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        fn = _CACHE[key] = build()
        while len(_CACHE) > _MAX_ENTRIES:
            _CACHE.popitem(last=False)
        return fn


def clear() -> None:
    """Forgets every cached program (the next ``fit`` compiles again)."""
    with _LOCK:
        _CACHE.clear()


def family_key(optimizer: OptimizerSpec | optax.GradientTransformation) -> Hashable:
    """The spec's family, or the identity of a plain optax object (its two functions)."""
    if isinstance(optimizer, OptimizerSpec):
        return ("spec", optimizer.family)
    return ("tx", optimizer.init, optimizer.update)


def _loss_key(loss: Any) -> Hashable:
    return loss if isinstance(loss, str) else ("callable", loss)


def _options_key(options: dict[str, Any] | None) -> Hashable:
    return None if options is None else tuple(sorted(options.items()))


def init_program(
    optimizer: OptimizerSpec | optax.GradientTransformation,
    *,
    batched: bool,
    compiler_options: dict[str, Any] | None = None,
):
    """``(params, hyperparams) -> opt_state`` for a spec, ``params -> opt_state`` otherwise."""

    def build():
        if isinstance(optimizer, OptimizerSpec):
            inner = optimizer.inner_factory()

            def opt_init(params, hyperparams):  # pyright: ignore[reportRedeclaration]
                return optax.inject_hyperparams(inner)(**hyperparams).init(params)

        else:

            def opt_init(params):
                return optimizer.init(params)

        fn = jax.vmap(opt_init) if batched else opt_init
        return jax.jit(fn, compiler_options=compiler_options)

    key = ("init", batched, family_key(optimizer), _options_key(compiler_options))
    return _cached(key, build)


def step_program(
    graphdef: Any,
    optimizer: OptimizerSpec | optax.GradientTransformation,
    loss: Any,
    *,
    batched: bool,
    mesh: Mesh | None,
    compiler_options: dict[str, Any] | None = None,
):
    """The jitted (and, for groups, vmapped) step ``(state, x, y) -> (state, aux)``."""

    def build():
        tx = optimizer.build() if isinstance(optimizer, OptimizerSpec) else optimizer
        fn = make_step(graphdef, tx, loss, branch=_parallel.platform(mesh) == "cpu")
        if batched:
            fn = jax.vmap(fn)
        if mesh is None:
            return jax.jit(fn, donate_argnums=0, compiler_options=compiler_options)
        state, batch, rep = _shardings(mesh, batched)
        return jax.jit(
            fn,
            donate_argnums=0,
            in_shardings=(state, batch, batch),
            out_shardings=(state, (rep, rep, rep)),
            compiler_options=compiler_options,
        )

    key = (
        "step",
        batched,
        family_key(optimizer),
        graphdef,
        _loss_key(loss),
        mesh,
        _options_key(compiler_options),
    )
    return _cached(key, build)


def eval_program(
    graphdef: Any, loss: Any, *, classification: bool, batched: bool, mesh: Mesh | None
):
    """The jitted masked sums ``(params, rest, x, y, mask) -> (loss_sum, metric_sum)``.

    For groups the parameters carry a leading axis of runs and the batch is shared.
    """

    def build():
        fn = make_eval(graphdef, loss, classification=classification)
        if batched:
            fn = jax.vmap(fn, in_axes=(0, 0, None, None, None))
        if mesh is None:
            return jax.jit(fn)
        state, _, rep = _shardings(mesh, batched)
        data = _parallel.batch_sharded(mesh)
        return jax.jit(fn, in_shardings=(state, state, data, data, data), out_shardings=(rep, rep))

    key = ("eval", batched, graphdef, _loss_key(loss), classification, mesh)
    return _cached(key, build)


def _shardings(mesh: Mesh, batched: bool):
    rep = _parallel.replicated(mesh)
    if batched:
        return _parallel.runs_sharded(mesh), _parallel.run_batches_sharded(mesh), rep
    return rep, _parallel.batch_sharded(mesh), rep
