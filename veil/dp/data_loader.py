"""DPDataLoader: a DataLoader with Poisson sampling, as Opacus' ``opacus.data_loader``.

Each step includes every example independently with probability ``sample_rate`` (what
the accountants assume); one "epoch" has ``round(1 / sample_rate)`` steps. Empty
batches are yielded with the right shapes (a step must still happen: skipping it would
leak that the batch was empty).

Example
-------
>>> import torch
>>> from torch.utils.data import DataLoader, TensorDataset
>>> ds = TensorDataset(torch.zeros(100, 2), torch.zeros(100, dtype=torch.long))
>>> dl = DPDataLoader.from_data_loader(DataLoader(ds, batch_size=10))
>>> dl.sample_rate, len(dl)
(0.1, 10)
"""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from veil.csprng import CSPRNG


class DPDataLoader(DataLoader):
    """A DataLoader whose batches are Poisson samples of the dataset.

    Parameters
    ----------
    dataset:
        Any map-style dataset.
    sample_rate:
        q, the probability that an example is in a batch.
    collate_fn:
        As for DataLoader (empty batches keep the dataset's shapes and dtypes).
    generator:
        A :class:`veil.csprng.CSPRNG` (the default is a fresh, OS-seeded one).
    steps:
        Batches per pass (default ``round(1 / sample_rate)``).
    """

    def __init__(self, dataset: Dataset, *, sample_rate: float, collate_fn=None,
                 generator: CSPRNG | None = None, steps: int | None = None, **kwargs) -> None:
        from veil.dp.sampling import PoissonBatchSampler, _Collate

        n = len(dataset)  # type: ignore[arg-type]
        sampler = PoissonBatchSampler(n, sample_rate, steps, generator)
        super().__init__(dataset, batch_sampler=sampler,
                         collate_fn=_Collate(dataset, collate_fn), **kwargs)
        self.sample_rate = sample_rate

    @classmethod
    def from_data_loader(cls, data_loader: DataLoader, *, generator: CSPRNG | None = None,
                         distributed: bool = False) -> DPDataLoader:
        """The Poisson version of a loader: expected batch size = its batch size."""
        if distributed:
            raise NotImplementedError("distributed Poisson sampling is not supported")
        dataset = data_loader.dataset
        n = len(dataset)  # type: ignore[arg-type]
        b = data_loader.batch_size
        if b is None:
            raise ValueError("the data loader has no batch_size")
        if not 0 < b <= n:
            raise ValueError(f"batch_size must be in [1, {n}], got {b}")
        return cls(dataset, sample_rate=b / n, collate_fn=data_loader.collate_fn,
                   generator=generator, steps=max(1, round(n / b)),
                   num_workers=data_loader.num_workers, pin_memory=data_loader.pin_memory)
