r"""The one host loop of :func:`~inna_jax.train.fit` (one run) and ``fit_many`` (a group).

One epoch is :math:`m = \lfloor n/b \rfloor` steps over the seeded batches of
:mod:`inna_jax.data` (:func:`~inna_jax.data.batch_indices`). The loop is made of named parts,
each in its own module:

- :mod:`~inna_jax.train._group`: the runs on the device (stacked and vmapped, or stepped in
  turn), their compiled programs and initial states, and their host-side state;
- :mod:`~inna_jax.train._resume`: the checkpoint to start from, and those written on the way;
- :mod:`~inna_jax.train._evaluation`: the rows added to the histories after an epoch;
- :mod:`~inna_jax.train._metrics`: ``metrics.json``/``metrics.csv``;
- :mod:`~inna_jax.train._stopping`: non-finite runs and cancellation;
- :mod:`~inna_jax.train._progress`: the progress bar.

The clock starts when the first step of this call has run: its compilation and the epoch-0
evaluation are not training time.
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import numpy as np
from flax import nnx

from inna_jax.data import batch_indices, steps_per_epoch
from inna_jax.train import _group, _parallel
from inna_jax.train._arguments import Settings
from inna_jax.train._evaluation import Evaluation
from inna_jax.train._metrics import MetricsFiles
from inna_jax.train._progress import Progress
from inna_jax.train._result import FitResult
from inna_jax.train._resume import Resume
from inna_jax.train._spec import OptimizerSpec
from inna_jax.train._stopping import Stopping, cancel_event

# train() is called by fit/fit_many: a warning at depth 1 here points at their caller with 3
_CALLER = 3


class _Loop:
    """The state of one call's loop; :func:`train` drives it."""

    def __init__(self, models, optimizers, data, *, group, seeds, strategy, settings: Settings):
        self.models, self.data, self.group, self.seeds = models, data, group, seeds
        self.settings = settings
        self.x_train, self.y_train = np.asarray(data.x_train), np.asarray(data.y_train)
        self.n = len(self.x_train)
        self.spe = steps_per_epoch(self.n, settings.batch_size)
        self.total = int(settings.epochs) * self.spe
        every = settings.checkpoint_every
        self.every = self.spe if every is None else int(every)
        specs = (
            cast(list[OptimizerSpec], optimizers)
            if isinstance(optimizers[0], OptimizerSpec)
            else None
        )
        built = _group.build(
            models, optimizers, data, self.x_train, group=group, strategy=strategy,
            specs=specs, settings=settings, stacklevel=_CALLER + 2,
        )  # fmt: skip
        self.runs, self.loss = built.runs, built.loss
        self.evaluation = Evaluation(
            data, settings, classification=built.classification, data_devices=built.data_devices
        )
        self.run_info = [
            {"run": r, "seed": seeds[r], "hyperparams": specs[r].hyperparams if specs else {}}
            for r in range(len(models))
        ]
        self.metrics = MetricsFiles(settings.out_dir, self.run_info, group)
        self.resume = Resume(
            settings, n=self.n, seeds=seeds, run_info=self.run_info, padded=self.runs.padded,
            group=group,
        )  # fmt: skip
        self.state = self.resume.restore(self.runs)
        self.stopping = Stopping(
            spe=self.spe, seeds=seeds, group=group, loss=self.loss,
            on_nonfinite=settings.on_nonfinite, resume=self.resume,
        )  # fmt: skip
        self.t0: float | None = None
        state = self.state
        if state.start == 0 and not any(state.histories) and self.evaluation.due(0):
            for hist, row in zip(state.histories, self.evaluation.rows(self.runs, 0, 0, 0.0),
                                 strict=True):  # fmt: skip
                hist.append(row)
            self.metrics.write(state.histories)

    def elapsed(self) -> float:
        """Training time so far: the resumed runs' and this call's since its first step."""
        t0 = self.t0
        return self.state.time_before + (0.0 if t0 is None else time.perf_counter() - t0)

    def finite_at_start(self, r: int) -> bool:
        """Whether run r's training loss was finite at its initial parameters (where a run
        stopped at its first step still is)."""
        rows = self.state.histories[r]
        if rows and rows[0]["epoch"] == 0:
            return math.isfinite(rows[0]["train_loss"])
        return math.isfinite(self.evaluation.train_loss(self.runs)[r])

    def batches(self):
        """``(k, xs, ys)`` for each step ``k`` from the start: the runs' seeded batches."""
        settings, n, spe = self.settings, self.n, self.spe
        orders: list[np.ndarray] = []
        order_epoch = -1
        for k in range(self.state.start, self.total):
            epoch, j = divmod(k, spe)
            if order_epoch != epoch:
                orders = [
                    batch_indices(n, settings.batch_size, seed=s, epoch=epoch) for s in self.seeds
                ]  # fmt: skip
                order_epoch = epoch
            if self.group:
                idx = np.stack([order[j] for order in orders])
                yield k, self.x_train[idx], self.y_train[idx]
            else:
                idx = orders[0][j]
                yield k, self.x_train[idx][None], self.y_train[idx][None]

    def steps(self, progress: Progress) -> None:
        """Steps until the end, a stop or a cancellation; checkpoints and evaluates on the way."""
        runs, state, spe, total = self.runs, self.state, self.spe, self.total
        cancel = cancel_event()
        for k, xs, ys in self.batches():
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt(f"training stopped at step {k} (cancelled)")
            runs.step(xs, ys)
            done = k + 1
            if progress.compiling:
                runs.block()
                self.t0 = time.perf_counter()
                progress.started(done)
            else:
                progress.bar.update(1)
            epoch_end = done % spe == 0
            checkpoint_now = self.resume.due(done, self.every)
            if not (epoch_end or checkpoint_now or done % self.settings.log_every == 0
                    or done == total):  # fmt: skip
                continue
            value, ok, bad = runs.status()
            if self.stopping.check(state, ok, bad, runs.skip, self.finite_at_start):
                return
            alive = state.alive()
            progress.show(k // spe + 1, value, alive, self.group)
            if epoch_end and self.evaluation.due(done // spe):
                rows = self.evaluation.rows(runs, done // spe, done, self.elapsed())
                for r in alive:
                    state.histories[r].append(rows[r])
                self.metrics.write(state.histories)
            if checkpoint_now:
                self.resume.save(done, runs, state, self.elapsed())
        # the loop ran to its end (some runs of a group may have stopped on the way)
        resume = self.resume
        if resume.ckpt is not None and resume.last_saved != total and total > state.start:
            resume.save(total, runs, state, self.elapsed())

    def results(self) -> list[FitResult]:
        """Each run's result; the models are updated in place with their final states."""
        finals = self.runs.final_states()
        results = []
        for r, (model, final) in enumerate(zip(self.models, finals, strict=True)):
            nnx.update(model, final.params, final.rest)
            results.append(
                FitResult(
                    history=self.state.histories[r],
                    model=model,
                    opt_state=final.opt_state,
                    steps=int(_parallel.host_scalar(final.step)),
                    stopped=self.state.stopped[r],
                    seed=int(self.seeds[r]),
                    hyperparams=self.run_info[r]["hyperparams"],
                )
            )
        return results


def train(
    models: list[nnx.Module],
    optimizers: list[Any],
    data: Any,
    *,
    group: bool,
    seeds: list[int],
    strategy: str,
    settings: Settings,
) -> list[FitResult]:
    """The host loop shared by :func:`fit` (one run) and :func:`fit_many` (a group)."""
    loop = _Loop(
        models, optimizers, data, group=group, seeds=seeds, strategy=strategy, settings=settings
    )
    desc = settings.desc
    if desc is None:
        desc = data.name if not group else f"{data.name}, {len(models)} runs"
    progress = Progress(
        total=loop.total, start=loop.state.start, desc=desc,
        disable=settings.quiet or not loop.metrics.is_main,
    )  # fmt: skip
    try:
        loop.steps(progress)
    finally:
        progress.close()
        loop.resume.close()
    loop.metrics.write(loop.state.histories)
    results = loop.results()
    loop.stopping.report(loop.state.stopped, stacklevel=_CALLER)
    return results
