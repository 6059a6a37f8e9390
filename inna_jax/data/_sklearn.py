"""Datasets that ship inside scikit-learn: no network needed."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from inna_jax._extras import require
from inna_jax.data._arrays import ArrayDataset, split_and_standardize


def _sklearn_datasets(part: str) -> Any:
    """``sklearn.datasets``, or one line naming the ``reproduce`` extra when it is missing."""
    try:
        import sklearn.datasets
    except ImportError:
        require("reproduce", part, only=("scikit-learn",))
        raise  # installed, but broken: scikit-learn's own error says why
    return sklearn.datasets


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits' pixels and labels, as ``sklearn.datasets.load_digits`` gives them.

    The file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, one image and its
    label per row) is read directly when it is where scikit-learn keeps it: importing
    scikit-learn takes most of a second, longer than the whole reduced Figure-2 protocol
    spends on anything but training. Otherwise scikit-learn's loader is used.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as f:
                table = np.loadtxt(f, delimiter=",")
            return table[:, :-1], table[:, -1].astype(int)
    datasets = _sklearn_datasets("inna_jax.data.load_digits")

    bunch = datasets.load_digits()
    return bunch.data, bunch.target


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits: 1,797 images, 64 features, 10 classes.

    Features are standardized with train-set statistics; the split is seeded. A
    classification set (``num_classes=10``, int32 labels): :func:`~inna_jax.train.fit`
    trains it with the cross-entropy by default and reports the test accuracy.

    Example:
        >>> from inna_jax.data import load_digits
        >>> data = load_digits()
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        ((1348, 64), (449, 64), 10)
    """
    x, y = _digits_arrays()
    y = y.astype(np.int32)
    x_tr, y_tr, x_te, y_te = split_and_standardize(x, y, test_fraction=test_fraction, seed=seed)
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=10, name="digits")


def load_diabetes(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's diabetes regression set: 442 patients, 10 features, real target.

    Features and target are standardized with train-set statistics, so a test RMSE of
    1.0 is the constant predictor's. A regression set (``num_classes=0``, float targets):
    :func:`~inna_jax.train.fit` trains it with the MSE by default and reports the test RMSE.

    Example:
        >>> from inna_jax.data import load_diabetes
        >>> data = load_diabetes()
        >>> data.x_train.shape, data.task
        ((332, 10), 'regression')
    """
    datasets = _sklearn_datasets("inna_jax.data.load_diabetes")

    bunch = datasets.load_diabetes()
    x, y = bunch.data, bunch.target.astype(np.float64)
    x_tr, y_tr, x_te, y_te = split_and_standardize(
        x, y, test_fraction=test_fraction, seed=seed, standardize_targets=True
    )
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=0, name="diabetes")


def load_california(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """California housing (20,640 districts, 8 features, median house value), if on disk.

    scikit-learn downloads this set on first use; this loader never does (the project needs
    no network): it reads scikit-learn's cache (``sklearn.datasets.get_data_home()``) and
    raises ``FileNotFoundError`` when the set is not there. Features and target are
    standardized with train-set statistics; the split is seeded. A regression set
    (``num_classes=0``, float targets): :func:`~inna_jax.train.fit` trains it with the MSE by
    default and reports the test RMSE.

    Raises:
        FileNotFoundError: when scikit-learn has no copy on disk; the message says how to
            get one.

    Example:
        >>> from inna_jax.data import load_california
        >>> try:
        ...     data = load_california()
        ... except FileNotFoundError:
        ...     data = None  # not downloaded on this machine
        >>> data is None or data.x_train.shape[1] == 8
        True
    """
    datasets = _sklearn_datasets("inna_jax.data.load_california")

    try:
        bunch = datasets.fetch_california_housing(download_if_missing=False)
    except OSError as err:
        raise FileNotFoundError(
            "California housing is not on disk (scikit-learn's data home "
            f"{datasets.get_data_home()!r}); fetch it once with "
            "python -c 'import sklearn.datasets as d; d.fetch_california_housing()'"
        ) from err
    x_tr, y_tr, x_te, y_te = split_and_standardize(
        bunch.data,
        bunch.target.astype(np.float64),
        test_fraction=test_fraction,
        seed=seed,
        standardize_targets=True,
    )
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=0, name="california")


def _bundled_classification(name: str, loader: str, num_classes: int, test_fraction: float,
                            seed: int) -> ArrayDataset:  # fmt: skip
    """A classification set bundled with scikit-learn (``sklearn.datasets.<loader>``), split
    with ``seed`` and standardized with train-set statistics."""
    datasets = _sklearn_datasets(f"inna_jax.data.{loader}")
    bunch = getattr(datasets, loader)()
    x_tr, y_tr, x_te, y_te = split_and_standardize(
        bunch.data, bunch.target.astype(np.int32), test_fraction=test_fraction, seed=seed
    )
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=num_classes, name=name)


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's Wisconsin breast-cancer set: 569 tumours, 30 features, 2 classes.

    The file ships inside scikit-learn (no download). Features are standardized with
    train-set statistics; the split is seeded. A classification set (``num_classes=2``, int32
    labels 0 = malignant, 1 = benign): :func:`~inna_jax.train.fit` trains it with the
    cross-entropy by default and reports the test accuracy.

    Example:
        >>> from inna_jax.data import load_breast_cancer
        >>> data = load_breast_cancer()
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        ((427, 30), (142, 30), 2)
    """
    return _bundled_classification("breast_cancer", "load_breast_cancer", 2, test_fraction, seed)


def load_wine(*, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
    """scikit-learn's wine recognition set: 178 wines, 13 chemical features, 3 cultivars.

    The file ships inside scikit-learn (no download). Features are standardized with
    train-set statistics; the split is seeded. A classification set (``num_classes=3``, int32
    labels): :func:`~inna_jax.train.fit` trains it with the cross-entropy by default and
    reports the test accuracy.

    Example:
        >>> from inna_jax.data import load_wine
        >>> data = load_wine()
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        ((134, 13), (44, 13), 3)
    """
    return _bundled_classification("wine", "load_wine", 3, test_fraction, seed)
