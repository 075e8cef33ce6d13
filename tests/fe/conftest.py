"""Shared fixtures: small keys and a small in-memory discrete-log table (fast tests)."""

from __future__ import annotations

import pytest

from veil import fe
from veil.fe.dlog import DiscreteLog


@pytest.fixture(scope="session")
def solver() -> DiscreteLog:
    return DiscreteLog(table_bits=10, cache_dir=None)


@pytest.fixture(scope="session")
def big_solver() -> DiscreteLog:
    return DiscreteLog(table_bits=16, cache_dir=None)


@pytest.fixture(scope="session")
def keys4() -> tuple[fe.MasterPublicKey, fe.MasterSecretKey]:
    return fe.setup(4)


@pytest.fixture(scope="session")
def other_keys4() -> tuple[fe.MasterPublicKey, fe.MasterSecretKey]:
    return fe.setup(4)


@pytest.fixture(scope="session")
def mnist_small():
    from veil.data import load_mnist

    x, y = load_mnist("train")
    xt, yt = load_mnist("test")
    return x[:2000], y[:2000], xt[:500], yt[:500]


@pytest.fixture(scope="session")
def trained(mnist_small):
    """A QuadNet (k=40, MNIST shape) trained briefly, and its integer twin with a bound."""
    import torch

    from veil.fe.quadnet import QuadNet, train_quadnet

    x, y, _, _ = mnist_small
    torch.manual_seed(0)  # not-secret: test model initialisation
    model = QuadNet(k=40)
    train_quadnet(model, x, y, epochs=3, quant_aware_epochs=1, batch_size=50)
    net = model.integerise()
    net.calibrate_bound(x)
    return model, net
