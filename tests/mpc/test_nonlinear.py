"""FSS gates on SecretTensor against their plaintext twins (in-memory transport)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import ring
from veil.csprng import CSPRNG
from veil.fss import KeyReuseError, gates
from veil.mpc import nonlinear

F16 = ring.DEFAULT_FRAC_BITS


def _values(shape, seed: int, scale: float = 100.0) -> torch.Tensor:
    """Test data (not secret): random fixed-point-exact values with ties and zeros."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale  # not-secret
    x = torch.round(x * 2**F16) / 2**F16
    flat = x.reshape(-1)
    if flat.numel() >= 4:
        flat[0] = 0.0
        flat[1] = flat[2]  # a tie
        flat[3] = -(2.0**-F16)  # the smallest negative
    return x


def _run(job, x, y=None, **kw):
    shape_x, shape_y = tuple(x.shape), None if y is None else tuple(y.shape)

    def wrapper(party):
        sx = party.share(x if party.rank == 0 else None, owner=0, shape=shape_x)
        sy = None if y is None else party.share(y if party.rank == 1 else None, owner=1,
                                                shape=shape_y)
        return job(party, sx, sy)

    r0, r1 = veil.run(wrapper, timeout=60, **kw)
    return r0


def _elementwise(party, x, y):
    out = {
        "relu": x.relu(), "drelu": x.drelu(), "abs": x.abs(),
        "lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y, "eq": x.eq(y),
        "ltc": x < 0.5, "gec": x >= -0.25, "eqc": x.eq(0.0),
        "max": x.maximum(y), "min": x.minimum(y), "maxc": x.maximum(1.0),
    }
    return {k: v.reveal(dtype=torch.float64) for k, v in out.items()}


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 4)])
def test_elementwise_gates_match_plaintext(shape) -> None:
    x, y = _values(shape, 1), _values(shape, 2)
    y.reshape(-1)[:2] = x.reshape(-1)[:2]  # equal elements
    got = _run(_elementwise, x, y)
    want = {
        "relu": x.clamp(min=0), "drelu": (x >= 0), "abs": x.abs(),
        "lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y, "eq": x == y,
        "ltc": x < 0.5, "gec": x >= -0.25, "eqc": x == 0,
        "max": torch.maximum(x, y), "min": torch.minimum(x, y), "maxc": x.clamp(min=1.0),
    }
    for k, w in want.items():
        assert torch.equal(got[k], w.to(torch.float64)), k


def _one_round_each(party, x, y):
    rounds = []
    for op in (lambda: x.relu(), lambda: x < y, lambda: x.eq(y), lambda: x.abs(),
               lambda: x.maximum(y)):
        before = party.stats()["rounds"]
        sent = party.stats()["bytes_sent"]
        op()
        rounds.append((party.stats()["rounds"] - before, party.stats()["bytes_sent"] - sent))
    return rounds


def test_each_gate_is_one_round_of_n_bits() -> None:
    n = 1000
    got = _run(_one_round_each, _values((n,), 3), _values((n,), 4))
    for rounds, sent in got:
        assert rounds == 1
        assert 8 * n <= sent <= 8 * n + 200  # 64 bits per element, plus a frame header


def _trees(party, x, y):
    values, onehot = x.max(dim=1)
    am = x.argmax(dim=-1)
    am0 = x.argmax(dim=0)
    total = x.max()
    r = party.stats()["rounds"]
    pool = y.max_pool2d(3, stride=2, padding=1)
    pool_rounds = party.stats()["rounds"] - r
    pool2, sel = nonlinear.max_pool2d(y, 2, return_onehot=True)
    return {k: v.reveal(dtype=torch.float64) for k, v in
            {"values": values, "onehot": onehot, "am": am, "am0": am0, "total": total,
             "pool": pool, "pool2": pool2, "sel": sel}.items()} | {"pool_rounds": pool_rounds}


def _first_onehot(x: torch.Tensor, dim: int) -> torch.Tensor:
    idx = torch.argmax(x, dim=dim, keepdim=True)  # torch: first maximal element
    return torch.zeros_like(x).scatter_(dim, idx, 1.0)


def test_max_argmax_maxpool_match_plaintext() -> None:
    x = _values((6, 11), 5)
    x[2, :] = 3.0  # a row of ties: the first index wins
    x[4, 7] = x[4].max() + 1
    y = _values((2, 3, 7, 9), 6)
    got = _run(_trees, x, y)
    assert torch.equal(got["values"], x.max(dim=1).values)
    assert torch.equal(got["onehot"], _first_onehot(x, 1))
    assert torch.equal(got["am"], _first_onehot(x, 1))
    assert torch.equal(got["am0"], _first_onehot(x, 0))
    assert torch.equal(got["total"], x.max())
    assert torch.equal(got["pool"], F.max_pool2d(y, 3, stride=2, padding=1))
    assert got["pool_rounds"] == math.ceil(math.log2(9))
    assert torch.equal(got["pool2"], F.max_pool2d(y, 2))
    windows = y[..., :6, :8].unfold(-2, 2, 2).unfold(-2, 2, 2).reshape(2, 3, 3, 4, 4)
    assert torch.equal(got["sel"], _first_onehot(windows, -1))


