"""Fused per-level tree kernels (numba), the fast path of :mod:`veil.fss.tree`.

AES stays in OpenSSL, one batched call per PRG output block and tree level;
everything else a level does to a key (select the child by the input bit,
apply the seed / control / value corrections, accumulate the output) is one
compiled pass over the keys instead of ~30 numpy passes. Both are exact
re-statements of the numpy reference path in :mod:`veil.fss.tree`, which is
used when numba is not installed and which the tests compare against.

Arrays: ``enc[j, k]`` is the raw ``AES_{k_j}`` output of seed ``k`` (block 0: left
child, 1: right child, 2..: value and control words), the MMO XOR with the seed
is done here. All arithmetic is on uint64 (numba promotes uint64 with int64 to
float, so every constant is typed).
"""

from __future__ import annotations

import numpy as np

try:  # numba is an accelerator, not a requirement: tree.py falls back to numpy.
    from numba import njit, types

    AVAILABLE = True
    # OpenSSL's EVP_EncryptUpdate(ctx, out, &outl, in, inl), resolved by name once
    # veil.fss.native has loaded libcrypto (only called when native.AVAILABLE).
    _evp_update = types.ExternalFunction(
        "EVP_EncryptUpdate",
        types.int32(types.uint64, types.uint64, types.uint64, types.uint64, types.int32))
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f

        return wrap if not args or not callable(args[0]) else args[0]


_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, inline="always")
def _word(enc, s, k, w):
    return enc[2 + (w >> 1), k, w & 1] ^ s[k, w & 1]


@njit(cache=True)
def _field_any(enc, s, k, off, ell):
    """A field of any width at any bit offset of the value/control words (slow path)."""
    w = off >> 6
    sh = off & 63
    v = _word(enc, s, k, w) >> np.uint64(sh)
    if sh + ell > 64:
        v |= _word(enc, s, k, w + 1) << np.uint64(64 - sh)
    if ell < 64:
        v &= (_ONE << np.uint64(ell)) - _ONE
    return v


# Layouts of the value/control words (same bits as the numpy path):
#   SMALL   2·m·ell + 2 <= 64: everything in word 0, fields by shifting one word;
#   ALIGNED ell = 64: value word j of side b is word b·m + j, control bits in word 2m;
#   ANY     otherwise.
SMALL, ALIGNED, ANY = 0, 1, 2


def layout(width: int, ell: int) -> int:
    """The word layout of a level for payload ``width`` × ``ell`` bits."""
    if 2 * width * ell + 2 <= 64:
        return SMALL
    return ALIGNED if ell == 64 else ANY


@njit(cache=True, inline="always")
def _value(enc, s, k, w0, mode, side, j, width, ell):
    if mode == 0:
        v = w0 >> np.uint64(side * width * ell + j * ell)
        if ell < 64:
            v &= (_ONE << np.uint64(ell)) - _ONE
        return v
    if mode == 1:
        return _word(enc, s, k, side * width + j)
    return _field_any(enc, s, k, side * width * ell + j * ell, ell)


@njit(cache=True, inline="always")
def _control(enc, s, k, w0, mode, side, width, ell):
    if mode == 0:
        return (w0 >> np.uint64(2 * width * ell + side)) & _ONE
    if mode == 1:
        return (_word(enc, s, k, 2 * width) >> np.uint64(side)) & _ONE
    return _field_any(enc, s, k, 2 * width * ell + side, 1)


@njit(cache=True, nogil=True)
def _eval_level_small(s, enc, x, sh, t, acc, scw, vcw, tl, tr, width, ell, dcf):  # pragma: no cover
    # The SMALL layout spelled out: LLVM keeps it tight only without the generic field code.
    pay = width * ell
    vmask = _ALL if ell == 64 else (_ONE << np.uint64(ell)) - _ONE
    for k in range(s.shape[0]):
        xb = (x[k] >> sh) & _ONE
        xm = _ZERO - xb
        tk = t[k]
        tm = _ZERO - tk
        w = enc[2, k, 0] ^ s[k, 0]
        if dcf:
            base = xb * np.uint64(pay)
            for j in range(width):
                v = (w >> (base + np.uint64(j * ell))) & vmask
                acc[k, j] += v + (vcw[k, j] & tm)
        tn = (w >> (np.uint64(2 * pay) + xb)) & _ONE
        tlk = np.uint64(tl[k])
        tn ^= (tlk ^ ((tlk ^ np.uint64(tr[k])) & xm)) & tk
        l0 = enc[0, k, 0]
        l1 = enc[0, k, 1]
        s[k, 0] ^= (l0 ^ ((l0 ^ enc[1, k, 0]) & xm)) ^ (scw[k, 0] & tm)
        s[k, 1] ^= (l1 ^ ((l1 ^ enc[1, k, 1]) & xm)) ^ (scw[k, 1] & tm)
        t[k] = tn


