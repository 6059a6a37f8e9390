"""The in-memory dataset type shared by every reader."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class _Arrays(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str


class ArrayDataset(_Arrays):
    r"""A supervised dataset held in NumPy arrays, split into train and test.

    ``num_classes`` is how a data set says its task, and :func:`~inna_jax.train.fit` reads
    it: a classification set (``num_classes`` :math:`C \ge 1`, integer labels in
    :math:`[0, C)`) trains by default with the cross-entropy (the binary cross-entropy for
    :math:`C = 2` and a model with one output) and reports the test accuracy; a regression
    set (``num_classes=0``, float targets) trains with the MSE and reports the test RMSE.
    Every loader of :mod:`inna_jax.data` gives it. Left out (``None``), it is read from the
    targets: integer or boolean targets are class labels, with :math:`C` the largest label
    of either split plus one; any other targets (floats) make a regression set.

    Attributes:
        x_train: inputs, shape ``(n_train, ...)``.
        y_train: targets: int class labels of shape ``(n_train,)`` for classification,
            floats of shape ``(n_train,)`` (or ``(n_train, k)``) for regression.
        x_test: test inputs.
        y_test: test targets.
        num_classes: number of classes :math:`C`, or 0 for regression.
        name: a short name for tables and plots (default ``"data"``).

    Raises:
        ValueError: for a ``num_classes`` that is not an integer >= 0 or ``None``.

    Example:
        >>> import numpy as np
        >>> from inna_jax.data import ArrayDataset
        >>> x = np.zeros((4, 3), np.float32)
        >>> labels = ArrayDataset(x, np.array([0, 2, 1, 2]), x, np.array([1, 0, 0, 2]))
        >>> labels.num_classes, labels.task
        (3, 'classification')
        >>> values = ArrayDataset(x, np.ones(4, np.float32), x, np.ones(4, np.float32))
        >>> values.num_classes, values.task
        (0, 'regression')
        >>> ArrayDataset(x, np.array([0, 1, 1, 0]), x, np.array([1, 0, 0, 1]), num_classes=0).task
        'regression'
    """

    __slots__ = ()

    def __new__(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        num_classes: int | None = None,
        name: str = "data",
    ) -> ArrayDataset:
        if num_classes is None:
            num_classes = _classes_of(y_train, y_test)
        elif (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int | np.integer)
            or num_classes < 0
        ):
            raise ValueError(
                "num_classes must be an integer >= 0 (0: a regression set) or None (read from "
                f"the targets), got num_classes={num_classes!r}"
            )
        return super().__new__(cls, x_train, y_train, x_test, y_test, int(num_classes), name)

    @property
    def task(self) -> str:
        """``"classification"`` (``num_classes > 0``) or ``"regression"``."""
        return "classification" if self.num_classes > 0 else "regression"


def _classes_of(y_train: np.ndarray, y_test: np.ndarray) -> int:
    """:math:`C` = the largest label plus one for integer or boolean targets, else 0."""
    ys = [np.asarray(y) for y in (y_train, y_test)]
    if not all(y.dtype == np.bool_ or np.issubdtype(y.dtype, np.integer) for y in ys):
        return 0
    largest = max((int(y.max()) for y in ys if y.size), default=0)
    return max(largest + 1, 1)


def split_and_standardize(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_fraction: float,
    seed: int,
    standardize_targets: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle-split, then standardizes features with train-set statistics.

    Features with zero variance on the train set are left centred, not divided.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got test_fraction={test_fraction!r}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = order[:n_test], order[n_test:]
    x_train, x_test = x[train].astype(np.float32), x[test].astype(np.float32)
    mean, std = x_train.mean(0), x_train.std(0)
    std = np.where(std > 0, std, 1.0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_train, y_test = y[train], y[test]
    if standardize_targets:
        y_mean, y_std = y_train.mean(), y_train.std()
        y_train = ((y_train - y_mean) / y_std).astype(np.float32)
        y_test = ((y_test - y_mean) / y_std).astype(np.float32)
    return x_train, y_train, x_test, y_test
