"""Datasets that ship inside scikit-learn: no network needed."""

from __future__ import annotations

import numpy as np
import sklearn.datasets

from inna_jax.data._arrays import ArrayDataset, split_and_standardize


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits: 1,797 images, 64 features, 10 classes.

    Features are standardized with train-set statistics; the split is seeded.

    Example:
        >>> from inna_jax.data import load_digits
        >>> data = load_digits()
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        ((1348, 64), (449, 64), 10)
    """
    bunch = sklearn.datasets.load_digits()
    x, y = bunch.data, bunch.target.astype(np.int32)
    x_tr, y_tr, x_te, y_te = split_and_standardize(x, y, test_fraction=test_fraction, seed=seed)
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=10, name="digits")


def load_diabetes(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's diabetes regression set: 442 patients, 10 features, real target.

    Features and target are standardized with train-set statistics, so a test RMSE of
    1.0 is the constant predictor's.

    Example:
        >>> from inna_jax.data import load_diabetes
        >>> data = load_diabetes()
        >>> data.x_train.shape, data.task
        ((332, 10), 'regression')
    """
    bunch = sklearn.datasets.load_diabetes()
    x, y = bunch.data, bunch.target.astype(np.float64)
    x_tr, y_tr, x_te, y_te = split_and_standardize(
        x, y, test_fraction=test_fraction, seed=seed, standardize_targets=True
    )
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=0, name="diabetes")