@njit(cache=True, nogil=True)
def _eval_level_aligned(s, enc, x, sh, t, acc, scw, vcw, tl, tr, width, dcf):  # pragma: no cover
    # ell = 64: value word j of side b is word b·width + j; control bits in word 2·width.
    tw = 2 * width
    for k in range(s.shape[0]):
        xb = (x[k] >> sh) & _ONE
        xm = _ZERO - xb
        tk = t[k]
        tm = _ZERO - tk
        side = np.int64(xb)
        if dcf:
            for j in range(width):
                w = side * width + j
                v = enc[2 + (w >> 1), k, w & 1] ^ s[k, w & 1]
                acc[k, j] += v + (vcw[k, j] & tm)
        tn = ((enc[2 + (tw >> 1), k, tw & 1] ^ s[k, tw & 1]) >> xb) & _ONE
        tlk = np.uint64(tl[k])
        tn ^= (tlk ^ ((tlk ^ np.uint64(tr[k])) & xm)) & tk
        l0 = enc[0, k, 0]
        l1 = enc[0, k, 1]
        s[k, 0] ^= (l0 ^ ((l0 ^ enc[1, k, 0]) & xm)) ^ (scw[k, 0] & tm)
        s[k, 1] ^= (l1 ^ ((l1 ^ enc[1, k, 1]) & xm)) ^ (scw[k, 1] & tm)
        t[k] = tn


@njit(cache=True, nogil=True)
def eval_level(s, enc, x, shift, t, acc, scw, vcw, tl, tr, width, ell, dcf,
               mode):  # pragma: no cover
    """One tree level of evaluation for every key, in place on ``s``, ``t``, ``acc``.

    Branch-free on the input and control bits: they are random, so branches on
    them would mispredict half the time.
    """
    sh = np.uint64(shift)
    if mode == SMALL:
        _eval_level_small(s, enc, x, sh, t, acc, scw, vcw, tl, tr, width, ell, dcf)
        return
    if mode == ALIGNED:
        _eval_level_aligned(s, enc, x, sh, t, acc, scw, vcw, tl, tr, width, dcf)
        return
    for k in range(s.shape[0]):
        xb = (x[k] >> sh) & _ONE
        xm = _ZERO - xb
        tk = t[k]
        tm = _ZERO - tk
        side = np.int64(xb)
        w0 = enc[2, k, 0] ^ s[k, 0]
        if dcf:
            for j in range(width):
                acc[k, j] += _value(enc, s, k, w0, mode, side, j, width, ell) + (vcw[k, j] & tm)
        tn = _control(enc, s, k, w0, mode, side, width, ell)
        tlk = np.uint64(tl[k])
        tn ^= (tlk ^ ((tlk ^ np.uint64(tr[k])) & xm)) & tk
        l0 = enc[0, k, 0]
        l1 = enc[0, k, 1]
        s[k, 0] ^= (l0 ^ ((l0 ^ enc[1, k, 0]) & xm)) ^ (scw[k, 0] & tm)
        s[k, 1] ^= (l1 ^ ((l1 ^ enc[1, k, 1]) & xm)) ^ (scw[k, 1] & tm)
        t[k] = tn


