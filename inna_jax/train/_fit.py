r"""``fit`` and ``fit_many``: train Flax NNX models with optax, one run or a group of runs.

One epoch is :math:`m = \lfloor n/b \rfloor` steps over the seeded batches of
:mod:`inna_jax.data` (:func:`~inna_jax.data.batch_indices`). After each epoch the loss on the
whole training set and the loss and accuracy (or RMSE) on the held-out split are computed with
the model in evaluation mode, and a row is added to the history (epoch 0 is before training).

Both functions check their arguments (:mod:`inna_jax.train._arguments`) and share one host
loop (:mod:`inna_jax.train._loop`). ``fit`` steps one state with a jitted step; ``fit_many``
steps R states, either stacked along a leading axis and advanced by one ``vmap``-ped program
(``strategy="vmap"``), or advanced one after another by the same single-run program
(``strategy="loop"``). The compiled programs are cached on a structural key
(:mod:`inna_jax.train._programs`), so later calls with the same model structure, optimizer
family, batch shape and mesh compile nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from inna_jax.train import _arguments, _checks, _loop
from inna_jax.train._result import FitResult as FitResult
from inna_jax.train._spec import OptimizerSpec
from inna_jax.train._stopping import cancel_on as cancel_on


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
    settings = _arguments.settings(locals(), optimizer=True)
    seeds = [_arguments.check_seed(seed, "seed")]
    return _loop.train(
        [model], [optimizer], data, group=False, seeds=seeds, strategy="loop", settings=settings
    )[0]


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
    settings = _arguments.settings(locals())
    models = _arguments.group_models(models, strategy)
    seed_list = _arguments.group_seeds(seeds, len(models))
    run_optimizers = _arguments.group_optimizers(optimizers, len(models))
    return _loop.train(
        models, run_optimizers, data, group=True, seeds=seed_list, strategy=strategy,
        settings=settings,
    )  # fmt: skip
