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