@njit(cache=True, nogil=True)
def _gen_level_small(s0, s1, enc0, enc1, alpha, sh, t0, t1, valpha, beta, width, ell, dcf,
                     scw, vcw, tl, tr):  # pragma: no cover
    # The SMALL layout spelled out (see _eval_level_small).
    pay = np.uint64(width * ell)
    mask = _ALL if ell == 64 else (_ONE << np.uint64(ell)) - _ONE
    for k in range(s0.shape[0]):
        a = (alpha[k] >> sh) & _ONE
        am = _ZERO - a  # all-ones: keep right, lose left
        keep = np.int64(a)
        lose = 1 - keep
        w00 = enc0[2, k, 0] ^ s0[k, 0]
        w10 = enc1[2, k, 0] ^ s1[k, 0]
        l00 = enc0[0, k, 0] ^ s0[k, 0]
        l01 = enc0[0, k, 1] ^ s0[k, 1]
        r00 = enc0[1, k, 0] ^ s0[k, 0]
        r01 = enc0[1, k, 1] ^ s0[k, 1]
        l10 = enc1[0, k, 0] ^ s1[k, 0]
        l11 = enc1[0, k, 1] ^ s1[k, 1]
        r10 = enc1[1, k, 0] ^ s1[k, 0]
        r11 = enc1[1, k, 1] ^ s1[k, 1]
        k00 = l00 ^ ((l00 ^ r00) & am)
        k01 = l01 ^ ((l01 ^ r01) & am)
        k10 = l10 ^ ((l10 ^ r10) & am)
        k11 = l11 ^ ((l11 ^ r11) & am)
        cw0 = (l00 ^ r00 ^ k00) ^ (l10 ^ r10 ^ k10)
        cw1 = (l01 ^ r01 ^ k01) ^ (l11 ^ r11 ^ k11)
        tl0 = (w00 >> (np.uint64(2) * pay)) & _ONE
        tr0 = (w00 >> (np.uint64(2) * pay + _ONE)) & _ONE
        tl1 = (w10 >> (np.uint64(2) * pay)) & _ONE
        tr1 = (w10 >> (np.uint64(2) * pay + _ONE)) & _ONE
        cw_tl = tl0 ^ tl1 ^ a ^ _ONE
        cw_tr = tr0 ^ tr1 ^ a
        t0k = t0[k]
        t1k = t1[k]
        if dcf:
            sign = _ONE | (_ZERO - t1k)  # (-1)^{t_1} in Z_2^64
            for j in range(width):
                vl0 = (w00 >> (np.uint64(lose) * pay + np.uint64(j * ell))) & mask
                vl1 = (w10 >> (np.uint64(lose) * pay + np.uint64(j * ell))) & mask
                vk0 = (w00 >> (np.uint64(keep) * pay + np.uint64(j * ell))) & mask
                vk1 = (w10 >> (np.uint64(keep) * pay + np.uint64(j * ell))) & mask
                cw = sign * (vl1 - vl0 - valpha[k, j] + (beta[k, j] & am))
                cw &= mask
                valpha[k, j] = valpha[k, j] - vk1 + vk0 + sign * cw
                vcw[k, j] = cw
        cw_tk = cw_tl ^ ((cw_tl ^ cw_tr) & am)
        tk0 = tl0 ^ ((tl0 ^ tr0) & am)
        tk1 = tl1 ^ ((tl1 ^ tr1) & am)
        m0 = _ZERO - t0k
        m1 = _ZERO - t1k
        s0[k, 0] = k00 ^ (cw0 & m0)
        s0[k, 1] = k01 ^ (cw1 & m0)
        s1[k, 0] = k10 ^ (cw0 & m1)
        s1[k, 1] = k11 ^ (cw1 & m1)
        t0[k] = tk0 ^ (t0k & cw_tk)
        t1[k] = tk1 ^ (t1k & cw_tk)
        scw[k, 0] = cw0
        scw[k, 1] = cw1
        tl[k] = np.uint8(cw_tl)
        tr[k] = np.uint8(cw_tr)


