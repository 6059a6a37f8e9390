"""The in-memory dataset type shared by every reader."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ArrayDataset(NamedTuple):
    """A supervised dataset held in NumPy arrays, split into train and test.

    Attributes:
        x_train: inputs, shape ``(n_train, ...)``.
        y_train: targets: int class labels of shape ``(n_train,)`` for classification,
            floats of shape ``(n_train,)`` for regression.
        x_test: test inputs.
        y_test: test targets.
        num_classes: number of classes, or 0 for regression.
        name: a short name for tables and plots.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "classification" if self.num_classes > 0 else "regression"


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
