"""DPF and DCF: exhaustive n = 8, random wide inputs, payload shapes, key format and hygiene."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from veil.csprng import CSPRNG
from veil.fss import KeyReuseError, TreeKey, dcf_eval, dcf_gen, dpf_eval, dpf_gen, key_bits


def _rand(rng: CSPRNG, count: int, bits: int) -> np.ndarray:
    raw = np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64)
    return raw >> np.uint64(64 - bits) if bits < 64 else raw.copy()


def _sum(k0: TreeKey, k1: TreeKey, x: np.ndarray, ell: int) -> np.ndarray:
    mask = np.uint64((1 << ell) - 1) if ell < 64 else np.uint64(2**64 - 1)
    ev = dcf_eval if k0.kind == "dcf" else dpf_eval
    return (ev(k0, x) + ev(k1, x)) & mask


ALL8 = np.arange(256, dtype=np.uint64)
ALPHA8, X8 = np.repeat(ALL8, 256), np.tile(ALL8, 256)


@pytest.mark.parametrize("ell", [1, 8, 64])
def test_dcf_exhaustive_n8(ell: int) -> None:
    beta = np.uint64(0x9E3779B97F4A7C15) & np.uint64((1 << ell) - 1 if ell < 64 else 2**64 - 1)
    k0, k1 = dcf_gen(ALPHA8, beta.astype(np.uint64).view(np.int64) if ell == 64 else beta, 8, ell)
    out = _sum(k0, k1, X8, ell)[:, 0]
    np.testing.assert_array_equal(out, np.where(X8 < ALPHA8, beta, np.uint64(0)))


@pytest.mark.parametrize("ell", [1, 8, 64])
def test_dpf_exhaustive_n8(ell: int) -> None:
    beta = np.uint64(0xA5) & np.uint64((1 << ell) - 1 if ell < 64 else 2**64 - 1)
    k0, k1 = dpf_gen(ALPHA8, beta, 8, ell)
    out = _sum(k0, k1, X8, ell)[:, 0]
    np.testing.assert_array_equal(out, np.where(X8 == ALPHA8, beta, np.uint64(0)))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 64), ell=st.integers(1, 64), width=st.integers(1, 3),
       seed=st.binary(min_size=16, max_size=16))
def test_dcf_dpf_random_widths(n: int, ell: int, width: int, seed: bytes) -> None:
    rng = CSPRNG(seed)
    count = 64
    alpha = _rand(rng, count, n)
    x = _rand(rng, count, n)
    x[:8] = alpha[:8]  # the boundary x == alpha
    x[8:16] = alpha[8:16] - np.uint64(1) & np.uint64((1 << n) - 1 if n < 64 else 2**64 - 1)
    beta = _rand(rng, count * width, ell).reshape(count, width)
    for kind, pred in (("dcf", x < alpha), ("dpf", x == alpha)):
        gen = dcf_gen if kind == "dcf" else dpf_gen
        k0, k1 = gen(alpha, beta, n, ell, rng)
        assert k0.bits == key_bits(kind, n, ell, width)
        out = _sum(k0, k1, x, ell)
        np.testing.assert_array_equal(out, np.where(pred[:, None], beta, np.uint64(0)))


def test_key_size_matches_bcg21_formula() -> None:
    assert key_bits("dcf", 31, 1) == 4190  # BCG+21 DReLU key for 32-bit inputs
    for n, ell, width in [(31, 1, 1), (63, 64, 2), (7, 5, 3), (64, 64, 1)]:
        k0, _ = dcf_gen(np.zeros(3, np.uint64), np.ones(width, np.uint64), n, ell)
        packed = k0.pack()
        formula = n * (128 + width * ell + 2) + 128 + width * ell
        assert k0.bits == formula and packed.shape == (3, (formula + 7) // 8)


@pytest.mark.parametrize("kind,ell,width", [("dcf", 1, 1), ("dcf", 64, 2), ("dcf", 13, 2),
                                            ("dpf", 64, 1), ("dpf", 3, 1)])
def test_pack_roundtrip_evaluates_identically(kind: str, ell: int, width: int) -> None:
    rng = CSPRNG(b"k" * 16)
    n = 20
    alpha, x = _rand(rng, 50, n), _rand(rng, 50, n)
    beta = _rand(rng, 50 * width, ell).reshape(50, width)
    gen = dcf_gen if kind == "dcf" else dpf_gen
    k0, k1 = gen(alpha, beta, n, ell, rng)
    u0 = TreeKey.unpack(k0.pack(), kind, 0, n, ell, width)
    u1 = TreeKey.unpack(k1.pack(), kind, 1, n, ell, width)
    for a, b in ((k0, u0), (k1, u1)):
        for name in ("seed", "scw", "vcw", "tl", "tr", "cw_last"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    pred = x < alpha if kind == "dcf" else x == alpha
    np.testing.assert_array_equal(_sum(u0, u1, x, ell), np.where(pred[:, None], beta, 0))


def test_unpack_rejects_wrong_length() -> None:
    k0, _ = dcf_gen(np.zeros(2, np.uint64), 1, 8, 1)
    with pytest.raises(ValueError, match="must be uint8 of shape"):
        TreeKey.unpack(k0.pack()[:, :-1], "dcf", 0, 8, 1)


def test_key_reuse_raises() -> None:
    k0, _ = dcf_gen(np.array([3], np.uint64), 1, 8, 1)
    dcf_eval(k0, np.array([1], np.uint64))
    with pytest.raises(KeyReuseError):
        dcf_eval(k0, np.array([1], np.uint64))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="domain"):
        dcf_gen(np.array([256], np.uint64), 1, 8, 1)
    with pytest.raises(ValueError, match="1..64"):
        dcf_gen(np.array([1], np.uint64), 1, 65, 1)
    with pytest.raises(ValueError, match="1..64"):
        dcf_gen(np.array([1], np.uint64), 1, 8, 0)
    with pytest.raises(ValueError, match="integers"):
        dcf_gen(np.array([1], np.uint64), 1.5, 8, 8)
    k0, _ = dcf_gen(np.array([3, 4], np.uint64), 1, 8, 1)
    with pytest.raises(ValueError, match="shape"):
        dcf_eval(k0, np.array([1], np.uint64))
    with pytest.raises(ValueError, match="domain"):
        dcf_eval(k0, np.array([1, 300], np.uint64))
    with pytest.raises(ValueError, match="DPF"):
        dpf_eval(k0, np.array([1, 2], np.uint64))


def test_key_format_does_not_depend_on_alpha() -> None:
    """Same size for every alpha, and a single key's bits look uniform (frequency test)."""
    sizes = set()
    for alpha in (0, 1, 2**31, 2**63 - 1, 2**64 - 1):
        k0, k1 = dcf_gen(np.array([alpha], np.uint64), 1, 64, 64)
        sizes |= {k0.pack().shape, k1.pack().shape}
    assert sizes == {(1, (key_bits("dcf", 64, 64) + 7) // 8)}
    # One key for alpha = 0 (the most structured threshold): every bit of its packed
    # form except the final partial byte goes into a monobit frequency test.
    for alpha in (0, 2**64 - 1):
        k0, k1 = dcf_gen(np.array([alpha], np.uint64), 1, 64, 64)
        for key in (k0, k1):
            bits = np.unpackbits(key.pack()[0])
            # control-bit corrections are 2 bits/level; everything else is PRG output or masked
            z = abs(int(bits.sum()) * 2 - bits.size) / np.sqrt(bits.size)
            p = 2 * stats.norm.sf(z)
            assert p > 1e-4, f"frequency test failed (p={p:.2e})"


@pytest.mark.parametrize("n,ell,width", [(12, 1, 1), (12, 64, 2), (12, 13, 3), (12, 7, 5)])
def test_numpy_reference_path_agrees(monkeypatch, n: int, ell: int, width: int) -> None:
    """The fused kernels and the numpy reference path make interoperable keys."""
    from veil.fss import tree

    rng = CSPRNG(b"r" * 16)
    alpha, x = _rand(rng, 300, n), _rand(rng, 300, n)
    beta = _rand(rng, 300 * width, ell).reshape(300, width)
    for gen_fused, eval_fused in ((True, False), (False, True), (False, False)):
        for kind, pred in (("dcf", x < alpha), ("dpf", x == alpha)):
            gen = dcf_gen if kind == "dcf" else dpf_gen
            monkeypatch.setattr(tree, "USE_KERNELS", gen_fused)
            k0, k1 = gen(alpha, beta, n, ell, rng)
            monkeypatch.setattr(tree, "USE_KERNELS", eval_fused)
            out = _sum(k0, k1, x, ell)
            np.testing.assert_array_equal(out, np.where(pred[:, None], beta, np.uint64(0)))


@pytest.mark.parametrize("n,ell,width", [(12, 1, 1), (63, 64, 2), (12, 13, 3), (20, 7, 5)])
def test_native_aes_walk_agrees(monkeypatch, n: int, ell: int, width: int) -> None:
    """The GIL-free walk (OpenSSL AES from the kernels) gives the per-level path's shares."""
    from veil.fss import native, tree

    if not (tree.USE_KERNELS and native.AVAILABLE):
        pytest.skip("numba or libcrypto not available")
    rng = CSPRNG(b"w" * 16)
    num = tree.EVAL_CHUNK + 123  # more than one chunk
    alpha, x = _rand(rng, num, n), _rand(rng, num, n)
    beta = _rand(rng, num * width, ell).reshape(num, width)
    for kind, gen, ev in (("dcf", dcf_gen, dcf_eval), ("dpf", dpf_gen, dpf_eval)):
        k0, k1 = gen(alpha, beta, n, ell, rng)
        k0b, k1b = (TreeKey.from_parts(k.to_parts(), kind, k.party, n, ell, width)
                    for k in (k0, k1))
        monkeypatch.setattr(tree, "USE_NATIVE_AES", True)
        fast = [ev(k0, x), ev(k1, x)]
        monkeypatch.setattr(tree, "USE_NATIVE_AES", False)
        slow = [ev(k0b, x), ev(k1b, x)]
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
        pred = x < alpha if kind == "dcf" else x == alpha
        total = (fast[0] + fast[1]) & ((np.uint64(1) << np.uint64(ell)) - np.uint64(1)
                                       if ell < 64 else np.uint64(0xFFFFFFFFFFFFFFFF))
        np.testing.assert_array_equal(total, np.where(pred[:, None], beta, np.uint64(0)))


@pytest.mark.parametrize("n,ell,width", [(12, 1, 1), (31, 1, 1), (63, 64, 2), (12, 13, 3),
                                         (20, 7, 5), (32, 32, 3)])
def test_native_aes_keygen_walk_bit_identical(monkeypatch, n: int, ell: int, width: int) -> None:
    """The GIL-free keygen walk makes the same keys, bit for bit, as the per-level path."""
    from veil.fss import native, tree

    if not (tree.USE_KERNELS and native.AVAILABLE):
        pytest.skip("numba or libcrypto not available")
    rng = CSPRNG(b"g" * 16)
    num = tree.GEN_CHUNK + 77  # more than one chunk
    alpha = _rand(rng, num, n)
    beta = _rand(rng, num * width, ell).reshape(num, width)
    for gen in (dcf_gen, dpf_gen):
        keys = {}
        for label, kern, nat in (("walk", True, True), ("level", True, False),
                                 ("numpy", False, False)):
            monkeypatch.setattr(tree, "USE_KERNELS", kern)
            monkeypatch.setattr(tree, "USE_NATIVE_AES", nat)
            keys[label] = gen(alpha, beta, n, ell, CSPRNG(b"k" * 16))  # same root randomness
        for label in ("level", "numpy"):
            for a, b in zip(keys["walk"], keys[label], strict=True):
                np.testing.assert_array_equal(a.pack(), b.pack())
                pa, pb = a.to_parts(), b.to_parts()
                for f in ("seeds", "values", "bits"):
                    np.testing.assert_array_equal(pa[f], pb[f])


@pytest.mark.parametrize("kind,n,ell,width", [("dcf", 31, 1, 1), ("dcf", 63, 64, 2),
                                              ("dcf", 12, 13, 3), ("dcf", 31, 32, 3),
                                              ("dcf", 5, 63, 4), ("dpf", 64, 64, 1),
                                              ("dpf", 10, 7, 2), ("dpf", 31, 1, 1)])
def test_to_parts_pack_kernel_agrees(monkeypatch, kind: str, n: int, ell: int,
                                     width: int) -> None:
    """to_parts packs the same bits with the compiled pass as with numpy's packbits."""
    from veil.fss import kernels

    if not kernels.AVAILABLE:
        pytest.skip("numba not available")
    rng = CSPRNG(b"q" * 16)
    alpha = _rand(rng, 333, n)
    beta = _rand(rng, 333 * width, ell).reshape(333, width)
    k0, k1 = (dcf_gen if kind == "dcf" else dpf_gen)(alpha, beta, n, ell, rng)
    views = [TreeKey.from_parts(k.to_parts(), kind, k.party, n, ell, width) for k in (k0, k1)]
    fast = [k.to_parts() for k in (k0, k1, *views)]
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    slow = [k.to_parts() for k in (k0, k1, *views)]
    for a, b in zip(fast, slow, strict=True):
        for f in ("seeds", "values", "bits"):
            np.testing.assert_array_equal(a[f], b[f])


@pytest.mark.parametrize("kind,n,ell,width", [("dcf", 63, 64, 2), ("dcf", 12, 13, 3),
                                              ("dpf", 64, 64, 1), ("dpf", 10, 7, 2)])
def test_from_parts_control_bits_kernel_agrees(monkeypatch, kind: str, n: int, ell: int,
                                               width: int) -> None:
    """from_parts unpacks the control bits the same with and without the kernel."""
    from veil.fss import kernels

    rng = CSPRNG(b"p" * 16)
    alpha = _rand(rng, 77, n)
    beta = _rand(rng, 77 * width, ell).reshape(77, width)
    k0, _ = (dcf_gen if kind == "dcf" else dpf_gen)(alpha, beta, n, ell, rng)
    parts = k0.to_parts()
    got = TreeKey.from_parts(parts, kind, 0, n, ell, width)
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    ref = TreeKey.from_parts(parts, kind, 0, n, ell, width)
    for name in ("tl", "tr", "vcw", "cw_last", "seed", "scw"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    np.testing.assert_array_equal(got.tl, k0.tl)
    np.testing.assert_array_equal(got.tr, k0.tr)