@njit(cache=True, nogil=True)
def _gen_level_aligned(s0, s1, enc0, enc1, alpha, sh, t0, t1, valpha, beta, width, ell, dcf,
                       scw, vcw, tl, tr):  # pragma: no cover
    """One tree level of key generation for every key pair, in place on seeds/bits/valpha."""
    # The ALIGNED layout spelled out (see _eval_level_aligned).
    tw = 2 * width
    mask = _ALL if ell == 64 else (_ONE << np.uint64(ell)) - _ONE
    for k in range(s0.shape[0]):
        a = (alpha[k] >> sh) & _ONE
        am = _ZERO - a  # all-ones: keep right, lose left
        keep = np.int64(a)
        lose = 1 - keep
        l00 = enc0[0, k, 0] ^ s0[k, 0]
        l01 = enc0[0, k, 1] ^ s0[k, 1]
        r00 = enc0[1, k, 0] ^ s0[k, 0]
        r01 = enc0[1, k, 1] ^ s0[k, 1]
        l10 = enc1[0, k, 0] ^ s1[k, 0]
        l11 = enc1[0, k, 1] ^ s1[k, 1]
        r10 = enc1[1, k, 0] ^ s1[k, 0]
        r11 = enc1[1, k, 1] ^ s1[k, 1]
        k00 = l00 ^ ((l00 ^ r00) & am)
        k01 = l01 ^ ((l01 ^ r01) & am)
        k10 = l10 ^ ((l10 ^ r10) & am)
        k11 = l11 ^ ((l11 ^ r11) & am)
        cw0 = (l00 ^ r00 ^ k00) ^ (l10 ^ r10 ^ k10)
        cw1 = (l01 ^ r01 ^ k01) ^ (l11 ^ r11 ^ k11)
        tl0 = _word(enc0, s0, k, tw) & _ONE
        tr0 = (_word(enc0, s0, k, tw) >> _ONE) & _ONE
        tl1 = _word(enc1, s1, k, tw) & _ONE
        tr1 = (_word(enc1, s1, k, tw) >> _ONE) & _ONE
        cw_tl = tl0 ^ tl1 ^ a ^ _ONE
        cw_tr = tr0 ^ tr1 ^ a
        t0k = t0[k]
        t1k = t1[k]
        if dcf:
            sign = _ONE | (_ZERO - t1k)  # (-1)^{t_1} in Z_2^64
            for j in range(width):
                vl0 = _word(enc0, s0, k, lose * width + j)
                vl1 = _word(enc1, s1, k, lose * width + j)
                vk0 = _word(enc0, s0, k, keep * width + j)
                vk1 = _word(enc1, s1, k, keep * width + j)
                cw = sign * (vl1 - vl0 - valpha[k, j] + (beta[k, j] & am))
                cw &= mask
                valpha[k, j] = valpha[k, j] - vk1 + vk0 + sign * cw
                vcw[k, j] = cw
        cw_tk = cw_tl ^ ((cw_tl ^ cw_tr) & am)
        tk0 = tl0 ^ ((tl0 ^ tr0) & am)
        tk1 = tl1 ^ ((tl1 ^ tr1) & am)
        m0 = _ZERO - t0k
        m1 = _ZERO - t1k
        s0[k, 0] = k00 ^ (cw0 & m0)
        s0[k, 1] = k01 ^ (cw1 & m0)
        s1[k, 0] = k10 ^ (cw0 & m1)
        s1[k, 1] = k11 ^ (cw1 & m1)
        t0[k] = tk0 ^ (t0k & cw_tk)
        t1[k] = tk1 ^ (t1k & cw_tk)
        scw[k, 0] = cw0
        scw[k, 1] = cw1
        tl[k] = np.uint8(cw_tl)
        tr[k] = np.uint8(cw_tr)


