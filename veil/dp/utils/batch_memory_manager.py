"""BatchMemoryManager: Opacus' context manager for logical batches larger than memory.

Inside the ``with`` block the loader yields physical batches of at most
``max_physical_batch_size``; the optimizer only accumulates clipped gradients on all but
the last physical batch of each logical (Poisson) batch, so noise and accounting stay
per logical batch (see :func:`veil.dp.engine.virtual_batches`).

Example
-------
>>> # with BatchMemoryManager(data_loader=loader, max_physical_batch_size=64,
>>> #                         optimizer=optimizer) as memory_safe_loader:
>>> #     for x, y in memory_safe_loader:
>>> #         optimizer.zero_grad(); criterion(model(x), y).backward(); optimizer.step()
"""

from __future__ import annotations

import math

from torch.utils.data import DataLoader

from veil.dp.engine import virtual_batches
from veil.dp.optimizer import DPOptimizer


class _PhysicalBatches:
    def __init__(self, data_loader: DataLoader, optimizer: DPOptimizer, size: int) -> None:
        self.data_loader, self.optimizer, self.size = data_loader, optimizer, size

    def __iter__(self):
        return virtual_batches(self.data_loader, self.optimizer, self.size)

    def __len__(self) -> int:  # expected number of physical batches
        expected = self.optimizer.expected_batch_size
        return len(self.data_loader) * max(1, math.ceil(expected / self.size))


class BatchMemoryManager:
    """Split each logical batch of ``data_loader`` into physical batches.

    Parameters
    ----------
    data_loader:
        The loader returned by ``make_private``.
    max_physical_batch_size:
        The largest batch that fits in memory.
    optimizer:
        The :class:`~veil.dp.optimizer.DPOptimizer` returned by ``make_private``.
    """

    def __init__(self, *, data_loader: DataLoader, max_physical_batch_size: int,
                 optimizer: DPOptimizer) -> None:
        if max_physical_batch_size < 1:
            raise ValueError("max_physical_batch_size must be >= 1")
        if not isinstance(optimizer, DPOptimizer):
            raise TypeError("optimizer must be the DPOptimizer returned by make_private")
        self.loader = _PhysicalBatches(data_loader, optimizer, max_physical_batch_size)

    def __enter__(self) -> _PhysicalBatches:
        return self.loader

    def __exit__(self, *exc) -> None:
        self.loader.optimizer.signal_skip_step(False)
