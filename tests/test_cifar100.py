"""The CIFAR-100 reader, on small files written here in the archive's exact format."""

import os
import pickle

import numpy as np
import pytest

from inna_jax.data import load_cifar100


def _split(rng, n):
    return {
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": [int(v) for v in rng.integers(0, 100, n)],
        b"coarse_labels": [int(v) for v in rng.integers(0, 20, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    }


def _write(folder, name, obj):
    with open(os.path.join(folder, name), "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def archive(tmp_path):
    """``tmp_path/cifar-100-python`` with train (5 images), test (3) and meta."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = _split(rng, 5), _split(rng, 3)
    _write(folder, "train", train)
    _write(folder, "test", test)
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    _write(folder, "meta", meta)
    return tmp_path, train, test


def test_pixel_placement_exact(archive):
    root, train, test = archive
    data = load_cifar100(root, normalize="unit")
    assert data.x_train.shape == (5, 32, 32, 3) and data.x_train.dtype == np.float32
    assert data.x_test.shape == (3, 32, 32, 3)
    # Independent transcription: pixel (r, c) of channel k is column 1024 k + 32 r + c.
    for split, x in ((train, data.x_train), (test, data.x_test)):
        raw = split[b"data"]
        expected = np.empty((len(raw), 32, 32, 3), np.float32)
        for i in range(len(raw)):
            for k in range(3):
                for r in range(32):
                    for c in range(32):
                        expected[i, r, c, k] = raw[i, 1024 * k + 32 * r + c] / 255.0
        np.testing.assert_array_equal(x, expected)
    # A few hand-picked corners, stated literally.
    raw = train[b"data"]
    assert data.x_train[2, 0, 0, 0] == np.float32(raw[2, 0] / 255.0)
    assert data.x_train[2, 0, 1, 0] == np.float32(raw[2, 1] / 255.0)
    assert data.x_train[2, 1, 0, 0] == np.float32(raw[2, 32] / 255.0)
    assert data.x_train[2, 0, 0, 1] == np.float32(raw[2, 1024] / 255.0)
    assert data.x_train[2, 31, 31, 2] == np.float32(raw[2, 3071] / 255.0)


def test_labels_fine_and_coarse(archive):
    root, train, test = archive
    fine = load_cifar100(root)
    coarse = load_cifar100(root / "cifar-100-python", label="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20 and fine.name == "cifar100"
    assert fine.y_train.dtype == np.int32
    assert fine.y_train.tolist() == train[b"fine_labels"]
    assert fine.y_test.tolist() == test[b"fine_labels"]
    assert coarse.y_train.tolist() == train[b"coarse_labels"]
    assert coarse.y_test.tolist() == test[b"coarse_labels"]


def test_standardize_with_train_channel_stats(archive):
    root, train, test = archive
    data = load_cifar100(root)
    unit_tr = train[b"data"].reshape(5, 3, 1024).astype(np.float64) / 255.0
    unit_te = test[b"data"].reshape(3, 3, 1024).astype(np.float64) / 255.0
    mean = unit_tr.mean(axis=(0, 2))
    std = unit_tr.std(axis=(0, 2))
    for k in range(3):
        got_tr = data.x_train[..., k].reshape(5, 1024)
        got_te = data.x_test[..., k].reshape(3, 1024)
        np.testing.assert_allclose(got_tr, (unit_tr[:, k] - mean[k]) / std[k], atol=1e-5)
        np.testing.assert_allclose(got_te, (unit_te[:, k] - mean[k]) / std[k], atol=1e-5)
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_subset(archive):
    root, train, _ = archive
    data = load_cifar100(root, normalize="unit", num_train=2, num_test=1)
    assert data.x_train.shape == (2, 32, 32, 3) and data.x_test.shape == (1, 32, 32, 3)
    assert data.y_train.tolist() == train[b"fine_labels"][:2]


@pytest.mark.parametrize("missing", ["train", "test", "meta"])
def test_missing_file_names_expected_files(archive, missing):
    root, _, _ = archive
    os.remove(root / "cifar-100-python" / missing)
    with pytest.raises(FileNotFoundError) as info:
        load_cifar100(root)
    msg = str(info.value)
    assert f"'{missing}'" in msg
    for name in ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"):
        assert name in msg


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-100-python/meta"):
        load_cifar100(tmp_path / "nowhere")


def _corrupt_cases(rng):
    good = _split(rng, 2)
    return {
        "not a pickle": b"this is not a pickle",
        "truncated": pickle.dumps(good, protocol=2)[:100],
        "not a dict": pickle.dumps([1, 2, 3], protocol=2),
        "no data key": pickle.dumps({b"fine_labels": [1, 2]}, protocol=2),
        "wrong width": pickle.dumps({**good, b"data": np.zeros((2, 3000), np.uint8)}, protocol=2),
        "wrong dtype": pickle.dumps({**good, b"data": np.zeros((2, 3072), np.float32)}, protocol=2),
        "label count": pickle.dumps({**good, b"fine_labels": [1, 2, 3]}, protocol=2),
        "label range": pickle.dumps({**good, b"fine_labels": [1, 100]}, protocol=2),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases(np.random.default_rng(0))))
def test_corrupt_train_file(archive, case):
    root, _, _ = archive
    path = root / "cifar-100-python" / "train"
    path.write_bytes(_corrupt_cases(np.random.default_rng(0))[case])
    with pytest.raises(ValueError) as info:
        load_cifar100(root)
    msg = str(info.value)
    assert "corrupt" in msg and str(path) in msg
    assert "cifar-100-python/train" in msg and "cifar-100-python/meta" in msg


def test_corrupt_meta(archive):
    root, _, _ = archive
    _write(root / "cifar-100-python", "meta", {b"fine_label_names": [b"a"] * 7})
    with pytest.raises(ValueError, match="has 7 names, expected 100"):
        load_cifar100(root)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"label": "medium"}, "label="),
        ({"normalize": "minmax"}, "normalize="),
        ({"num_train": 0}, "num_train="),
        ({"num_test": 1.5}, "num_test="),
    ],
)
def test_bad_arguments(archive, kwargs, pattern):
    root, _, _ = archive
    with pytest.raises(ValueError, match=pattern):
        load_cifar100(root, **kwargs)
