"""Ring arithmetic and fixed point against exact (Python integer / fractions) twins."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from veil import ring
from veil.csprng import CSPRNG

F16 = ring.DEFAULT_FRAC_BITS
LIMIT = 2.0 ** (62 - F16)


def test_default_frac_bits_is_16():
    assert F16 == 16
    assert ring.encode(1.0).item() == 65536


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 2**-16, -(2**-16), -0.5, 1234.5678,
                                   -LIMIT, LIMIT - 1, -(2**-17) * 3])
def test_encode_decode_round_trip_edges(value):
    enc = ring.encode(torch.tensor([value], dtype=torch.float64))
    expected = round(Fraction(value) * 2**F16)
    assert enc.item() == expected
    assert ring.decode(enc).item() == float(Fraction(expected, 2**F16))


@given(st.integers(min_value=-(2**62), max_value=2**62 - 1),
       st.integers(min_value=0, max_value=ring.MAX_FRAC_BITS))
def test_decode_exact_for_negatives(raw, f):
    # decode must equal the correctly rounded value of raw / 2^f (no floor off-by-one).
    got = ring.decode(torch.tensor([raw]), f).item()
    assert got == float(Fraction(raw, 2**f))


def test_decode_boundary_negatives_crypten_bug():
    # CrypTen 0.4.1 decodes some negatives one ulp low; these must be exact.
    raws = torch.tensor([-1, -2, -65535, -65536, -65537, -(2**40) - 1, -(2**63)])
    got = ring.decode(raws, 16)
    for r, g in zip(raws.tolist(), got.tolist(), strict=True):
        assert g == float(Fraction(r, 2**16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        ring.encode(torch.tensor([1.0, bad]))


@pytest.mark.parametrize("bad", [LIMIT, -LIMIT - 1, 1e30])
def test_encode_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="outside the fixed-point range"):
        ring.encode(torch.tensor([bad], dtype=torch.float64))


def test_encode_integers_exact_and_range_checked():
    assert torch.equal(ring.encode(torch.tensor([3, -7]), 4), torch.tensor([48, -112]))
    with pytest.raises(ValueError, match="outside"):
        ring.encode(torch.tensor([2**46]), 16)
    assert torch.equal(ring.encode(torch.tensor([2**62 - 1]), 0), torch.tensor([2**62 - 1]))


def test_frac_bits_validation():
    for bad in (-1, ring.MAX_FRAC_BITS + 1):
        with pytest.raises(ValueError):
            ring.encode(1.0, bad)
    with pytest.raises(TypeError):
        ring.encode(1.0, 2.5)
    with pytest.raises(TypeError):
        ring.decode(torch.tensor([1.0]))


def test_ring_wraps_modulo_2_64():
    big = torch.tensor([2**63 - 1])
    assert (big + 1).item() == -(2**63)
    assert (torch.tensor([-(2**63)]) * 3).item() == -(2**63)


@given(st.integers(min_value=-(2**47), max_value=2**47), st.integers(0, 2**64 - 1),
       st.integers(min_value=1, max_value=30))
def test_truncation_within_one_ulp(x, r, bits):
    # Share x as (x - r, r) over the ring; for |x| < 2^47 failure prob is ~2^-16: accept only
    # the +-1 outcome, and detect the rare wrap separately.
    r = r - 2**64 if r >= 2**63 else r
    x0 = torch.tensor([x]) - torch.tensor([r])
    x1 = torch.tensor([r])
    t = ring.truncate_share(x0, bits, 0) + ring.truncate_share(x1, bits, 1)
    exact = x >> bits
    diff = t.item() - exact
    # Probability of the large error is <= 2^(48-64): hypothesis will not hit it in practice,
    # and if it did the error would be ~2^(64-bits), far beyond 1.
    assert abs(diff) <= 1


def test_truncation_error_rate_matches_bound():
    # Empirical large-error rate at |x| = 2^60 is about |x| / 2^64 = 1/16, within the
    # documented bound 2^(k+1-64) for |x| < 2^k (k = 61: 1/4).
    g = CSPRNG(b"t" * 16)
    n = 20000
    x = torch.full((n,), 2**60)
    r = g.integers((n,))
    t = ring.truncate_share(x - r, 16, 0) + ring.truncate_share(r, 16, 1)
    bad = ((t - (x >> 16)).abs() > 1).float().mean().item()
    assert 0.02 < bad < 0.125


@given(st.integers(1, 5), st.integers(1, 70), st.integers(1, 6))
def test_matmul_limbs_equals_native(m, k, n):
    g = CSPRNG()
    a, b = g.integers((m, k)), g.integers((k, n))
    assert torch.equal(ring.matmul(a, b, limbs=True), a @ b)


def test_matmul_limbs_batched_vector_and_wide_inner():
    g = CSPRNG()
    a, b = g.integers((2, 3, 4097)), g.integers((4097, 2))
    assert torch.equal(ring.matmul(a, b, limbs=True), a @ b)
    v = g.integers((7,))
    m = g.integers((7, 3))
    assert torch.equal(ring.matmul(v, m, limbs=True), v @ m)
    assert torch.equal(ring.matmul(m.t(), v, limbs=True), m.t() @ v)
    with pytest.raises(TypeError):
        ring.matmul(a.float(), b)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (0, 1)), (3, 2)])
@pytest.mark.parametrize("limbs", [False, True])
@pytest.mark.parametrize("size", [(9, 8), (24, 23)])  # below and above IM2COL_MAX_ROWS
def test_conv2d_equals_torch_int64(stride, padding, limbs, size):
    g = CSPRNG()
    x, w = g.integers((2, 3, *size)), g.integers((4, 3, 3, 2))
    want = F.conv2d(x, w, stride=stride, padding=padding)
    matrix = ring.conv2d_weight_matrix(w)
    assert torch.equal(ring.conv2d(x, w, stride, padding, limbs=limbs), want)
    assert torch.equal(ring.conv2d(x, w, stride, padding, limbs=limbs, weight_matrix=matrix),
                       want)
    assert torch.equal(ring.conv2d_im2col(x, w, stride, padding, limbs=limbs), want)


def test_conv2d_shape_errors():
    g = CSPRNG()
    with pytest.raises(ValueError, match="channels"):
        ring.conv2d(g.integers((1, 2, 5, 5)), g.integers((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="larger"):
        ring.conv2d(g.integers((1, 1, 2, 2)), g.integers((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="N, C, H, W"):
        ring.conv2d(g.integers((1, 5, 5)), g.integers((1, 1, 3, 3)))
