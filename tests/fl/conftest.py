"""Flower's round loops with real ClientApps, in process (no Ray): see veil.fl.inprocess."""

from __future__ import annotations

import pytest

from veil.fl.inprocess import task_identity


@pytest.fixture(autouse=True)
def _task_identity():
    with task_identity():
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only contend on a shared 2-core machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
