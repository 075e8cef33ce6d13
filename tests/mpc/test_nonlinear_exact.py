"""Exactness of the FSS gates over the whole ring Z_2^64, on both transports.

The sign gate is exact for every 64-bit value (BCG+21): DReLU and ReLU are
checked on 10^6 random ring elements plus the ring's boundaries. Comparisons,
equality, min/max and abs are exact whenever the difference of the operands
does not wrap, i.e. for all operands in [-2^62, 2^62) (every fixed-point
encoding): checked on all pairs of the boundary values of that range.
AriaNN's original comparison is checked to show its documented error rate.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import veil
from veil.fss import gates
from veil.mpc import nonlinear

RING_BOUNDS = [0, 1, -1, 2, -2, 2**62, -(2**62), 2**62 - 1, 2**62 + 1, -(2**62) - 1,
               2**63 - 1, -(2**63), -(2**63) + 1, 2**63 - 2, 12345, -12345]
# Operands whose pairwise differences never wrap: the fixed-point range [-2^62, 2^62).
CMP_BOUNDS = [0, 1, -1, 2, -2, 2**62 - 1, 2**62 - 2, -(2**62), -(2**62) + 1, 2**61, -(2**61),
              7, -7]


def _split(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive shares of ``x`` (the test oracle plays the data owner; not secret)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(-(2**63), 2**63 - 1, x.shape, dtype=torch.int64, generator=g)  # not-secret
    return x - r, r


def _ring_values(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-(2**63), 2**63 - 1, (n,), dtype=torch.int64, generator=g)  # not-secret
    return torch.cat([torch.tensor(RING_BOUNDS, dtype=torch.int64), x])


def _relu_job(party, share):
    x = party.from_share(share, frac_bits=0)
    y, d = nonlinear.relu(x, return_drelu=True)
    return y.share, d.share, nonlinear.drelu(x).share


def _check_relu(x: torch.Tensor, results) -> None:
    (y0, d0, e0), (y1, d1, e1) = results
    want_d = (x >= 0).to(torch.int64)
    assert torch.equal(d0 + d1, want_d), "DReLU (from the ReLU gate) has errors"
    assert torch.equal(e0 + e1, want_d), "DReLU gate has errors"
    assert torch.equal(y0 + y1, torch.where(x >= 0, x, torch.zeros_like(x))), "ReLU has errors"


def test_sign_gate_exact_on_a_million_ring_elements() -> None:
    """The gate arithmetic that every secure ReLU/DReLU runs, on 10^6 + boundary values.

    Party-local code of both parties, opened by the oracle (no transport: the
    engine-level tests below run the same functions through both transports).
    """
    values = _ring_values(10**6, 11).numpy().view(np.uint64)
    rng = np.random.default_rng(12)  # not-secret: the oracle's share split
    errors = checked = 0
    for lo in range(0, values.shape[0], nonlinear.MAX_CHUNK):  # bounded memory, as the gates
        x = values[lo:lo + nonlinear.MAX_CHUNK]
        m0, m1 = gates.sign_keygen(x.shape[0], relu=True)
        r = np.frombuffer(rng.bytes(8 * x.shape[0]), np.uint64)
        xh = gates.sign_mask(m0, x - r)[0] + gates.sign_mask(m1, r)[0]
        o0, o1 = gates.sign_finish(m0, 0, xh), gates.sign_finish(m1, 1, xh)
        xi = x.view(np.int64)
        d, y = (o0["d"] + o1["d"]).view(np.int64), (o0["dx"] + o1["dx"]).view(np.int64)
        errors += np.count_nonzero(d != (xi >= 0)) + np.count_nonzero(y != np.where(xi >= 0, xi, 0))
        checked += x.shape[0]
    assert checked == 10**6 + len(RING_BOUNDS)
    assert errors == 0, f"{errors} DReLU/ReLU errors"


def test_drelu_relu_exact_through_the_engine_local() -> None:
    x = _ring_values(20_000, 21)
    _check_relu(x, veil.run(_relu_job, inputs=_split(x, 22), timeout=120))


def _cmp_job(party, shares):
    xs, ys = shares
    x, y = party.from_share(xs, frac_bits=0), party.from_share(ys, frac_bits=0)
    out = [x < y, x <= y, x > y, x >= y, x.eq(y), x.maximum(y), x.minimum(y), x.abs(),
           x < 5, x.eq(-7)]
    return [o.share for o in out]


def _check_cmp(x, y, results) -> None:
    got = [a + b for a, b in zip(*results, strict=True)]
    want = [x < y, x <= y, x > y, x >= y, x == y, torch.maximum(x, y), torch.minimum(x, y),
            x.abs(), x < 5, x == -7]
    names = ["lt", "le", "gt", "ge", "eq", "maximum", "minimum", "abs", "lt_public", "eq_public"]
    for name, g, w in zip(names, got, want, strict=True):
        assert torch.equal(g, w.to(torch.int64)), name


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    pairs = list(itertools.product(CMP_BOUNDS, repeat=2))
    return (torch.tensor([a for a, _ in pairs], dtype=torch.int64),
            torch.tensor([b for _, b in pairs], dtype=torch.int64))


def test_comparisons_exact_at_the_boundaries_local() -> None:
    x, y = _pairs()
    (x0, x1), (y0, y1) = _split(x, 13), _split(y, 14)
    _check_cmp(x, y, veil.run(_cmp_job, inputs=((x0, y0), (x1, y1)), timeout=60))


@pytest.mark.tcp
def test_gates_exact_over_tcp() -> None:
    x = _ring_values(2000, 15)
    _check_relu(x, veil.run(_relu_job, transport="tcp", inputs=_split(x, 16), timeout=120,
                            threads=1))
    a, b = _pairs()
    (a0, a1), (b0, b1) = _split(a, 17), _split(b, 18)
    _check_cmp(a, b, veil.run(_cmp_job, transport="tcp", inputs=((a0, b0), (a1, b1)),
                              timeout=120, threads=1))


def _ariann_gate(x: np.ndarray, method: str) -> np.ndarray:
    """Both parties of one sign gate, opened directly (the oracle's view): DReLU bits."""
    n = x.shape[0]
    m0, m1 = gates.sign_keygen(n, method=method)
    r = np.frombuffer(np.random.default_rng(0).bytes(8 * n), dtype=np.uint64)  # not-secret
    x0 = (x.view(np.uint64) - r)
    xh = gates.sign_mask(m0, x0)[0] + gates.sign_mask(m1, r)[0]
    return (gates.sign_finish(m0, 0, xh)["d"] + gates.sign_finish(m1, 1, xh)["d"])


def test_ariann_comparison_shows_its_documented_error_rate() -> None:
    """AriaNN's DIF comparison errs with probability |x| / 2^32; the exact gate never does."""
    rng = np.random.default_rng(1)  # test data, not secret
    n = 40_000
    mag = rng.integers(2**29, 2**30, n)
    x = (mag * rng.choice([-1, 1], n)).astype(np.int64)
    want = (x > 0).astype(np.uint64)  # AriaNN's gate computes 1{x > 0}
    errors = _ariann_gate(x, "ariann") != want
    expected = float(np.mean(np.abs(x))) / 2**32
    assert abs(errors.mean() - expected) < 0.01, (errors.mean(), expected)
    # the errors are the wrap-arounds: negative x with small masks, positive x with large ones
    assert errors.sum() > 1000
    assert not (_ariann_gate(x, "exact") != (x >= 0)).any()
    small = rng.integers(-255, 256, n).astype(np.int64)
    assert not (_ariann_gate(small, "ariann") != (small > 0)).any()


def _ariann_job(party, share):
    x = party.from_share(share, frac_bits=0)
    return nonlinear.relu(x, method="ariann").share, (x < 3).share


def test_ariann_option_is_wired_but_not_default() -> None:
    assert nonlinear.DEFAULT_METHOD == "exact"
    x = torch.tensor([-5, -1, 0, 1, 2, 3, 4, 1000], dtype=torch.int64)
    (y0, c0), (y1, c1) = veil.run(_ariann_job, inputs=_split(x, 19), timeout=60)
    assert torch.equal(y0 + y1, x.clamp(min=0))
    assert torch.equal(c0 + c1, (x < 3).to(torch.int64))
