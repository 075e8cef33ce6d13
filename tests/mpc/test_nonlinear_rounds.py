"""Gates larger than one dealer chunk still open in one round (up to MAX_ROUND elements)."""

import math

import pytest
import torch

import veil
from veil.mpc import nonlinear


def _job(party, values):
    x = party.share(values if party.rank == 0 else None, owner=0, shape=values.shape)
    r0 = party.stats()["rounds"]
    y = x.relu()
    r1 = party.stats()["rounds"]
    e = x.eq(0.0)
    r2 = party.stats()["rounds"]
    return y.reveal(), e.reveal(), r1 - r0, r2 - r1


@pytest.mark.parametrize("count", [7, 8, 9, 20])
def test_chunks_are_grouped_into_rounds(monkeypatch, count):
    monkeypatch.setattr(nonlinear, "MAX_CHUNK", 2)
    monkeypatch.setattr(nonlinear, "MAX_ROUND", 8)
    values = torch.arange(count, dtype=torch.float64) - count // 2
    y, e, relu_rounds, eq_rounds = veil.run(_job, transport="local", args=(values,))[1]
    assert torch.equal(y, values.clamp(min=0))
    assert torch.equal(e, (values == 0).double())
    assert relu_rounds == eq_rounds == math.ceil(count / 8)