@njit(cache=True, nogil=True)
def gen_level(s0, s1, enc0, enc1, alpha, shift, t0, t1, valpha, beta, width, ell, dcf,
              mode, scw, vcw, tl, tr):  # pragma: no cover
    """One tree level of key generation for every key pair, in place on seeds/bits/valpha."""
    sh = np.uint64(shift)
    if mode == SMALL:
        _gen_level_small(s0, s1, enc0, enc1, alpha, sh, t0, t1, valpha, beta, width, ell, dcf,
                         scw, vcw, tl, tr)
        return
    if mode == ALIGNED:
        _gen_level_aligned(s0, s1, enc0, enc1, alpha, sh, t0, t1, valpha, beta, width, ell, dcf,
                           scw, vcw, tl, tr)
        return
    mask = _ALL if ell == 64 else (_ONE << np.uint64(ell)) - _ONE
    for k in range(s0.shape[0]):
        a = (alpha[k] >> sh) & _ONE
        am = _ZERO - a  # all-ones: keep right, lose left
        keep = np.int64(a)
        lose = 1 - keep
        w00 = enc0[2, k, 0] ^ s0[k, 0]
        w10 = enc1[2, k, 0] ^ s1[k, 0]
        l00 = enc0[0, k, 0] ^ s0[k, 0]
        l01 = enc0[0, k, 1] ^ s0[k, 1]
        r00 = enc0[1, k, 0] ^ s0[k, 0]
        r01 = enc0[1, k, 1] ^ s0[k, 1]
        l10 = enc1[0, k, 0] ^ s1[k, 0]
        l11 = enc1[0, k, 1] ^ s1[k, 1]
        r10 = enc1[1, k, 0] ^ s1[k, 0]
        r11 = enc1[1, k, 1] ^ s1[k, 1]
        k00 = l00 ^ ((l00 ^ r00) & am)
        k01 = l01 ^ ((l01 ^ r01) & am)
        k10 = l10 ^ ((l10 ^ r10) & am)
        k11 = l11 ^ ((l11 ^ r11) & am)
        cw0 = (l00 ^ r00 ^ k00) ^ (l10 ^ r10 ^ k10)
        cw1 = (l01 ^ r01 ^ k01) ^ (l11 ^ r11 ^ k11)
        tl0 = _control(enc0, s0, k, w00, mode, 0, width, ell)
        tr0 = _control(enc0, s0, k, w00, mode, 1, width, ell)
        tl1 = _control(enc1, s1, k, w10, mode, 0, width, ell)
        tr1 = _control(enc1, s1, k, w10, mode, 1, width, ell)
        cw_tl = tl0 ^ tl1 ^ a ^ _ONE
        cw_tr = tr0 ^ tr1 ^ a
        t0k = t0[k]
        t1k = t1[k]
        if dcf:
            sign = _ONE | (_ZERO - t1k)  # (-1)^{t_1} in Z_2^64
            for j in range(width):
                vl0 = _value(enc0, s0, k, w00, mode, lose, j, width, ell)
                vl1 = _value(enc1, s1, k, w10, mode, lose, j, width, ell)
                vk0 = _value(enc0, s0, k, w00, mode, keep, j, width, ell)
                vk1 = _value(enc1, s1, k, w10, mode, keep, j, width, ell)
                cw = sign * (vl1 - vl0 - valpha[k, j] + (beta[k, j] & am))
                cw &= mask
                valpha[k, j] = valpha[k, j] - vk1 + vk0 + sign * cw
                vcw[k, j] = cw
        cw_tk = cw_tl ^ ((cw_tl ^ cw_tr) & am)
        tk0 = tl0 ^ ((tl0 ^ tr0) & am)
        tk1 = tl1 ^ ((tl1 ^ tr1) & am)
        m0 = _ZERO - t0k
        m1 = _ZERO - t1k
        s0[k, 0] = k00 ^ (cw0 & m0)
        s0[k, 1] = k01 ^ (cw1 & m0)
        s1[k, 0] = k10 ^ (cw0 & m1)
        s1[k, 1] = k11 ^ (cw1 & m1)
        t0[k] = tk0 ^ (t0k & cw_tk)
        t1[k] = tk1 ^ (t1k & cw_tk)
        scw[k, 0] = cw0
        scw[k, 1] = cw1
        tl[k] = np.uint8(cw_tl)
        tr[k] = np.uint8(cw_tr)


# -- whole walks with OpenSSL called from compiled code (see veil.fss.native) ----------------------
@njit(cache=True, nogil=True)
def ecb_blocks(ctxs, seeds, enc, outl):  # pragma: no cover
    """Raw ``AES_{k_j}`` of every seed row into ``enc[j, :N]`` for each context ``j``.

    ``seeds`` ``(N, 2)`` and every ``enc[j]`` C-contiguous uint64; ``outl`` a 1-element
    int32 scratch. Returns 0, or -1 if OpenSSL reported an error.
    """
    nbytes = np.int32(16 * seeds.shape[0])
    if nbytes == 0:
        return 0
    for j in range(ctxs.shape[0]):
        dst = enc[j]
        if _evp_update(ctxs[j], dst.ctypes.data, outl.ctypes.data, seeds.ctypes.data,
                       nbytes) != 1 or outl[0] != nbytes:
            return -1
    return 0


@njit(cache=True, nogil=True)
def eval_walk(s, x, t, acc, scw, vcw, tl, tr, ctxs, enc, outl, width, ell, dcf,
              mode):  # pragma: no cover
    """All ``n = scw.shape[0]`` levels of one chunk: AES (OpenSSL) and :func:`eval_level`.

    Same arrays as :func:`eval_level` with the level axis first on ``scw``,
    ``vcw``, ``tl``, ``tr``; runs without the GIL. Returns 0, or -1 on an
    OpenSSL error.
    """
    n = scw.shape[0]
    for i in range(n):
        if ecb_blocks(ctxs, s, enc, outl) != 0:
            return -1
        eval_level(s, enc, x, n - 1 - i, t, acc, scw[i], vcw[i], tl[i], tr[i], width, ell,
                   dcf, mode)
    return 0


