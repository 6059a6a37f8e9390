"""CIFAR-100 from the standard "python version" archive folder (no download)."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from inna_jax.data._arrays import ArrayDataset

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
_LABEL_KEYS = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}
_NAME_KEYS = {"fine": b"fine_label_names", "coarse": b"coarse_label_names"}
_NORMALIZATIONS = ("standardize", "unit")


def _expected() -> str:
    names = ", ".join(f"{FOLDER}/{f}" for f in FILES)
    return (
        f"expected the CIFAR-100 python archive unpacked, i.e. the files {names} "
        "(pickles with keys b'data' (uint8, N x 3072), b'fine_labels', b'coarse_labels'); "
        "get it from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    )


def _find_folder(data_dir: str | os.PathLike) -> str:
    """``data_dir`` itself if it holds the three files, else ``data_dir/cifar-100-python``."""
    data_dir = os.fspath(data_dir)
    for folder in (data_dir, os.path.join(data_dir, FOLDER)):
        if all(os.path.isfile(os.path.join(folder, f)) for f in FILES):
            return folder
    inner = os.path.join(data_dir, FOLDER)
    base = inner if os.path.isdir(inner) else data_dir
    missing = [f for f in FILES if not os.path.isfile(os.path.join(base, f))]
    raise FileNotFoundError(
        f"CIFAR-100 not found in data_dir={data_dir!r}: missing {missing} in {base!r}; "
        + _expected()
    )


def _unpickle(path: str) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as err:  # any unpickling failure means a corrupt file
        raise ValueError(f"corrupt CIFAR-100 file {path!r} ({err!r}); " + _expected()) from err
    if not isinstance(obj, dict):
        raise ValueError(
            f"corrupt CIFAR-100 file {path!r}: a pickled dict was expected, "
            f"got {type(obj).__name__}; " + _expected()
        )
    return obj


def _split(path: str, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split: uint8 images ``(N, 3072)`` and int labels ``(N,)``, checked."""
    obj = _unpickle(path)
    if b"data" not in obj or label_key not in obj:
        raise ValueError(
            f"corrupt CIFAR-100 file {path!r}: keys {sorted(obj)} lack b'data' or "
            f"{label_key!r}; " + _expected()
        )
    data = np.asarray(obj[b"data"])
    labels = np.asarray(obj[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"corrupt CIFAR-100 file {path!r}: b'data' must be uint8 of shape (N, 3072), "
            f"got {data.dtype} {data.shape}; " + _expected()
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"corrupt CIFAR-100 file {path!r}: {label_key!r} must hold {len(data)} integer "
            f"labels, got {labels.dtype} {labels.shape}; " + _expected()
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"corrupt CIFAR-100 file {path!r}: {label_key!r} must lie in "
            f"[0, {num_classes}), got [{labels.min()}, {labels.max()}]; " + _expected()
        )
    return data, labels.astype(np.int32)


def to_nhwc(data: np.ndarray) -> np.ndarray:
    """CIFAR rows ``(N, 3072)`` (planes R, G, B, each row-major 32x32) to ``(N, 32, 32, 3)``."""
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def load_cifar100(
    data_dir: str | os.PathLike,
    *,
    label: str = "fine",
    normalize: str = "standardize",
    num_train: int | None = None,
    num_test: int | None = None,
) -> ArrayDataset:
    r"""CIFAR-100 (Krizhevsky 2009) read from the unpacked "python version" archive.

    The folder ``cifar-100-python/`` holds three pickles (protocol 2, bytes keys):
    ``train`` (50,000 images), ``test`` (10,000) and ``meta`` (class names). In each split
    ``b"data"`` is a uint8 array of shape ``(N, 3072)``: 1024 red values, then 1024 green,
    then 1024 blue, each plane a 32x32 image in row-major order, so pixel ``(r, c)`` of
    channel ``k`` is column ``1024 k + 32 r + c``. The images are returned NHWC, float32:

    - ``normalize="unit"``: :math:`x / 255 \in [0, 1]`;
    - ``normalize="standardize"`` (default): :math:`(x/255 - m_k) / s_k` with the per-channel
      mean :math:`m_k` and standard deviation :math:`s_k` of the (loaded) training images.

    Args:
        data_dir: the folder ``cifar-100-python`` or the folder that contains it.
        label: ``"fine"`` (100 classes, ``b"fine_labels"``) or ``"coarse"`` (20 superclasses,
            ``b"coarse_labels"``).
        normalize: ``"standardize"`` or ``"unit"``.
        num_train: keep only the first ``num_train`` training images (``None``: all).
        num_test: keep only the first ``num_test`` test images (``None``: all).

    Returns:
        An :class:`~inna_jax.data.ArrayDataset` with ``x`` of shape ``(N, 32, 32, 3)``,
        int32 labels, ``num_classes`` 100 or 20 and name ``"cifar100"``: a classification
        set, which :func:`~inna_jax.train.fit` trains with the cross-entropy by default.

    Raises:
        FileNotFoundError: if ``cifar-100-python/train``, ``test`` or ``meta`` is missing;
            the message names the expected files.
        ValueError: for a corrupt file (not a pickle, missing keys, wrong shape or dtype,
            labels out of range), naming the file and the expected format; or for a bad
            ``label``, ``normalize``, ``num_train`` or ``num_test``.

    Example:
        >>> import os, pickle, tempfile, numpy as np
        >>> from inna_jax.data import load_cifar100
        >>> root = os.path.join(tempfile.mkdtemp(), "cifar-100-python")
        >>> os.makedirs(root)
        >>> split = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [3, 7],
        ...          b"coarse_labels": [1, 2]}
        >>> for name in ("train", "test"):
        ...     with open(os.path.join(root, name), "wb") as f:
        ...         pickle.dump(split, f, protocol=2)
        >>> with open(os.path.join(root, "meta"), "wb") as f:
        ...     pickle.dump({b"fine_label_names": [b"c"] * 100}, f, protocol=2)
        >>> data = load_cifar100(root, normalize="unit")
        >>> data.x_train.shape, data.y_train.tolist(), data.num_classes
        ((2, 32, 32, 3), [3, 7], 100)

    References:
        A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
        https://www.cs.toronto.edu/~kriz/cifar.html
    """
    if label not in _LABEL_KEYS:
        raise ValueError(f"label must be 'fine' or 'coarse', got label={label!r}")
    if normalize not in _NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {_NORMALIZATIONS}, got normalize={normalize!r}")
    for name, n in (("num_train", num_train), ("num_test", num_test)):
        if n is not None and (not isinstance(n, int | np.integer) or n < 1):
            raise ValueError(f"{name} must be a positive int or None, got {name}={n!r}")
    folder = _find_folder(data_dir)
    key, num_classes = _LABEL_KEYS[label]
    meta = _unpickle(os.path.join(folder, "meta"))
    names = meta.get(_NAME_KEYS[label])
    if names is not None and len(names) != num_classes:
        raise ValueError(
            f"corrupt CIFAR-100 file {os.path.join(folder, 'meta')!r}: "
            f"{_NAME_KEYS[label]!r} has {len(names)} names, expected {num_classes}; " + _expected()
        )
    x_tr, y_tr = _split(os.path.join(folder, "train"), key, num_classes)
    x_te, y_te = _split(os.path.join(folder, "test"), key, num_classes)
    x_tr, y_tr = x_tr[:num_train], y_tr[:num_train]
    x_te, y_te = x_te[:num_test], y_te[:num_test]
    x_tr = to_nhwc(x_tr).astype(np.float32) / np.float32(255)
    x_te = to_nhwc(x_te).astype(np.float32) / np.float32(255)
    if normalize == "standardize":
        mean = x_tr.mean(axis=(0, 1, 2), dtype=np.float64)
        std = x_tr.std(axis=(0, 1, 2), dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        mean, std = mean.astype(np.float32), std.astype(np.float32)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return ArrayDataset(x_tr, y_tr, x_te, y_te, num_classes=num_classes, name="cifar100")
