r"""The pieces every protocol shares: groups of runs and the step-size grid search.

The papers' protocols are many small runs of one model: a grid of initial steps
:math:`\gamma_0` per method, then several seeds with the chosen one. Here each such set is one
group of :func:`inna_jax.train.fit_many` (one compiled program for the method, whatever its
:math:`\gamma_0` and seeds), and :func:`grid_search` picks :math:`\gamma_0` by a score of the
finished runs.

Independent groups (one per method, say) can also train at the same time:
:func:`run_concurrently` hands them to a pool of threads. On a CPU, XLA runs one small step
on little more than one core, so two groups in flight on two cores finish sooner than one
after the other; each group's numbers do not depend on what runs beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")

#: XLA options of the protocols' programs on a CPU (see :func:`fast_compile_options`).
_CPU_FAST_COMPILE = {"xla_backend_optimization_level": 1}


def fast_compile_options(mesh: Any = None) -> dict[str, Any] | None:
    """XLA options that compile the protocols' small programs faster: LLVM ``-O1`` on a CPU.

    A protocol compiles a few programs (each seed's weights, one training step per optimizer
    family) and runs them for seconds, so on a CPU the compiler is a large part of a first
    run. XLA:CPU's LLVM ``-O2`` pipeline (its default) mostly vectorises elementwise loops,
    which matter little next to the convolutions and matrix products of these models (those
    call Eigen, compiled in advance). At ``-O1`` (option ``xla_backend_optimization_level``)
    the small CNN's training step compiles about a quarter faster and runs as fast, and the
    default ``inna-jax figure2`` writes the same files, bit for bit, as at ``-O2``
    (``benchmarks/protocols.py``; tests/test_protocol.py compares the initial weights). The
    bits are not always the same: on the NiN of CIFAR-100 the losses after three steps differ
    by up to 9e-6 relative (float32 rounding, amplified by training), and ``inna-jax egn``
    keeps ``-O2`` because its numbers change. Returns ``None`` (XLA's defaults) off a CPU.
    """
    from inna_jax.train._parallel import platform

    return dict(_CPU_FAST_COMPILE) if platform(mesh) == "cpu" else None


def cached_models(make_model: Callable[[Any], Any]) -> Callable[[int], Any]:
    """``make_model`` that builds each seed's weights once and hands out fresh modules.

    Each call ``models(seed)`` returns a new module (trained in place independently) whose
    initial arrays are those built the first time for that seed. The weights come from one
    jitted program, traced once for every seed: ``make_model`` receives the PRNG key
    ``jax.random.key(seed)`` and must hand it to :class:`flax.nnx.Rngs` (as it would the
    int), which gives the same arrays, bit for bit, as ``make_model(seed)`` run eagerly.
    Eagerly, initialising a model dispatches, and on a first run compiles, one small program
    per random op and shape (about 1 s for the small CNN, against 0.1 s for the whole
    jitted initialisation once its program is in the compilation cache). The program is
    compiled with :func:`fast_compile_options`: on a CPU 0.3 s instead of 0.9 s for the
    small CNN, and the same bits as the eager weights.

    Example:
        >>> from inna_jax.reproduce.protocol import cached_models
        >>> from inna_jax.reproduce.registry import load_dataset, make_model
        >>> data = load_dataset("digits", num_train=64)
        >>> models = cached_models(lambda key: make_model("mlp", data, key))
        >>> a, b = models(0), models(0)
        >>> a is b, bool((a.layers[0].kernel[...] == b.layers[0].kernel[...]).all())
        (False, True)
    """
    import jax
    from flax import nnx

    built: dict[int, Any] = {}
    graphdefs: list[Any] = []
    lock = threading.Lock()  # groups trained in threads ask for their seeds at once

    # XLA:CPU's LLVM -O2 pipeline triples the compilation of the random initialisers (threefry)
    # and changes none of their bits (tests/test_protocol.py compares them with the eager
    # weights); -O1 skips it.
    @functools.partial(jax.jit, compiler_options=fast_compile_options())
    def init(key: jax.Array) -> Any:
        graphdef, state = nnx.split(make_model(key))
        graphdefs.append(graphdef)  # the structure, the same for every key (traced once)
        return state

    def make(seed: int) -> Any:
        seed = int(seed)
        with lock:
            if seed not in built:
                state = init(jax.random.key(seed))
                built[seed] = (graphdefs[-1], state)
            graphdef, state = built[seed]
        return nnx.merge(graphdef, state, copy=True)  # new variables, the same initial arrays

    return make


def train_group(
    data: Any,
    make_model: Callable[[int], Any],
    specs: Sequence[Any],
    seeds: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    loss: str,
    mesh: Any = None,
    quiet: bool = True,
    desc: str | None = None,
    eval_every: int | None = 1,
    eval_test: bool = True,
    strategy: str = "auto",
    compiler_options: dict[str, Any] | None = None,
) -> list:
    """Trains run ``r`` with ``specs[r]`` from the weights and batch order of ``seeds[r]``.

    One :func:`~inna_jax.train.fit_many` call (``strategy`` and ``compiler_options`` as
    there; a protocol passes :func:`fast_compile_options`); a run that diverges
    is recorded (its :attr:`~inna_jax.train.FitResult.stopped`), not warned about. Safe to
    call from several threads at once (:func:`run_concurrently`).

    Returns:
        One :class:`~inna_jax.train.FitResult` per run.
    """
    from inna_jax.train import fit_many

    models = [make_model(int(s)) for s in seeds]
    return fit_many(
        models,
        list(specs),
        data,
        seeds=[int(s) for s in seeds],
        epochs=epochs,
        batch_size=batch_size,
        loss=loss,
        mesh=mesh,
        quiet=quiet,
        desc=desc,
        eval_every=eval_every,
        eval_test=eval_test,
        strategy=strategy,
        compiler_options=compiler_options,
        on_nonfinite="record",  # divergence is recorded, not warned about
    )


@dataclasses.dataclass
class GridSearch:
    """The outcome of :func:`grid_search`.

    Attributes:
        best: the chosen value.
        rows: one dict per candidate: ``value``, ``score``, ``diverged`` (runs stopped by a
            non-finite loss), ``chosen``.
        results: each candidate's runs (one :class:`~inna_jax.train.FitResult` per seed),
            by value.
    """

    best: float
    rows: list[dict]
    results: dict[float, list]


def grid_search(
    data: Any,
    make_model: Callable[[int], Any],
    spec: Any,
    values: Sequence[float],
    *,
    score: Callable[[list], float],
    higher_is_better: bool = False,
    name: str = "learning_rate",
    seeds: Sequence[int] = (0,),
    **train: Any,
) -> GridSearch:
    r"""Trains every ``value`` of the grid with every seed as one group; picks the best score.

    Candidate :math:`v` is ``spec.replace(name=v)``; its runs (one per seed) are scored by
    ``score(runs)`` (for example the final training loss, or the mean final test metric).
    A score that is not a finite number ranks last; ties go to the smaller value.

    Args:
        data: the data set.
        make_model: ``make_model(seed)`` returns a fresh model initialised from ``seed``.
        spec: an :class:`~inna_jax.train.OptimizerSpec`.
        values: the candidate values of the hyperparameter ``name``.
        score: maps one candidate's runs to a number.
        higher_is_better: maximise the score (accuracy) instead of minimising it (loss).
        name: the hyperparameter searched.
        seeds: the seeds of each candidate.
        **train: keyword arguments of :func:`train_group` (``epochs``, ``batch_size``,
            ``loss``, ``mesh``, ``eval_every``, ...).

    Returns:
        A :class:`GridSearch`.

    Example:
        >>> from inna_jax.reproduce.protocol import grid_search
        >>> from inna_jax.reproduce.registry import load_dataset, make_model, make_optimizer
        >>> data = load_dataset("digits", num_train=256)
        >>> found = grid_search(
        ...     data, lambda s: make_model("mlp", data, s), make_optimizer("sgd", 0.1),
        ...     [0.001, 0.1], score=lambda runs: runs[0].history[-1]["train_loss"],
        ...     epochs=1, batch_size=32, loss="cross_entropy", eval_every=None, eval_test=False)
        >>> found.best, [row["chosen"] for row in found.rows]
        (0.1, [False, True])
    """
    values = [float(v) for v in values]
    seeds = [int(s) for s in seeds]
    specs = [spec.replace(**{name: v}) for v in values for _ in seeds]
    runs = train_group(data, make_model, specs, [s for _ in values for s in seeds], **train)
    results = {v: runs[i * len(seeds) : (i + 1) * len(seeds)] for i, v in enumerate(values)}
    rows = []
    for v, group in results.items():
        s = float(score(group))
        rows.append(
            {
                "value": v,
                "score": s if math.isfinite(s) else math.inf,
                "diverged": sum(r.diverged for r in group),
            }
        )

    def rank(i: int) -> tuple[float, float]:
        s = rows[i]["score"]
        if not math.isfinite(s):
            return (math.inf, values[i])
        return (-s if higher_is_better else s, values[i])

    best = values[min(range(len(values)), key=rank)]
    for row in rows:
        row["chosen"] = row["value"] == best
    return GridSearch(best=best, rows=rows, results=results)


def default_workers(mesh: Any = None) -> int:
    """How many groups :func:`run_concurrently` trains at once when not told.

    One more than the CPU's cores when JAX computes on a CPU in one process without a mesh:
    XLA:CPU runs a small step on about one core, and a group stops feeding its core whenever
    its thread compiles, traces or waits for an evaluation to come back, which the extra
    group fills (on 2 cores the default ``figure2``'s first run takes 0.3 s less;
    docs/performance.md). Otherwise 1: an accelerator already gets a whole group in one program, and
    on a mesh or several hosts every process must launch its programs in the same order.
    """
    import jax

    if mesh is not None or jax.process_count() > 1 or jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1  # os.cpu_count() may not know (None)


def run_concurrently(
    tasks: Sequence[Callable[[], T]], *, workers: int | None = None, mesh: Any = None
) -> list[T]:
    """Calls every task, up to ``workers`` at a time in threads; returns results in order.

    Each task is typically one :func:`train_group` or :func:`grid_search` call; they share
    the compiled programs (one compilation per program, whichever thread comes first). A
    task's results are those it would give alone: the groups share no state. With
    ``workers=1`` (or one task) the tasks run one after the other in this thread. The first
    exception raised by a task is raised here as soon as it happens, and so is Ctrl-C: the tasks
    not yet started are dropped, and the :func:`train_group` calls running in the other
    threads stop at their next step (``fit_many`` checks between steps).

    Args:
        tasks: functions of no argument.
        workers: the most tasks running at once (``None``: :func:`default_workers` of
            ``mesh``).
        mesh: the mesh the tasks train on, if any (only for the default of ``workers``).

    Example:
        >>> from inna_jax.reproduce.protocol import run_concurrently
        >>> run_concurrently([lambda: 1, lambda: 2, lambda: 3], workers=2)
        [1, 2, 3]
    """
    from inna_jax.train._fit import cancel_on

    tasks = list(tasks)
    workers = default_workers(mesh) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got workers={workers!r}")
    if workers == 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    stop = threading.Event()

    def call(task: Callable[[], T]) -> T:
        with cancel_on(stop):
            return task()

    pool = ThreadPoolExecutor(max_workers=min(workers, len(tasks)))
    try:
        futures = [pool.submit(call, task) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                future.result()  # raises the task's error, with its traceback
        return [future.result() for future in futures]
    except BaseException:  # an error or Ctrl-C: the running groups stop at their next step
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
