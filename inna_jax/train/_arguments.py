"""The arguments of :func:`~inna_jax.train.fit` and :func:`~inna_jax.train.fit_many`, checked.

Each check raises one line naming the argument, its value and what is allowed. What passes
becomes a :class:`Settings` (the options the training loop reads) and, for a group, the
per-run lists of models, seeds and optimizers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optax
from jax.sharding import Mesh

from inna_jax.train import _checks, _losses
from inna_jax.train._spec import OptimizerSpec

ON_NONFINITE = ("stop", "raise", "record")
STRATEGIES = ("auto", "vmap", "loop")
Optimizer = OptimizerSpec | optax.GradientTransformation


@dataclasses.dataclass(frozen=True)
class Settings:
    """The options of one ``fit``/``fit_many`` call that the loop reads (see ``fit``)."""

    epochs: int
    batch_size: int
    loss: Any
    out_dir: str | Path | None
    checkpoint_dir: str | Path | None
    checkpoint_every: int | None
    mesh: Mesh | None
    quiet: bool
    desc: str | None
    eval_batch_size: int | None
    on_nonfinite: str
    max_to_keep: int
    log_every: int
    eval_every: int | None
    eval_test: bool
    compiler_options: dict[str, Any] | None


def settings(arguments: Mapping[str, Any], *, optimizer: bool = False) -> Settings:
    """The checked :class:`Settings` among a call's ``arguments`` (its ``locals()``).

    With ``optimizer``, ``arguments["optimizer"]`` is checked too, after the common options
    and before the compiler options (the order of ``fit``'s checks).
    """
    fields = {f.name: arguments[f.name] for f in dataclasses.fields(Settings)}
    _check_common(**{k: fields[k] for k in _COMMON})
    if optimizer:
        check_optimizer(arguments["optimizer"], "optimizer")
    fields["compiler_options"] = _check_compiler_options(fields["compiler_options"])
    return Settings(**fields)


_COMMON = ("epochs", "on_nonfinite", "checkpoint_every", "log_every", "eval_every", "loss")


def _check_common(epochs, on_nonfinite, checkpoint_every, log_every, eval_every, loss):
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got epochs={epochs!r}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}")
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


def check_seed(seed: Any, name: str) -> int:
    """``seed`` as an int, or one line naming ``name``."""
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


def check_optimizer(optimizer: Any, name: str) -> None:
    """Refuses anything but an :class:`OptimizerSpec` or an optax transformation."""
    if isinstance(optimizer, OptimizerSpec):
        return
    init, update = getattr(optimizer, "init", None), getattr(optimizer, "update", None)
    if not (callable(init) and callable(update)):
        raise TypeError(
            f"{name} must be an optax GradientTransformation or an OptimizerSpec, got "
            f"{type(optimizer).__name__}"
        )


def group_models(models: Sequence[Any], strategy: str) -> list[Any]:
    """The models of a group, each a Flax NNX module, and a known ``strategy``."""
    models = list(models)
    if not models:
        raise ValueError("models must be a non-empty sequence of Flax NNX modules, got none")
    for i, m in enumerate(models):
        _checks.check_model(m, f"models[{i}]")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got strategy={strategy!r}")
    return models


def group_seeds(seeds: int | Sequence[int], count: int) -> list[int]:
    """One batch-order seed per run: ``seeds`` repeated if one int, else checked."""
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be an integer or a sequence of integers, got seeds={seeds!r}")
    seed_list = [seeds] * count if isinstance(seeds, int | np.integer) else list(seeds)
    run_seeds = [check_seed(s, f"seeds[{i}]") for i, s in enumerate(seed_list)]
    if len(run_seeds) != count:
        raise ValueError(f"seeds must hold one seed per model ({count}), got {len(run_seeds)}")
    return run_seeds


def group_optimizers(optimizers: Any, count: int) -> list[Any]:
    """One optimizer per run: one for all, or R specs of one family."""
    single = isinstance(optimizers, OptimizerSpec | str) or callable(
        getattr(optimizers, "update", None)
    )
    if single or not isinstance(optimizers, Sequence):
        check_optimizer(optimizers, "optimizers")
        return [optimizers] * count
    run_optimizers = list(optimizers)
    if len(run_optimizers) != count:
        raise ValueError(
            f"optimizers must be one optimizer or one per model ({count}), got "
            f"{len(run_optimizers)}"
        )
    for i, o in enumerate(run_optimizers):
        check_optimizer(o, f"optimizers[{i}]")
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
    return run_optimizers
