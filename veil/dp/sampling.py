"""Poisson sampling: every example joins each batch independently with probability q.

This is the sampling the accountants assume ("privacy amplification by subsampling"),
so q = expected batch size / dataset size is the true sampling rate. Membership draws
come from :mod:`veil.csprng`: the batch composition is part of the secret.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

from veil.csprng import CSPRNG


class PoissonBatchSampler(Sampler[list[int]]):
    """Yields ``steps`` batches of indices, each index included with probability ``q``.

    Example
    -------
    >>> s = PoissonBatchSampler(num_samples=1000, sample_rate=0.01, steps=3)
    >>> len(list(s))
    3
    """

    def __init__(
        self, num_samples: int, sample_rate: float, steps: int | None = None,
        generator: CSPRNG | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("num_samples must be positive")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps if steps is not None else max(1, round(1 / sample_rate))
        self.generator = generator or CSPRNG()

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            u = self.generator.uniform(self.num_samples)
            yield torch.nonzero(u < self.sample_rate).flatten().tolist()


def _empty_like_batch(sample):
    if isinstance(sample, torch.Tensor):
        return torch.zeros((0, *sample.shape), dtype=sample.dtype)
    if isinstance(sample, int):
        return torch.zeros(0, dtype=torch.long)
    if isinstance(sample, float):
        return torch.zeros(0, dtype=torch.get_default_dtype())
    if isinstance(sample, tuple | list):
        return type(sample)(_empty_like_batch(s) for s in sample)
    raise TypeError(f"cannot build an empty batch for samples of type {type(sample)}")


class _Collate:
    """Default collation, but an empty Poisson batch becomes correctly shaped empty tensors."""

    def __init__(self, dataset: Dataset, collate_fn) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn or default_collate
        self._template = None

    def __call__(self, batch):
        if len(batch) == 0:
            if self._template is None:
                self._template = self.dataset[0]
            return _empty_like_batch(self._template)
        return self.collate_fn(batch)


def poisson_loader(
    loader_or_dataset: DataLoader | Dataset, batch_size: int | None = None,
    generator: CSPRNG | None = None,
) -> DataLoader:
    """A :class:`~veil.dp.data_loader.DPDataLoader` of expected batch size ``batch_size``.

    One "epoch" has ``round(n / batch_size)`` steps. From an existing DataLoader the
    dataset, batch size, workers and collate function are kept.

    Example
    -------
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.zeros(100, 2), torch.zeros(100, dtype=torch.long))
    >>> dl = poisson_loader(ds, batch_size=10)
    >>> len(dl), dl.batch_sampler.sample_rate
    (10, 0.1)
    """
    from veil.dp.data_loader import DPDataLoader

    if isinstance(loader_or_dataset, DPDataLoader) and batch_size is None:
        return loader_or_dataset
    if isinstance(loader_or_dataset, DataLoader):
        dl = loader_or_dataset
        dataset = dl.dataset
        batch_size = batch_size or dl.batch_size
        if batch_size is None:
            raise ValueError("the data loader has no batch_size; pass batch_size")
        kwargs = dict(num_workers=dl.num_workers, collate_fn=dl.collate_fn,
                      pin_memory=dl.pin_memory)
    else:
        dataset = loader_or_dataset
        kwargs = {}
        if batch_size is None:
            raise ValueError("batch_size is required with a dataset")
    n = len(dataset)  # type: ignore[arg-type]
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    from veil.dp.data_loader import DPDataLoader

    return DPDataLoader(dataset, sample_rate=batch_size / n,
                        collate_fn=kwargs.pop("collate_fn", None), generator=generator,
                        steps=max(1, round(n / batch_size)), **kwargs)
