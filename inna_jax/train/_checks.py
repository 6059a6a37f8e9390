r"""What ``fit`` and ``fit_many`` check before their first step, each check one small function.

- :func:`check_model`: the model is a Flax NNX module (the loop trains nothing else);
- :func:`output_shape`: the model's outputs for one training batch, from one
  ``jax.eval_shape`` (a trace, no compilation);
- :func:`resolve_loss`: the default loss, read from the data set's task
  (:class:`~inna_jax.data.ArrayDataset`: ``num_classes > 0`` is a classification set);
- :func:`check_targets`: the targets fit the loss and the model's outputs;
- :func:`warn_if_optimizer_loss_differs`: an EGN or SGN optimizer minimises the loss
  that ``fit`` reports.

Every refusal is one line naming the argument, what it got and what is allowed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from inna_jax.train._spec import OptimizerSpec

# --- the model ------------------------------------------------------------------------------


def check_model(model: Any, name: str = "model") -> None:
    """Refuses anything but a Flax NNX module, naming its type and the way out.

    Raises:
        TypeError: for an Equinox module, a Flax Linen module, a plain function, ...
    """
    if isinstance(model, nnx.Module):
        return
    kind = type(model)
    raise TypeError(
        f"{name} must be a flax.nnx.Module, got {kind.__module__}.{kind.__qualname__}: fit and "
        "fit_many train Flax NNX models only; to use inna_jax's optimizers with an Equinox "
        "module, a Flax Linen module or a plain function, call them in your own optax loop "
        "(see the documentation's guides)"
    )


def output_shape(graphdef: Any, params: Any, rest: Any, batch: jax.ShapeDtypeStruct) -> Any:
    """The model's outputs for a batch of this shape: one ``jax.eval_shape``, nothing compiled."""

    def forward(p, r, x):
        return nnx.merge(graphdef, p, r)(x)

    return jax.eval_shape(forward, params, rest, batch)


# --- the loss -------------------------------------------------------------------------------


def describe(loss: str | Callable) -> str:
    """``'mse'`` for a name, ``huber`` for a function named so."""
    if isinstance(loss, str):
        return repr(loss)
    return getattr(loss, "__name__", None) or repr(loss)


def task_of(data: Any) -> str:
    """``"classification"`` or ``"regression"``, as the data set declares it."""
    task = getattr(data, "task", None)
    if task in ("classification", "regression"):
        return task
    return "classification" if int(data.num_classes) > 0 else "regression"


def _width(outputs: Any) -> tuple[int, ...] | None:
    """The per-example shape of the outputs, ``None`` if they are not one array."""
    shape = getattr(outputs, "shape", None)
    return None if shape is None or len(shape) == 0 else tuple(shape[1:])


def resolve_loss(loss: str | Callable | None, data: Any, outputs: Any) -> tuple[Any, str]:
    """The loss to train with and where it came from (``""`` if given, else the reason).

    ``None`` picks from the data set: the MSE for a regression set, the cross-entropy for a
    classification set, or the binary cross-entropy for two classes and one output per
    example.
    """
    if loss is not None:
        return loss, ""
    if task_of(data) == "regression":
        return "mse", "fit's default for a regression set, data.num_classes=0"
    classes = int(data.num_classes)
    if classes == 2 and _width(outputs) in ((), (1,)):
        return (
            "binary_cross_entropy",
            "fit's default for two classes and one output per example",
        )
    return "cross_entropy", f"fit's default for a classification set, data.num_classes={classes}"


# --- the targets ----------------------------------------------------------------------------


def _span(y: np.ndarray) -> str:
    return f"[{y.min()}, {y.max()}]" if y.size else "[]"


def _is_label_dtype(dtype: np.dtype) -> bool:
    return dtype == np.bool_ or np.issubdtype(dtype, np.integer)


