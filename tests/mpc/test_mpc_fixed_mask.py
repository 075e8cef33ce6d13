"""Products with an operand opened once under a reusable dealer mask (SecretTensor.fix_mask)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mpc_helpers import assert_close, bit_frequencies, record_received, run_both

import veil
from veil.mpc.runtime import PartyFailedError

N = 8192


@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 5), st.integers(1, 3),
       st.integers(0, 2**31 - 1))
@settings(max_examples=12)
def test_matmul_with_a_fixed_operand_matches_plaintext(n, k, m, queries, seed):
    g = torch.Generator().manual_seed(seed)  # not-secret: test data
    w = torch.randn(k, m, generator=g) * 4
    xs = [torch.randn(n, k, generator=g) * 4 for _ in range(queries)]

    def job(party):
        fw = party.share(w if party.rank == 0 else None, owner=0, shape=(k, m)).fix_mask("t/w")
        out = []
        for x in xs:
            sx = party.share(x if party.rank == 1 else None, owner=1, shape=(n, k))
            out.append((sx @ fw).reveal())
        return out

    for got, x in zip(run_both(job), xs, strict=True):
        assert_close(got, x @ w, atol=1e-3 * k)


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(3, 7),
       st.integers(1, 3), st.integers(0, 1), st.integers(1, 2), st.integers(0, 2**31 - 1))
@settings(max_examples=10)
def test_conv2d_and_elementwise_with_fixed_operands(n, c, o, hw, kernel, pad, stride, seed):
    g = torch.Generator().manual_seed(seed)  # not-secret: test data
    x = torch.randn(n, c, hw, hw, generator=g)
    w = torch.randn(o, c, kernel, kernel, generator=g)
    s = torch.randn(1, c, 1, 1, generator=g)

    def job(party):
        sx = party.share(x if party.rank == 1 else None, owner=1, shape=x.shape)
        fw = party.share(w if party.rank == 0 else None, owner=0, shape=w.shape).fix_mask("w")
        fs = party.share(s if party.rank == 0 else None, owner=0, shape=s.shape).fix_mask("s")
        return sx.conv2d(fw, stride=stride, padding=pad).reveal(), (sx * fs).reveal()

    conv, scaled = run_both(job)
    assert_close(conv, F.conv2d(x, w, stride=stride, padding=pad), atol=1e-3 * c * kernel**2)
    assert_close(scaled, x * s, atol=1e-3)


def test_each_query_opens_only_the_input():
    k, m, n = 256, 128, 4

    def job(party, fixed):
        w = party.share(torch.ones(k, m) if party.rank == 0 else None, owner=0, shape=(k, m))
        if fixed:
            w = w.fix_mask("w")
        x = party.share(torch.ones(n, k) if party.rank == 1 else None, owner=1, shape=(n, k))
        before = party.stats()
        _ = x @ w
        after = party.stats()
        return after["bytes_sent"] - before["bytes_sent"], after["rounds"] - before["rounds"]

    (fresh, fresh_rounds), _ = veil.run(job, args=(False,))
    (fixed, fixed_rounds), _ = veil.run(job, args=(True,))
    assert fresh_rounds == fixed_rounds == 1
    assert 8 * n * k <= fixed < 8 * n * k + 256          # x - a only, plus framing
    assert fresh >= 8 * (n * k + k * m)                  # x - a and w - b


def test_a_mask_id_is_issued_once_per_dealer():
    def job(party):
        w = party.share(torch.ones(3) if party.rank == 0 else None, owner=0, shape=(3,))
        w.fix_mask("same")
        w.fix_mask("same")  # two values opened under one mask would leak their difference

    with pytest.raises(PartyFailedError, match="already issued"):
        veil.run(job, timeout=20)


def test_data_owner_view_is_uniform_whatever_the_weights():
    # Party 1 (the data owner) receives the opened weight w - b and, per query, party 0's
    # share of x - a: every bit is set with frequency 1/2 (5 sigma ~ 0.028) for zero weights
    # and for large ones alike.
    def job(party, value):
        received = record_received(party) if party.rank == 1 else []
        w = party.share(torch.full((N,), value) if party.rank == 0 else None, owner=0,
                        shape=(N,)).fix_mask("w")
        for _ in range(2):
            x = party.share(torch.ones(N) if party.rank == 1 else None, owner=1, shape=(N,))
            _ = x * w
        return received

    for value in (0.0, 1000.0):
        _, view = veil.run(job, args=(value,))
        assert len(view) == 3  # the weight once, then one opening per query
        for msg in view:
            for t in msg if isinstance(msg, list) else [msg]:
                freq = bit_frequencies(t.flatten())
                assert (freq - 0.5).abs().max().item() < 0.028, freq


def test_triples_fetched_before_the_operand_is_opened_are_used_unfolded():
    # Material preloaded before fix_mask gets no offline folding of op(a, w - b): the online
    # step then computes that term itself, with the same result.
    w, x = torch.randn(6, 4), torch.randn(3, 6)
    plan = [("fixed_mask", {"mask_id": "w", "shape": [6, 4]}),
            ("matmul_fixed", {"shape_x": [3, 6], "shape_y": [6, 4], "mask_id": "w"})]

    def job(party):
        fw = party.share(w if party.rank == 0 else None, owner=0, shape=(6, 4)).fix_mask("w")
        sx = party.share(x if party.rank == 1 else None, owner=1, shape=(3, 6))
        return (sx @ fw).reveal()

    assert_close(run_both(job, plan=plan), x @ w, atol=1e-3)
