"""MNIST-1D, generated in code by the ``mnist1d`` package (no download)."""

from __future__ import annotations

import numpy as np

from inna_jax._extras import require
from inna_jax.data._arrays import ArrayDataset


def load_mnist1d(*, num_samples: int = 5000, seed: int = 42) -> ArrayDataset:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40 in 10 classes, generated locally.

    It calls ``mnist1d.data.make_dataset``, never its download path. The package's default
    settings give 4,000 training and 1,000 test signals; the generator seeds NumPy's and
    Python's global random state (``mnist1d.utils.set_seed``), and this function restores
    NumPy's global state afterwards.
    A classification set (``num_classes=10``, int32 labels): :func:`~inna_jax.train.fit`
    trains it with the cross-entropy by default and reports the test accuracy.

    Args:
        num_samples: total number of signals (80 % train, 20 % test), a multiple of 10.
        seed: the generator's seed.

    Example:
        >>> from inna_jax.data import load_mnist1d
        >>> data = load_mnist1d(num_samples=200)
        >>> data.x_train.shape, data.x_test.shape, data.num_classes
        ((160, 40), (40, 40), 10)
    """
    if num_samples < 20 or num_samples % 10:
        raise ValueError(
            f"num_samples must be a multiple of 10 and at least 20, got num_samples={num_samples}"
        )
    require("reproduce", "inna_jax.data.load_mnist1d", only=("mnist1d",))
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return ArrayDataset(
        raw["x"].astype(np.float32),
        raw["y"].astype(np.int32),
        raw["x_test"].astype(np.float32),
        raw["y_test"].astype(np.int32),
        num_classes=10,
        name="mnist1d",
    )
