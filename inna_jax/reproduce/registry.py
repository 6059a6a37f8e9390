r"""One registry of the data sets, models and optimizers used by every command and protocol.

Adding an optimizer to ``inna-jax train``, ``figure2``, ``egn`` and ``demo`` is one entry of
:data:`OPTIMIZERS`: a factory taking ``learning_rate`` (the initial step :math:`\gamma_0`) and
numeric hyperparameters, their defaults, and its fixed arguments. The registry returns an
:class:`~inna_jax.train.OptimizerSpec`, so that every run of one factory (any
:math:`\gamma_0`, any hyperparameters) shares one compiled training step.

EGN and SGN (``egn``, ``egn_lm``, ``sgn``) take the model and the loss besides
(:func:`make_optimizer`): the model's structure gives their ``predict_fn``. Their
``regularizer`` :math:`\lambda` is a hyperparameter (EGN 1, SGN :math:`10^{-3}`) and their
Armijo line search a fixed argument (``line_search``, on by default: ``learning_rate`` then
caps the step that the search takes; off, it is the step).

Step sizes: for ``sgd`` and ``inna`` the hyperparameter ``decay_power`` :math:`q` gives
:math:`\gamma_k = \gamma_0 (k+1)^{-q}` (:func:`inna_jax.power_decay`; :math:`q = 0` is a
constant step); Adam, Adagrad and INNAprop use a constant rate and their own adaptivity
(INNAprop's defaults are those of :func:`inna_jax.innaprop`: the authors' vision setting
:math:`\alpha = 0.1`, :math:`\beta = 0.9`, decoupled weight decay 0.01).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry imports nothing heavy until it is used
    from inna_jax.data import ArrayDataset

# --- data sets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A data set of the registry.

    Attributes:
        name: the command-line name.
        description: one line for ``--help``.
        load: ``load(data_dir) -> ArrayDataset``.
        needs_data_dir: whether ``load`` needs a folder (CIFAR-100).
        default_model: the name in :data:`MODELS` used by ``--model auto``.
        load_sized: ``load_sized(num_samples) -> ArrayDataset`` for a generated set whose
            size can be chosen (mnist1d), else ``None``.
    """

    name: str
    description: str
    load: Callable[[str | Path | None], ArrayDataset]
    needs_data_dir: bool = False
    default_model: str = "mlp"
    load_sized: Callable[[int], ArrayDataset] | None = None


def _digits(_):
    from inna_jax.data import load_digits

    return load_digits()


def _diabetes(_):
    from inna_jax.data import load_diabetes

    return load_diabetes()


def _breast_cancer(_):
    from inna_jax.data import load_breast_cancer

    return load_breast_cancer()


def _wine(_):
    from inna_jax.data import load_wine

    return load_wine()


def _california(_):
    from inna_jax.data import load_california

    return load_california()


def _mnist1d(_):
    from inna_jax.data import load_mnist1d

    return load_mnist1d()


def _mnist1d_sized(num_samples):
    from inna_jax.data import load_mnist1d

    return load_mnist1d(num_samples=num_samples)