@njit(cache=True, nogil=True)
def gen_walk(s0, s1, alpha, t0, t1, valpha, beta, scw, vcw, tl, tr, ctxs, enc0, enc1, outl,
             width, ell, dcf, mode):  # pragma: no cover
    """All ``n = scw.shape[0]`` levels of one keygen chunk: AES (OpenSSL) and :func:`gen_level`.

    Both parties' seeds ``s0``, ``s1`` are expanded per level (``enc0``, ``enc1``);
    same arrays as :func:`gen_level` with the level axis first on ``scw``, ``vcw``,
    ``tl``, ``tr``; runs without the GIL. Returns 0, or -1 on an OpenSSL error.
    """
    n = scw.shape[0]
    for i in range(n):
        if ecb_blocks(ctxs, s0, enc0, outl) != 0 or ecb_blocks(ctxs, s1, enc1, outl) != 0:
            return -1
        gen_level(s0, s1, enc0, enc1, alpha, n - 1 - i, t0, t1, valpha, beta, width, ell, dcf,
                  mode, scw[i], vcw[i], tl[i], tr[i])
    return 0


@njit(cache=True, nogil=True)
def unpack_control(bits, off, n):  # pragma: no cover
    """Control-bit corrections ``tl``, ``tr`` ``(n, N)`` uint8 from packed key bits.

    ``bits`` ``(N, b)`` uint8, little bit order per key (:meth:`TreeKey.to_parts`):
    ``tl`` of level ``i`` is bit ``off + i``, ``tr`` bit ``off + n + i``. Same as
    ``np.unpackbits`` and two transposed copies, in one pass over key blocks.
    """
    num = bits.shape[0]
    tl = np.empty((n, num), np.uint8)
    tr = np.empty((n, num), np.uint8)
    for k0 in range(0, num, 64):
        k1 = min(k0 + 64, num)
        for i in range(n):
            b = off + i
            c = off + n + i
            bb, bs = b >> 3, b & 7
            cb, cs = c >> 3, c & 7
            for k in range(k0, k1):
                tl[i, k] = (bits[k, bb] >> bs) & 1
                tr[i, k] = (bits[k, cb] >> cs) & 1
    return tl, tr


@njit(cache=True, inline="always")
def _push(row, pos, acc, nacc, v, w):  # pragma: no cover
    """Append the ``w`` low bits of ``v`` to a little-endian bit stream; flush whole words."""
    acc |= v << np.uint64(nacc)
    if nacc + w >= 64:
        for b in range(8):
            row[pos + b] = np.uint8((acc >> np.uint64(8 * b)) & np.uint64(0xFF))
        pos += 8
        acc = (v >> np.uint64(64 - nacc)) if nacc > 0 else _ZERO
        nacc = nacc + w - 64
    else:
        nacc += w
    return pos, acc, nacc


@njit(cache=True, nogil=True)
def pack_bits(vcw, cw_last, tl, tr, ell, with_values, last_ell):  # pragma: no cover
    """The ``bits`` part of :meth:`TreeKey.to_parts` in one pass, ``(N, b)`` uint8.

    Per key, little bit order: when ``with_values``, the value corrections level
    by level (``vcw`` ``(n, N, m_v)``) and the final words (``cw_last`` ``(N, m)``),
    ``ell`` bits each (``last_ell`` for the final words: 64 for a packed leaf table);
    then the ``n`` bits of ``tl`` and the ``n`` of ``tr``
    ``(n, N)``. Same bytes as ``np.packbits`` of the concatenated bit rows.
    """
    n, num = tl.shape
    mv, m = vcw.shape[2], cw_last.shape[1]
    nvbits = (n * mv * ell + m * last_ell) if with_values else 0
    nbytes = (nvbits + 2 * n + 7) // 8
    out = np.empty((num, nbytes), np.uint8)
    vmask = _ALL if ell == 64 else (_ONE << np.uint64(ell)) - _ONE
    lmask = _ALL if last_ell == 64 else (_ONE << np.uint64(last_ell)) - _ONE
    for k in range(num):
        row = out[k]
        pos = 0
        acc = _ZERO
        nacc = 0
        if with_values:
            for i in range(n):
                for j in range(mv):
                    pos, acc, nacc = _push(row, pos, acc, nacc, vcw[i, k, j] & vmask, ell)
            for j in range(m):
                pos, acc, nacc = _push(row, pos, acc, nacc, cw_last[k, j] & lmask, last_ell)
        for i in range(n):
            pos, acc, nacc = _push(row, pos, acc, nacc, np.uint64(tl[i, k]) & _ONE, 1)
        for i in range(n):
            pos, acc, nacc = _push(row, pos, acc, nacc, np.uint64(tr[i, k]) & _ONE, 1)
        b = 0
        while pos < nbytes:
            row[pos] = np.uint8((acc >> np.uint64(8 * b)) & np.uint64(0xFF))
            pos += 1
            b += 1
    return out