def _argmax_rounds(party, x, y):
    r = party.stats()["rounds"]
    oh = x.argmax(dim=-1)
    rounds = party.stats()["rounds"] - r
    return oh.reveal(dtype=torch.float64), rounds


@pytest.mark.parametrize("m", [2, 3, 10, 33])
def test_argmax_tournament_rounds(m: int) -> None:
    x = _values((4, m), 7 + m)
    oh, rounds = _run(_argmax_rounds, x)
    assert rounds == math.ceil(math.log2(m))
    assert torch.equal(oh, _first_onehot(x, 1))


def _planned(party, x, y):
    out = [x.relu(), x < y, x.eq(y), x.maximum(y), x.argmax(dim=1), x.max(dim=0)[0],
           x.reshape(1, 1, 4, 6).max_pool2d(2, stride=1, padding=1)]
    return [o.reveal() for o in out], party.stats()["rounds"]


def test_plan_matches_the_requests() -> None:
    """Fetching every key before the job (the offline phase) works only if plan() is exact."""
    shape = (4, 6)
    plan = (nonlinear.plan("relu", shape) + nonlinear.plan("lt", shape)
            + nonlinear.plan("eq", shape) + nonlinear.plan("maximum", shape)
            + nonlinear.plan("argmax", shape, dim=1) + nonlinear.plan("max", shape, dim=0)
            + nonlinear.plan("max_pool2d", (1, 1, 4, 6), kernel_size=2, stride=1, padding=1))
    x, y = _values(shape, 8), _values(shape, 9)
    _run(_planned, x, y, plan=plan)
    with pytest.raises(veil.mpc.runtime.PartyFailedError, match="material|fss"):
        _run(_planned, x, y, plan=plan[:-1] + nonlinear.plan("relu", (3,)))


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=12),
       st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=12))
def test_hypothesis_integers(xs, ys) -> None:
    n = min(len(xs), len(ys))
    x = torch.tensor(xs[:n], dtype=torch.float64)
    y = torch.tensor(ys[:n], dtype=torch.float64)

    def job(party, sx, sy):
        return {"relu": sx.relu().reveal(dtype=torch.float64),
                "lt": (sx < sy).reveal(dtype=torch.float64),
                "eq": sx.eq(sy).reveal(dtype=torch.float64)}

    def wrapper(party):
        sx = party.share(x if party.rank == 0 else None, owner=0, shape=(n,), frac_bits=0,
                         dtype=torch.float64)
        sy = party.share(y if party.rank == 1 else None, owner=1, shape=(n,), frac_bits=0,
                         dtype=torch.float64)
        return job(party, sx, sy)

    got = veil.run(wrapper, timeout=60)[0]
    assert torch.equal(got["relu"], x.clamp(min=0))
    assert torch.equal(got["lt"], (x < y).to(torch.float64))
    assert torch.equal(got["eq"], (x == y).to(torch.float64))


def test_material_is_single_use() -> None:
    m0, _ = gates.sign_keygen(3, relu=True)
    xh = np.arange(3, dtype=np.uint64)
    gates.sign_finish(m0, 0, xh)
    with pytest.raises(KeyReuseError):
        gates.sign_finish(m0, 0, xh)
    e0, _ = gates.eq_keygen(2)
    gates.eq_finish(e0, 0, np.zeros(2, np.uint64))
    with pytest.raises(KeyReuseError):
        gates.eq_finish(e0, 0, np.zeros(2, np.uint64))


def test_material_of_the_other_party_is_refused() -> None:
    _, m1 = gates.sign_keygen(2)
    with pytest.raises(ValueError, match="party 1"):
        gates.sign_finish(m1, 0, np.zeros(2, np.uint64))


def _bad(party, x, y):
    errors = []
    for op in (lambda: x.max_pool2d(5), lambda: nonlinear.relu(x, method="bogus"),
               lambda: x[:0].max(), lambda: nonlinear.max_pool2d(x, 2, padding=2)):
        try:
            op()
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    return errors


def test_bad_input_raises_clearly() -> None:
    errors = _run(_bad, _values((1, 4, 4), 10))
    assert len(errors) == 4
    assert "larger than" in errors[0] and "method" in errors[1]
    assert "empty" in errors[2] and "padding" in errors[3]


def test_dealer_refuses_diverging_requests() -> None:
    def job(party):
        x = party.share(torch.ones(3) if party.rank == 0 else None, owner=0, shape=(3,))
        return (x[: 2 + party.rank]).relu().reveal()

    with pytest.raises(veil.mpc.runtime.PartyFailedError, match="different material"):
        veil.run(job, timeout=20)


def test_keygen_uses_the_given_generator() -> None:
    a0, a1 = gates.sign_keygen(5, relu=True, rng=CSPRNG(b"s" * 16))
    b0, b1 = gates.sign_keygen(5, relu=True, rng=CSPRNG(b"s" * 16))
    assert np.array_equal(a0["key_seeds"], b0["key_seeds"]) and np.array_equal(a1["r"], b1["r"])
