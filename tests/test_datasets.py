"""The data sets that ship inside scikit-learn, read without network."""

import importlib.util
import subprocess
import sys

import numpy as np
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
