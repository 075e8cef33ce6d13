"""Early-terminated DPF/DCF trees (a leaf table of 2^leaf outputs instead of the last levels)."""

from __future__ import annotations

import numpy as np
import pytest

from veil.fss import KeyReuseError, TreeKey, dcf_eval, dcf_gen, dpf_eval, dpf_gen, key_bits, tree


def _all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.arange(2**n, dtype=np.uint64)
    return np.repeat(grid, 2**n), np.tile(grid, 2**n)  # every (alpha, x)


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("n,ell,leaf,width", [(6, 1, 6, 1), (7, 1, 7, 1), (8, 1, 6, 1),
                                              (7, 8, 3, 1), (6, 16, 2, 2), (7, 1, 6, 2)])
def test_every_alpha_and_input(monkeypatch, kernels: bool, n: int, ell: int, leaf: int,
                               width: int) -> None:
    monkeypatch.setattr(tree, "USE_KERNELS", kernels and tree.USE_KERNELS)
    monkeypatch.setattr(tree, "USE_NATIVE_AES", kernels and tree.USE_NATIVE_AES)
    alpha, x = _all_pairs(n)
    beta = np.array([5, 3][:width], dtype=np.uint64)
    mask = np.uint64((1 << ell) - 1)
    for kind, gen, ev in (("dcf", dcf_gen, dcf_eval), ("dpf", dpf_gen, dpf_eval)):
        k0, k1 = gen(alpha, beta, n, ell, leaf=leaf)
        assert k0.levels == n - leaf and k0.bits == key_bits(kind, n, ell, width, leaf)
        # through both serialised forms
        k0 = TreeKey.from_parts(k0.to_parts(), kind, 0, n, ell, width, leaf)
        k1 = TreeKey.unpack(k1.pack(), kind, 1, n, ell, width, leaf)
        got = (ev(k0, x) + ev(k1, x)) & mask
        hit = (x < alpha) if kind == "dcf" else (x == alpha)
        assert np.array_equal(got, (hit.astype(np.uint64)[:, None] * beta) & mask), kind


def test_sizes_and_refusals() -> None:
    assert key_bits("dcf", 31, 1, leaf=7) == 24 * 131 + 128 + 128  # Orca's 16(n-7)+32 B + bits
    k0, _ = dcf_gen(np.array([3], np.uint64), 1, 31, 1, leaf=7)
    assert k0.nbytes == 425 and k0.pack().shape == (1, 425)
    dcf_eval(k0, np.array([2], np.uint64))
    with pytest.raises(KeyReuseError):
        k0.to_parts()
    with pytest.raises(ValueError, match="small outputs"):
        dcf_gen(np.array([3], np.uint64), 1, 31, 64, leaf=7)
    with pytest.raises(ValueError, match="whole 64-bit words"):
        dcf_gen(np.array([3], np.uint64), 1, 31, 1, leaf=5)
    with pytest.raises(ValueError, match="leaf must be"):
        dcf_gen(np.array([3], np.uint64), 1, 5, 1, leaf=6)