def _check_labels(y: np.ndarray, split: str, width: tuple[int, ...] | None, why: str) -> None:
    """Cross-entropy: logits ``(b, C)``, ``C >= 2``, integer labels ``(n,)`` in ``[0, C)``."""
    if width is None or len(width) != 1 or width[0] < 2:
        raise ValueError(
            f"loss='cross_entropy'{why} needs a model with C >= 2 outputs (logits of shape "
            f"(batch, C)), got outputs of per-example shape {width}; for one output per "
            "example pass loss='mse' (regression) or loss='binary_cross_entropy' (two classes)"
        )
    classes = width[0]
    if not _is_label_dtype(y.dtype):
        raise ValueError(
            f"loss='cross_entropy'{why} needs integer class labels in [0, {classes}) ({classes}: "
            f"the model's outputs), got data.{split} of dtype {y.dtype} with values in "
            f"{_span(y)}; for float targets pass loss='mse' (and a regression set, "
            "num_classes=0), or give the labels as integers"
        )
    if y.ndim != 1:
        raise ValueError(
            f"loss='cross_entropy'{why} needs one integer label per example, of shape (n,), "
            f"got data.{split} of shape {y.shape}; for several 0/1 labels per example pass "
            "loss='binary_cross_entropy'"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(
            f"loss='cross_entropy'{why} needs class labels in [0, {classes}) ({classes}: the "
            f"model's outputs), got data.{split} with labels in {_span(y)}; give the model as "
            "many outputs as there are classes"
        )


def _check_shaped_like_outputs(
    loss: str, y: np.ndarray, split: str, width: tuple[int, ...] | None, why: str
) -> None:
    """MSE and binary cross-entropy: one target per output (``(n,)`` for outputs ``(b, 1)``)."""
    if width is None:
        raise ValueError(
            f"loss={loss!r}{why} needs the model to return one array of outputs, got outputs "
            "that are not one array"
        )
    per_example = tuple(y.shape[1:])
    if per_example != width and not (width == (1,) and per_example == ()):
        expected = "(n,) or (n, 1)" if width == (1,) else str((len(y), *width))
        hint = (
            "; for class labels pass loss='cross_entropy'"
            if loss == "mse" and _is_label_dtype(y.dtype)
            else ""
        )
        raise ValueError(
            f"loss={loss!r}{why} needs targets shaped like the model's outputs, {expected} "
            f"here, got data.{split} of shape {y.shape}{hint}"
        )


def _check_floats(y: np.ndarray, split: str, why: str) -> None:
    """MSE: finite float targets."""
    if not np.issubdtype(y.dtype, np.floating):
        raise ValueError(
            f"loss='mse'{why} needs float targets, got data.{split} of dtype {y.dtype} with "
            f"values in {_span(y)}; for class labels pass loss='cross_entropy' (and a "
            "classification set, num_classes=C), for integer-valued regression targets give "
            "them as floats"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"loss='mse'{why} needs finite targets, got data.{split} holding NaN or inf"
        )


def _check_probabilities(y: np.ndarray, split: str, why: str) -> None:
    """Binary cross-entropy: targets in [0, 1]."""
    if not (_is_label_dtype(y.dtype) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(
            f"loss='binary_cross_entropy'{why} needs targets in [0, 1], got data.{split} of "
            f"dtype {y.dtype}"
        )
    if y.size and not (np.all(y >= 0) and np.all(y <= 1)):
        raise ValueError(
            f"loss='binary_cross_entropy'{why} needs targets in [0, 1] (0/1 labels or "
            f"probabilities), got data.{split} with values in {_span(y)}"
        )


def check_targets(loss: str | Callable, data: Any, outputs: Any, why: str = "") -> None:
    r"""Checks the targets of both splits against ``loss`` and the model's ``outputs``.

    - ``"cross_entropy"``: integer labels of shape ``(n,)`` in :math:`[0, C)`, with
      :math:`C \ge 2` the width of the outputs ``(batch, C)``;
    - ``"mse"``: finite float targets shaped like the outputs (``(n,)`` also for ``(batch, 1)``);
    - ``"binary_cross_entropy"``: targets in :math:`[0, 1]` shaped like the outputs.

    A callable loss is not checked. ``why`` says where a default loss came from.

    Raises:
        ValueError: one line naming the loss, the split, what it holds and what is needed.
    """
    for x_name, y_name in (("x_train", "y_train"), ("x_test", "y_test")):
        n_x, n_y = len(getattr(data, x_name)), len(getattr(data, y_name))
        if n_x != n_y:
            raise ValueError(
                f"data.{y_name} must hold one target per example of data.{x_name} ({n_x}), "
                f"got {n_y}"
            )
    if not isinstance(loss, str):
        return
    why = f" ({why})" if why else ""
    width = _width(outputs)
    for split in ("y_train", "y_test"):
        y = np.asarray(getattr(data, split))
        if loss == "cross_entropy":
            _check_labels(y, split, width, why)
            continue
        _check_shaped_like_outputs(loss, y, split, width, why)
        if loss == "mse":
            _check_floats(y, split, why)
        else:
            _check_probabilities(y, split, why)


# --- the optimizer's own loss ---------------------------------------------------------------


def gauss_newton_loss(optimizer: Any) -> tuple[str, str] | None:
    """``(name, loss)`` of an EGN or SGN optimizer (``inna_jax.egn``/``sgn``), else ``None``.

    For an :class:`~inna_jax.train.OptimizerSpec` the factory is called once with its
    arguments (EGN and SGN take a static ``predict_fn``; specs without one are not Gauss-Newton
    and are not built). The loss is the one its update says it minimises (the ``gauss_newton``
    marker set in ``inna_jax/gauss_newton/_step.py``); a transformation wrapped further
    (``optax.chain``, ``optax.inject_hyperparams``) is not recognised.
    """
    tx = optimizer
    if isinstance(optimizer, OptimizerSpec):
        if "predict_fn" not in optimizer.static:
            return None
        try:
            tx = optimizer.factory(**optimizer.static, **optimizer.hyperparams)
        except (TypeError, ValueError):  # the real build reports it
            return None
    # the marker that inna_jax/gauss_newton/_step.py sets on the update of every EGN/SGN
    marker = getattr(getattr(tx, "update", None), "gauss_newton", None)
    if isinstance(marker, tuple) and len(marker) == 2 and all(isinstance(m, str) for m in marker):
        return marker
    return None


def warn_if_optimizer_loss_differs(
    optimizer: Any, loss: str | Callable, why: str = "", *, stacklevel: int = 2
) -> None:
    """One ``UserWarning`` when EGN/SGN minimise another loss than the one ``fit`` reports.

    ``fit`` hands EGN and SGN the raw batch (``inputs=x``, ``targets=y``); they compute their
    own loss and ignore ``fit``'s gradient, so ``fit``'s loss is then only what is reported.
    """
    found = gauss_newton_loss(optimizer)
    if found is None:
        return
    name, own = found
    if isinstance(loss, str) and loss == own:
        return
    why = f" ({why})" if why else ""
    warnings.warn(
        f"the optimizer {name} minimises its own loss {own!r} ({name}(..., loss={own!r})), but "
        f"fit reports loss={describe(loss)}{why}: train_loss and test_loss are then not what "
        f"{name} minimises; give fit and {name} the same loss",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