def _cifar100(data_dir):
    from inna_jax.data import load_cifar100

    return load_cifar100(data_dir)


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry("digits", "scikit-learn 8x8 digits, 10 classes", _digits, False, "cnn"),
    "diabetes": DatasetEntry("diabetes", "scikit-learn diabetes, regression", _diabetes),
    "breast_cancer": DatasetEntry(
        "breast_cancer", "scikit-learn breast cancer (Wisconsin), 2 classes", _breast_cancer
    ),
    "wine": DatasetEntry("wine", "scikit-learn wine recognition, 3 classes", _wine),
    "california": DatasetEntry(
        "california", "California housing, regression (only if already on disk)", _california
    ),
    "mnist1d": DatasetEntry(
        "mnist1d", "MNIST-1D signals, 10 classes", _mnist1d, False, "cnn", _mnist1d_sized
    ),
    "cifar100": DatasetEntry(
        "cifar100", "CIFAR-100 python archive, 100 classes (needs a folder)", _cifar100, True, "nin"
    ),
}


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    num_samples: int | None = None,
) -> ArrayDataset:
    """A data set of :data:`DATASETS`, optionally cut to its first examples.

    Args:
        name: a key of :data:`DATASETS`.
        data_dir: the folder of the files (CIFAR-100: the folder holding
            ``cifar-100-python/``).
        num_train: keep the first ``num_train`` training examples.
        num_test: keep the first ``num_test`` test examples.
        num_samples: generate this many examples (train and test together) instead of the
            loader's default; only for a generated set (mnist1d: a multiple of 10, at least
            20, 80 % of them for training).

    Raises:
        ValueError: for an unknown name, a missing ``data_dir``, a bad count, or
            ``num_samples`` for a set that is not generated.
        FileNotFoundError: when the files are not there (CIFAR-100, California housing).

    Example:
        >>> from inna_jax.reproduce.registry import load_dataset
        >>> load_dataset("digits", num_train=100).x_train.shape
        (100, 64)
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got dataset={name!r}")
    for arg, n in (("num_train", num_train), ("num_test", num_test)):
        if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
            raise ValueError(f"{arg} must be a positive integer or None, got {arg}={n!r}")
    entry = DATASETS[name]
    if num_samples is not None and entry.load_sized is None:
        sized = [n for n, e in DATASETS.items() if e.load_sized is not None]
        raise ValueError(
            f"num_samples applies only to the generated data sets ({', '.join(sized)}), "
            f"got num_samples={num_samples!r} with dataset={name!r}"
        )
    if entry.needs_data_dir and data_dir is None:
        raise ValueError(
            f"dataset={name!r} needs data_dir: the folder holding cifar-100-python/ "
            "(train, test, meta)"
        )
    if num_samples is not None and entry.load_sized is not None:
        data = entry.load_sized(num_samples)
    else:
        data = entry.load(data_dir)
    return data._replace(
        x_train=data.x_train[:num_train],
        y_train=data.y_train[:num_train],
        x_test=data.x_test[:num_test],
        y_test=data.y_test[:num_test],
    )


def loss_for(data: ArrayDataset) -> str:
    """The training loss of a data set: cross-entropy for classes, else the MSE."""
    return "cross_entropy" if data.num_classes > 0 else "mse"


# --- models ---------------------------------------------------------------------------------

#: The input shape that the small CNN gives each flat example, per data set.
CNN_SHAPES = {"digits": (8, 8, 1), "mnist1d": (40, 1)}
MODELS = ("mlp", "cnn", "nin")


def make_model(name: str, data: ArrayDataset, seed: Any, *, hidden: tuple[int, ...] = (64, 64)):
    """The model ``name`` for ``data``, initialised from ``seed`` (an int or a PRNG key).

    ``"mlp"``: an :class:`~inna_jax.models.MLP` with ``hidden`` layers; ``"cnn"``: the
    :class:`~inna_jax.models.SmallCNN` (digits and mnist1d); ``"nin"``: the
    :class:`~inna_jax.models.NiN` (images); ``"auto"``: the data set's default. One output
    for regression.

    Raises:
        ValueError: for an unknown name or a model that does not fit the data.

    Example:
        >>> from inna_jax.models import count_params
        >>> from inna_jax.reproduce.registry import load_dataset, make_model
        >>> count_params(make_model("auto", load_dataset("digits"), seed=0))
        9930
    """
    from flax import nnx

    from inna_jax.models import MLP, NiN, SmallCNN

    if name == "auto":
        name = DATASETS[data.name].default_model if data.name in DATASETS else "mlp"
    if name not in MODELS:
        raise ValueError(f"model must be one of {('auto', *MODELS)}, got model={name!r}")
    rngs = nnx.Rngs(seed)
    outputs = data.num_classes if data.num_classes > 0 else 1
    if name == "nin":
        if data.x_train.ndim != 4:
            raise ValueError(f"model='nin' takes images (cifar100), got dataset={data.name!r}")
        return NiN(outputs, in_channels=data.x_train.shape[-1], rngs=rngs)
    if name == "cnn":
        if data.name not in CNN_SHAPES:
            raise ValueError(
                f"model='cnn' takes {' or '.join(CNN_SHAPES)}, got dataset={data.name!r}"
            )
        return SmallCNN(CNN_SHAPES[data.name], outputs, rngs=rngs)
    return MLP(int(data.x_train[0].size), tuple(hidden), outputs, rngs=rngs)


_PREDICT_FNS: dict[Any, Callable] = {}


def predict_fn(model) -> Callable:
    """``predict_fn(params, x)`` of a model's structure (for EGN and SGN).

    One function object per structure (``GraphDef``), so that optimizers built for models of
    one structure are of one family and share their compiled step.
    """
    from flax import nnx

    graphdef, _ = nnx.split(model, nnx.Param)
    if graphdef not in _PREDICT_FNS:

        def predict(params, x):
            return nnx.merge(graphdef, params)(x)

        _PREDICT_FNS[graphdef] = predict
    return _PREDICT_FNS[graphdef]


# --- optimizers -----------------------------------------------------------------------------


def _sgd(learning_rate, decay_power):
    import optax

    import inna_jax

    return optax.sgd(inna_jax.power_decay(learning_rate, decay_power))


def _inna(learning_rate, alpha, beta, decay_power):
    import inna_jax

    return inna_jax.inna(inna_jax.power_decay(learning_rate, decay_power), alpha, beta)


def _innaprop(learning_rate, alpha, beta, sigma, eps, weight_decay):
    import inna_jax

    return inna_jax.innaprop(
        learning_rate, alpha, beta, sigma=sigma, eps=eps, weight_decay=weight_decay
    )


def _adam(learning_rate):
    import optax

    return optax.adam(learning_rate)


def _adagrad(learning_rate):
    import optax

    return optax.adagrad(learning_rate)


def _egn(
    learning_rate, regularizer, *, predict_fn, loss, adaptive_regularization, line_search=True
):
    import inna_jax

    return inna_jax.egn(
        predict_fn,
        loss,
        learning_rate=learning_rate,
        regularizer=regularizer,
        line_search=line_search,
        adaptive_regularization=adaptive_regularization,
    )


def _sgn(learning_rate, regularizer, *, predict_fn, loss, line_search=True):
    import inna_jax

    return inna_jax.sgn(
        predict_fn,
        loss,
        learning_rate=learning_rate,
        regularizer=regularizer,
        line_search=line_search,
    )


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer of the registry.

    Attributes:
        name: the command-line name.
        label: the name in tables and plots.
        factory: ``factory(learning_rate, **hyperparams, **static)`` returning an optax
            optimizer; module-level, so that it is one object (one compiled family).
        hyperparams: numeric hyperparameters besides ``learning_rate`` and their defaults;
            they travel as values (one compilation for every value).
        static: fixed arguments (part of the compiled program).
        needs_model: whether the factory takes ``predict_fn=`` and ``loss=`` (EGN, SGN).
    """

    name: str
    label: str
    factory: Callable[..., Any]
    hyperparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
    static: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    needs_model: bool = False


OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry("sgd", "SGD", _sgd, {"decay_power": 0.0}),
    "inna": OptimizerEntry("inna", "INNA", _inna, {"alpha": 0.5, "beta": 0.1, "decay_power": 0.0}),
    "innaprop": OptimizerEntry(
        "innaprop",
        "INNAprop",
        _innaprop,
        {"alpha": 0.1, "beta": 0.9, "sigma": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    ),
    "adam": OptimizerEntry("adam", "Adam", _adam),
    "adagrad": OptimizerEntry("adagrad", "Adagrad", _adagrad),
    "egn": OptimizerEntry(
        "egn",
        "EGN",
        _egn,
        {"regularizer": 1.0},
        {"adaptive_regularization": False, "line_search": True},
        True,
    ),
    "egn_lm": OptimizerEntry(
        "egn_lm",
        "EGN+LM",
        _egn,
        {"regularizer": 1.0},
        {"adaptive_regularization": True, "line_search": True},
        True,
    ),
    "sgn": OptimizerEntry("sgn", "SGN", _sgn, {"regularizer": 1e-3}, {"line_search": True}, True),
}


def make_optimizer(
    name: str,
    learning_rate: float,
    *,
    model: Any = None,
    loss: str | None = None,
    **options: Any,
):
    r"""The optimizer ``name`` of :data:`OPTIMIZERS` as an :class:`~inna_jax.train.OptimizerSpec`.

    Args:
        name: a key of :data:`OPTIMIZERS`.
        learning_rate: the initial step :math:`\gamma_0 > 0`.
        model: the model (EGN and SGN build ``predict_fn`` from its structure).
        loss: the loss name (EGN and SGN).
        **options: hyperparameters (numeric, e.g. ``alpha=0.5``, ``decay_power=0.5``) or
            fixed arguments of the entry, replacing its defaults.

    Raises:
        ValueError: for an unknown name or option, a bad ``learning_rate``, a missing
            ``model``/``loss`` for EGN and SGN, or a value that the optimizer itself refuses
            (e.g. INNAprop's ``learning_rate >= beta``).

    Example:
        >>> from inna_jax.reproduce.registry import make_optimizer
        >>> a = make_optimizer("inna", 0.1, alpha=0.5, beta=0.1, decay_power=0.5)
        >>> b = make_optimizer("inna", 1.0, alpha=0.1, beta=0.1, decay_power=0.5)
        >>> a.family == b.family  # one compiled step for both
        True
    """
    import math

    from inna_jax.train import OptimizerSpec

    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got optimizer={name!r}")
    entry = OPTIMIZERS[name]
    if not (
        isinstance(learning_rate, int | float)
        and not isinstance(learning_rate, bool)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(
            f"learning_rate must be a finite number > 0, got learning_rate={learning_rate!r}"
        )
    unknown = set(options) - set(entry.hyperparams) - set(entry.static)
    if unknown:
        allowed = sorted({*entry.hyperparams, *entry.static})
        raise ValueError(f"{name} takes the options {allowed}, got {sorted(unknown)}")
    hyper = {**entry.hyperparams, **{k: v for k, v in options.items() if k in entry.hyperparams}}
    static = {**entry.static, **{k: v for k, v in options.items() if k in entry.static}}
    if entry.needs_model:
        if model is None or loss is None:
            raise ValueError(f"optimizer {name!r} needs model= and loss=")
        static |= {"predict_fn": predict_fn(model), "loss": loss}
    # Build it once with the concrete values: the optimizer's own checks (alpha > 0, INNAprop's
    # learning_rate < beta, ...) refuse a bad value now, not as a traced value inside a run.
    entry.factory(learning_rate, **hyper, **static)
    return OptimizerSpec(
        entry.factory,
        static_args=tuple(k for k in static if k not in ("predict_fn", "loss")),
        learning_rate=float(learning_rate),
        **{k: float(v) for k, v in hyper.items()},
        **static,
    )
