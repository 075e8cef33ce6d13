"""Exact truncation (veil.mpc.truncation): equal to the arithmetic shift, whatever |x| < 2^62."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import ring
from veil.mpc.truncation import plan, truncate
from veil.sharing.errors import MaterialError
from veil.sharing.truncation import generate_trunc

LIMIT = 2**62


def _split(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.randint(-2**63, 2**63 - 1, x.shape, generator=torch.Generator().manual_seed(seed))
    return x - r, r


def _truncate_both(x: torch.Tensor, shift: int, seed: int = 0) -> torch.Tensor:
    shares = _split(x, seed)

    def job(party):
        z = truncate(party, shares[party.rank], shift)
        rounds = party.stats()["rounds"]
        return party.open(z), rounds

    (z0, rounds), (z1, _) = veil.run(job, timeout=120)
    assert torch.equal(z0, z1) and rounds == 1
    return z0


def test_edge_values_and_shifts() -> None:
    x = torch.tensor([0, 1, -1, 2, -2, 65535, 65536, -65535, -65536, -65537, LIMIT - 1, -LIMIT,
                      2**40 + 12345, -(2**40) - 12345])
    for shift in (1, 16, 32, 61, 62):
        assert torch.equal(_truncate_both(x, shift, shift), x >> shift), shift


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(-LIMIT, LIMIT - 1), min_size=1, max_size=40),
       st.integers(1, 40), st.integers(0, 2**31))
def test_matches_arithmetic_shift(values, shift, seed) -> None:
    x = torch.tensor(values, dtype=torch.int64)
    assert torch.equal(_truncate_both(x, shift, seed), x >> shift)


def test_shapes_are_kept_and_plan_matches() -> None:
    x = torch.randint(-2**50, 2**50, (3, 5, 7), generator=torch.Generator().manual_seed(5))
    assert torch.equal(_truncate_both(x, 16), x >> 16)
    assert plan(3 * 5 * 7, 16) == [("trunc", {"count": 105, "shift": 16})]


def test_material_is_single_use_and_checked() -> None:
    from veil.csprng import CSPRNG
    from veil.mpc.truncation import _finish

    m0, _ = generate_trunc(CSPRNG(), count=2, shift=16)
    xh = torch.zeros(2, dtype=torch.int64).numpy().view("uint64")
    _finish(0, m0, xh, 16)
    with pytest.raises(MaterialError, match="already used"):
        _finish(0, m0, xh, 16)
    m0, _ = generate_trunc(CSPRNG(), count=2, shift=16)
    with pytest.raises(MaterialError, match="shift 16, not 8"):
        _finish(0, m0, xh, 8)
    with pytest.raises(MaterialError, match="belongs to party 0"):
        _finish(1, m0, xh, 16)
    with pytest.raises(ValueError, match="shift must be in"):
        plan(3, 0)


@pytest.mark.slow
def test_stress_a_million_truncations_near_the_largest_magnitudes() -> None:
    """10^6 values with |x| in [2^60, 2^62) (products far beyond what training meets: a
    product at scale 2^32 of magnitude 2^28): every result is exact. Local probabilistic
    truncation gets a large fraction of the same values wrong by 2^48."""
    gen = torch.Generator().manual_seed(11)
    n = 1_000_000
    mag = torch.randint(2**60, LIMIT, (n,), generator=gen)
    x = torch.where(torch.rand(n, generator=gen) < 0.5, mag, -mag)
    z = _truncate_both(x, 16, 12)
    assert torch.equal(z, x >> 16)
    s0, s1 = _split(x, 12)
    local = ring.truncate_share(s0, 16, 0) + ring.truncate_share(s1, 16, 1)
    wrong = ((local - (x >> 16)).abs() > 1).sum().item()
    assert wrong > n // 100  # the failure the exact protocol removes is real at this range
