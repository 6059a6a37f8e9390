"""The data sets that ship inside scikit-learn, read without network."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import sklearn.datasets

from inna_jax.data import _sklearn, load_digits


def test_digits_are_scikit_learns_whether_read_directly_or_through_scikit_learn(monkeypatch):
    bunch = sklearn.datasets.load_digits()
    x, y = _sklearn._digits_arrays()  # the shipped file, read directly
    np.testing.assert_array_equal(x, bunch.data)
    np.testing.assert_array_equal(y, bunch.target)
    assert x.dtype == bunch.data.dtype
    direct = load_digits()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no file: fallback
    x2, y2 = _sklearn._digits_arrays()
    np.testing.assert_array_equal(x2, bunch.data)
    np.testing.assert_array_equal(y2, bunch.target)
    fallback = load_digits()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        a, b = getattr(direct, name), getattr(fallback, name)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype, name


def test_loading_the_digits_does_not_import_scikit_learn():
    code = (
        "import sys; from inna_jax.data import load_digits; d = load_digits(); "
        "print(d.x_train.shape, 'sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "(1348, 64) False"


def test_every_loader_declares_its_task():
    from inna_jax.data import load_diabetes, load_mnist1d

    assert (load_digits().task, load_digits().num_classes) == ("classification", 10)
    assert (load_mnist1d(num_samples=200).task, load_diabetes().task) == (
        "classification",
        "regression",
    )
    diabetes = load_diabetes()
    assert diabetes.num_classes == 0 and np.issubdtype(diabetes.y_train.dtype, np.floating)


@pytest.mark.parametrize("name, classes", [("breast_cancer", 2), ("wine", 3)])
def test_the_bundled_classification_sets_are_scikit_learns_split_and_standardized(name, classes):
    import sklearn.datasets

    from inna_jax import data as inna_data

    data = getattr(inna_data, f"load_{name}")()
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    assert (data.name, data.task, data.num_classes) == (name, "classification", classes)
    assert len(data.x_train) + len(data.x_test) == len(bunch.data)
    assert data.y_train.dtype == np.int32
    # every label kept, in the same proportions as scikit-learn's file
    labels = np.concatenate([data.y_train, data.y_test])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(bunch.target))
    # standardized with train-set statistics: train features have mean 0 and deviation 1
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0), 1, atol=1e-5)
    # the rows are scikit-learn's, split by a seeded permutation (a quarter for the test set)
    order = np.random.default_rng(0).permutation(len(bunch.data))
    test, train = order[: len(data.x_test)], order[len(data.x_test) :]
    mean, std = bunch.data[train].mean(0), bunch.data[train].std(0)
    np.testing.assert_allclose(data.x_test * std + mean, bunch.data[test], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(data.y_test, bunch.target[test])


def test_array_dataset_reads_its_task_from_num_classes_or_else_the_targets():
    import pickle

    import pytest

    from inna_jax.data import ArrayDataset

    x = np.zeros((4, 2), np.float32)
    # integer labels: C = the largest label of either split plus one
    labels = ArrayDataset(x, np.array([0, 1, 1, 0]), x, np.array([0, 4, 1, 1]))
    assert (labels.num_classes, labels.task, labels.name) == (5, "classification", "data")
    flags = ArrayDataset(x, np.array([True, False, True, True]), x, np.array([False] * 4))
    assert (flags.num_classes, flags.task) == (2, "classification")
    values = ArrayDataset(x, np.linspace(0, 1, 4), x, np.linspace(1, 2, 4), name="toy")
    assert (values.num_classes, values.task, values.name) == (0, "regression", "toy")
    # declared, it wins over the targets: integer counts as a regression set
    counts = ArrayDataset(x, np.array([3, 1, 4, 1]), x, np.array([5, 9, 2, 6]), 0, "counts")
    assert (counts.num_classes, counts.task) == (0, "regression")
    assert ArrayDataset(x, values.y_train, x, values.y_test, num_classes=3).task == "classification"
    # a record: _replace keeps the declaration, pickling round-trips
    assert labels._replace(y_train=np.array([0, 0, 0, 0])).num_classes == 5
    again = pickle.loads(pickle.dumps(counts))
    assert type(again) is ArrayDataset and again.num_classes == 0 and again.name == "counts"
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(
            ValueError, match=f"num_classes must be an integer >= 0 .* got num_classes={bad!r}"
        ):
            ArrayDataset(x, values.y_train, x, values.y_test, num_classes=bad)
