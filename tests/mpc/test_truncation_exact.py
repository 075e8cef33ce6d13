"""Fixed-point arithmetic with exact truncation (veil.mpc.exact): secure equals twin exactly."""

from __future__ import annotations

import torch

import veil
from veil.mpc import exact
from veil.sharing.material import normalize_plan


def _shares(q: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.randint(-2**63, 2**63 - 1, q.shape, generator=torch.Generator().manual_seed(seed))
    return q - r, r


def _run(job, plan):
    """Run ``job`` with the whole plan prefetched (a plan that differs from the calls fails)."""
    def wrapped(party):
        party.prefetch(plan)
        out = job(party)
        assert not party._buffer, "plan has unused items"
        return out

    return veil.run(wrapped, timeout=120)


def test_softmax_is_the_twin_bit_for_bit_and_close_to_softmax() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.rand(6, 10, generator=gen) * 40 - 20,
                        torch.zeros(1, 10), torch.full((1, 10), 7.0)])
    q = torch.round(logits * 2**16).to(torch.int64)
    shares = _shares(q, 1)

    def job(party):
        x = party.from_share(shares[party.rank])
        return party.open(exact.softmax(x).share)

    z0, z1 = _run(job, exact.softmax_plan(q.shape))
    want = exact.twin_softmax(q, 16)
    assert torch.equal(z0, want) and torch.equal(z1, want)
    err = (want.double() / 2**16 - torch.softmax(logits.double(), -1)).abs().max()
    assert err < 1e-3


def test_softmax_error_bound_on_many_rows() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.rand(100_000, 10, generator=gen, dtype=torch.float64) * 40 - 20
    q = torch.round(logits * 2**16).to(torch.int64)
    p = exact.twin_softmax(q, 16).double() / 2**16
    assert (p - torch.softmax(logits, -1)).abs().max() < 1e-3


def test_products_and_scale_match_the_twin_exactly() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-2**22, 2**22, (5, 7), generator=gen)
    w = torch.randint(-2**18, 2**18, (7, 3), generator=gen)
    d = torch.randint(0, 2, (5, 7), generator=gen)
    sx, sw, sd = _shares(x, 4), _shares(w, 5), _shares(d, 6)

    def job(party):
        a = party.from_share(sx[party.rank])
        b = party.from_share(sw[party.rank])
        bits = party.from_share(sd[party.rank], frac_bits=0)
        return [party.open(t.share) for t in (exact.product(a, b, "matmul"),
                                              exact.product(a, bits), exact.scale(a, 0.01))]

    plan = (exact.product_plan("matmul", (5, 7), (7, 3), 16)
            + exact.product_plan("beaver", (5, 7), (5, 7), 0) + exact.scale_plan(35))
    out, _ = _run(job, normalize_plan(plan))
    assert torch.equal(out[0], exact.twin_product(x, w, 16, "matmul"))
    assert torch.equal(out[1], x * d)
    assert torch.equal(out[2], exact.twin_scale(x, 0.01))
