"""The GGM tree shared by the DPF (BGI 2016) and the DCF (BCG+21), vectorised over keys.

Each tree level expands every seed with the fixed-key MMO PRG into a left and a
right child seed (one AES block each) and, in the same pass, one or more blocks
holding the two control bits and, for the DCF, the two value words of the level
(``2 + 2·m·ell`` bits). Keygen walks all ``N`` key pairs level by level (both
parties' seeds in one AES call); evaluation walks all ``N`` inputs level by level.
No Python loop ever runs over keys, only over the ``n`` levels.

This module is the engine; use :mod:`veil.fss.dcf` and :mod:`veil.fss.dpf`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from veil.csprng import CSPRNG, default_generator
from veil.fss import kernels, native
from veil.fss.key import TreeKey, _field_bits, check_leaf, leaf_words
from veil.fss.prg import MMO, per_thread

#: Use the fused numba kernels (set to False to run the numpy reference path).
USE_KERNELS = kernels.AVAILABLE
#: With the kernels, walk each evaluation chunk in one GIL-free call with OpenSSL's AES
#: (:mod:`veil.fss.native`); False: one kernel call and ``cryptography`` AES per level.
USE_NATIVE_AES = USE_KERNELS and native.AVAILABLE

ONE = np.uint64(1)
# Fixed-key families: seeds and level words use keys 0.., the final Convert uses its own.
_CONVERT_FIRST = 1 << 20
EVAL_CHUNK = 1 << 13  # keys per evaluation pass (temporaries stay in cache; measured)
GEN_CHUNK = 1 << 14  # key pairs per keygen pass


def _ring_mask(ell: int) -> np.uint64:
    return np.uint64((1 << ell) - 1)


def _blocks_for(bits: int) -> int:
    return max(1, -(-bits // 128))


def _prg(count: int, first: int) -> MMO:
    return per_thread(MMO, count, first)


def _fields(words: np.ndarray, offset: int, count: int, ell: int) -> np.ndarray:
    """``count`` consecutive ``ell``-bit fields starting at bit ``offset`` of each row."""
    if count == 0:
        return np.zeros((words.shape[0], 0), dtype=np.uint64)
    if ell == 64 and offset % 64 == 0:
        w = offset // 64
        return words[:, w : w + count]
    offs = offset + ell * np.arange(count)
    w, sh = offs // 64, (offs % 64).astype(np.uint64)
    lo = words[:, w] >> sh
    spill = (offs % 64) + ell > 64
    if spill.any():
        hi_shift = ((64 - offs % 64) % 64).astype(np.uint64)
        hi = np.where(spill, words[:, np.minimum(w + 1, words.shape[1] - 1)] << hi_shift, 0)
        lo = lo | hi.astype(np.uint64)
    return lo & _ring_mask(ell) if ell < 64 else lo


class _Level:
    """The PRG expansion of one tree level for a given payload shape."""

    def __init__(self, width: int, ell: int) -> None:
        self.width, self.ell = width, ell
        self.vblocks = _blocks_for(2 + 2 * width * ell)
        self.prg = _prg(2 + self.vblocks, 0)
        # One value component and everything in the first 64-bit word: a shift-based fast path
        # (same key layout as the general path).
        self.small = width <= 1 and 2 * width * ell + 2 <= 64

    def expand_small(self, seeds: np.ndarray):
        """Fast path: children seeds and the first word of the value/control block."""
        s_left = self.prg.expand(seeds, 0)
        s_right = self.prg.expand(seeds, 1)
        word = self.prg.expand(seeds, 2)[:, 0]
        return s_left, s_right, np.ascontiguousarray(word)

    def expand(self, seeds: np.ndarray):
        """Children seeds, value words and control bits of every seed."""
        m, ell = self.width, self.ell
        s_left = self.prg.expand(seeds, 0)
        s_right = self.prg.expand(seeds, 1)
        words = np.zeros((seeds.shape[0], 2 * self.vblocks + 1), dtype=np.uint64)
        words[:, :-1] = self.prg.expand_many(seeds, 2, self.vblocks)
        v_left = _fields(words, 0, m, ell)
        v_right = _fields(words, m * ell, m, ell)
        t_left = _fields(words, 2 * m * ell, 1, 1)[:, 0]
        t_right = _fields(words, 2 * m * ell + 1, 1, 1)[:, 0]
        return s_left, s_right, v_left, v_right, t_left, t_right


def _convert(seeds: np.ndarray, width: int, ell: int) -> np.ndarray:
    """Map final seeds to group elements of ``(Z_{2^ell})^width`` (PRG-expanded)."""
    blocks = _blocks_for(width * ell)
    prg = _prg(blocks, _CONVERT_FIRST)
    words = np.zeros((seeds.shape[0], 2 * blocks + 1), dtype=np.uint64)
    words[:, :-1] = prg.expand_many(seeds, 0, blocks)
    return _fields(words, 0, width, ell)


def _prefix_words(a: np.ndarray, words: int, point: bool) -> np.ndarray:
    """``(N, words)`` bit tables: bits ``j < a`` set (``point``: only bit ``j = a``)."""
    base = 64 * np.arange(words, dtype=np.int64)[None, :]
    c = a.astype(np.int64)[:, None] - base
    if point:
        inside = (c >= 0) & (c < 64)
        return np.where(inside, ONE << (c.clip(0, 63).astype(np.uint64)), np.uint64(0))
    full = c >= 64
    part = (ONE << c.clip(0, 63).astype(np.uint64)) - ONE
    return np.where(full, np.uint64(0xFFFFFFFFFFFFFFFF), np.where(c > 0, part, np.uint64(0)))


def _pack_fields(fields: np.ndarray, ell: int) -> np.ndarray:
    """``(N, F)`` ``ell``-bit fields -> ``(N, F·ell/64)`` uint64 words, little-endian."""
    bits = np.packbits(_field_bits(fields, ell), axis=1, bitorder="little")
    return np.ascontiguousarray(bits).view(np.uint64)


def _final_cw(dcf: bool, s: np.ndarray, t1: np.ndarray, v_alpha: np.ndarray, beta: np.ndarray,
              ell: int, leaf: int, alpha_lo: np.ndarray | None) -> np.ndarray:
    """The output correction from both parties' last seeds ``s`` ``(2N, 2)``.

    On the special path the two parties' outputs must add up to the target ``T``: 0
    for a DCF without early termination (``x = alpha`` is not below ``alpha``), ``beta``
    for a DPF, and with a leaf table of ``2^leaf`` entries ``T[j] = beta·1{j < alpha_lo}``
    (DCF) or ``beta·1{j = alpha_lo}`` (DPF). The accumulated ``v_alpha`` is subtracted.
    Without a leaf: ``(N, m)`` fields; with one: the packed table ``(N, words)``.
    """
    num, width = beta.shape
    sign = ONE - (t1 << ONE)
    if not leaf:
        conv = _convert(s, width, ell)
        target = -v_alpha if dcf else beta.copy()
        target += conv[num:]
        target -= conv[:num]
        target *= _widen(sign, width)
        target &= _ring_mask(ell)
        return target
    words = leaf_words(ell, width, leaf)
    blocks = _blocks_for(64 * words)
    conv = _prg(blocks, _CONVERT_FIRST).expand_many(s, 0, blocks)[:, :words]
    if ell == 1 and width == 1:
        # Z_2: sums are XORs and the sign is 1, so the table stays packed throughout.
        table = _prefix_words(alpha_lo, words, point=not dcf)
        table &= (np.uint64(0) - (beta[:, :1] & ONE))
        if dcf:
            table ^= np.uint64(0) - (v_alpha[:, :1] & ONE)
        table ^= conv[:num]
        table ^= conv[num:]
        return table
    entries = width << leaf
    j = np.arange(1 << leaf, dtype=np.uint64)[None, :]
    hit = (j < alpha_lo[:, None]) if dcf else (j == alpha_lo[:, None])
    target = (hit.astype(np.uint64)[:, :, None] * beta[:, None, :])
    if dcf:
        target -= v_alpha[:, None, :]
    target = target.reshape(num, entries)
    padded = np.zeros((2 * num, words + 1), np.uint64)  # a spare word for _fields' spill read
    padded[:, :words] = conv
    fields = _fields(padded, 0, entries, ell)
    target += fields[num:]
    target -= fields[:num]
    target *= _widen(sign, entries)
    target &= _ring_mask(ell)
    return _pack_fields(target, ell)


def _leaf_pick(words: np.ndarray, idx: np.ndarray, width: int, ell: int) -> np.ndarray:
    """Entry ``idx[k]`` ``(N, m)`` of each row's packed table of ``m``-vectors of ``ell`` bits."""
    rows = np.arange(words.shape[0])
    out = np.empty((words.shape[0], width), dtype=np.uint64)
    for j in range(width):
        off = (idx * np.uint64(width) + np.uint64(j)) * np.uint64(ell)
        w = (off >> np.uint64(6)).astype(np.intp)
        sh = off & np.uint64(63)
        v = words[rows, w] >> sh
        if 64 % ell:  # a field may straddle two words
            nxt = words[rows, np.minimum(w + 1, words.shape[1] - 1)]
            spill = sh + np.uint64(ell) > np.uint64(64)
            v |= np.where(spill, nxt << ((np.uint64(64) - sh) & np.uint64(63)), np.uint64(0))
        out[:, j] = v & _ring_mask(ell) if ell < 64 else v
    return out


def _leaf_output(s: np.ndarray, t: np.ndarray, cw_last: np.ndarray, x_lo: np.ndarray | None,
                 width: int, ell: int, leaf: int) -> np.ndarray:
    """``Convert(s)[x_lo] + t·cw_last[x_lo]`` ``(N, m)`` (the whole word when ``leaf = 0``)."""
    if not leaf:
        return _convert(s, width, ell) + _widen(t, width) * cw_last
    words = leaf_words(ell, width, leaf)
    blocks = _blocks_for(64 * words)
    conv = _prg(blocks, _CONVERT_FIRST).expand_many(s, 0, blocks)
    return _leaf_pick(conv, x_lo, width, ell) + _widen(t, width) * _leaf_pick(cw_last, x_lo,
                                                                              width, ell)


def _select(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``b`` where ``mask`` is all-ones, ``a`` where it is zero (branch-free).

    ``mask`` must have the full shape of ``a``: numpy's broadcasting of an
    ``(N, 1)`` mask is several times slower than a materialised one.
    """
    out = a ^ b
    out &= mask
    out ^= a
    return out


def _widen(mask: np.ndarray, width: int) -> np.ndarray:
    """Repeat a per-key ``(N,)`` word into a full ``(N, width)`` array."""
    if width == 1:
        return mask[:, None]
    return np.repeat(mask, width).reshape(-1, width)


def _random_seeds(rng: CSPRNG, num: int) -> np.ndarray:
    return np.frombuffer(rng.random_bytes(16 * num), dtype=np.uint64).reshape(num, 2).copy()


def _gen_chunk_fused(kind, alpha, beta, n, ell, rng, out=None, leaf=0, alpha_lo=None):
    """Fused keygen of one chunk; writes into ``out = (key0, key1, lo)`` when given.

    ``n`` is the number of tree levels and ``alpha`` their bits (``alpha >> leaf``);
    ``alpha_lo`` the low ``leaf`` bits for the leaf table.
    """
    num, width = beta.shape
    dcf = kind == "dcf"
    lw = width if dcf else 0
    level = _Level(lw, ell)
    blocks = 2 + level.vblocks
    if out is not None:  # root seeds already drawn into the keys
        seed0, seed1 = out[0].seed[out[2]:out[2] + num], out[1].seed[out[2]:out[2] + num]
    else:
        seed0, seed1 = _random_seeds(rng, num), _random_seeds(rng, num)
    s0, s1 = seed0.copy(), seed1.copy()
    t0, t1 = np.zeros(num, np.uint64), np.ones(num, np.uint64)
    v_alpha = np.zeros((num, width), dtype=np.uint64)
    beta = np.ascontiguousarray(beta & _ring_mask(ell))
    if out is None:
        scw = np.empty((n, num, 2), dtype=np.uint64)
        vcw = np.zeros((n, num, lw), dtype=np.uint64)
        tl = np.empty((n, num), dtype=np.uint8)
        tr = np.empty((n, num), dtype=np.uint8)
    else:
        k0, _, lo = out
        scw, vcw = k0.scw[:, lo:lo + num], k0.vcw[:, lo:lo + num]
        tl, tr = k0.tl[:, lo:lo + num], k0.tr[:, lo:lo + num]
    mode = kernels.layout(lw, ell)
    enc0 = np.empty((blocks, num + 1, 2), dtype=np.uint64)
    enc1 = np.empty((blocks, num + 1, 2), dtype=np.uint64)
    alpha = np.ascontiguousarray(alpha)
    if USE_NATIVE_AES:
        # All n levels in one compiled call, without the GIL (see veil.fss.native).
        ctx = native.contexts(blocks, 0)
        err = kernels.gen_walk(s0, s1, alpha, t0, t1, v_alpha, beta, scw, vcw, tl, tr,
                               ctx.ptrs, enc0, enc1, np.zeros(1, np.int32), lw, ell, dcf, mode)
        if err:
            raise RuntimeError("OpenSSL AES failed during FSS key generation")
    for i in range(0 if USE_NATIVE_AES else n):
        for j in range(blocks):
            level.prg.encrypt_into(s0, j, enc0[j])
            level.prg.encrypt_into(s1, j, enc1[j])
        kernels.gen_level(s0, s1, enc0, enc1, alpha, n - 1 - i, t0, t1, v_alpha, beta, lw, ell,
                          dcf, mode, scw[i], vcw[i], tl[i], tr[i])
    cw_last = _final_cw(dcf, np.concatenate([s0, s1]), t1, v_alpha, beta, ell, leaf, alpha_lo)
    if out is not None:
        k0, k1, lo = out
        k0.cw_last[lo:lo + num] = cw_last
        return None
    return tuple(
        TreeKey(kind, b, n + leaf, ell, width, seed, scw, vcw, tl, tr, cw_last, leaf=leaf)
        for b, seed in ((0, seed0), (1, seed1))
    )


def _gen_chunk(
    kind: str,
    alpha: np.ndarray,
    beta: np.ndarray,
    n: int,
    ell: int,
    rng: CSPRNG | None = None,
    leaf: int = 0,
    alpha_lo: np.ndarray | None = None,
) -> tuple[TreeKey, TreeKey]:
    """Keys of ``N`` point (``kind="dpf"``) or comparison (``"dcf"``) functions.

    ``alpha``: ``(N,)`` uint64 with ``n`` significant bits (the tree levels; the low
    ``leaf`` bits are in ``alpha_lo``); ``beta``: ``(N, m)`` uint64.
    """
    if isinstance(rng, tuple):  # root seeds drawn by the caller
        seed0, seed1 = rng
    else:
        rng = rng or default_generator()
        if USE_KERNELS:
            return _gen_chunk_fused(kind, alpha, beta, n, ell, rng, leaf=leaf, alpha_lo=alpha_lo)
        seed0, seed1 = _random_seeds(rng, alpha.shape[0]), _random_seeds(rng, alpha.shape[0])
    num, width = beta.shape
    dcf = kind == "dcf"
    mask = _ring_mask(ell)
    level = _Level(width if dcf else 0, ell)
    payload = width * ell if dcf else 0
    s = np.concatenate([seed0, seed1])
    t = np.concatenate([np.zeros(num, np.uint64), np.ones(num, np.uint64)])
    v_alpha = np.zeros((num, width), dtype=np.uint64)
    beta = beta & mask
    scw = np.empty((n, num, 2), dtype=np.uint64)
    vcw = np.zeros((n, num, width if dcf else 0), dtype=np.uint64)
    tl = np.empty((n, num), dtype=np.uint8)
    tr = np.empty((n, num), dtype=np.uint8)
    for i in range(n):
        a = (alpha >> np.uint64(n - 1 - i)) & ONE
        amask = np.concatenate([-a, -a])  # all-ones where alpha_i = 1 (keep right)
        amask2 = _widen(amask, 2)
        if level.small:
            s_l, s_r, word = level.expand_small(s)
            t_l = (word >> np.uint64(2 * payload)) & ONE
            t_r = (word >> np.uint64(2 * payload + 1)) & ONE
            if dcf:
                a2 = np.concatenate([a, a])
                v_keep = ((word >> (a2 * np.uint64(payload))) & mask)[:, None]
                v_lose = ((word >> ((a2 ^ ONE) * np.uint64(payload))) & mask)[:, None]
        else:
            s_l, s_r, v_l, v_r, t_l, t_r = level.expand(s)
            if dcf:
                v_lose = _select(v_r, v_l, _widen(amask, width))
                v_keep = v_l + v_r - v_lose
        s_lose = _select(s_r, s_l, amask2)
        s_keep = s_l ^ s_r ^ s_lose
        cw_s = s_lose[:num] ^ s_lose[num:]
        cw_tl = t_l[:num] ^ t_l[num:] ^ a ^ ONE
        cw_tr = t_r[:num] ^ t_r[num:] ^ a
        if dcf:
            sign = _widen(ONE - (t[num:] << ONE), width)  # (-1)^{t_1}
            cw_v = sign * (v_lose[num:] - v_lose[:num] - v_alpha)
            cw_v += _widen(a, width) * sign * beta
            cw_v &= mask
            v_alpha = v_alpha - v_keep[num:] + v_keep[:num] + sign * cw_v
            vcw[i] = cw_v
        t_keep = _select(t_l, t_r, amask)
        cw_t_keep = _select(cw_tl, cw_tr, -a)
        cw_s2 = np.concatenate([cw_s, cw_s])
        cw_s2 &= _widen(-t, 2)
        s = s_keep
        s ^= cw_s2
        t = t_keep ^ (t & np.concatenate([cw_t_keep, cw_t_keep]))
        scw[i], tl[i], tr[i] = cw_s, cw_tl, cw_tr
    cw_last = _final_cw(dcf, s, t[num:], v_alpha, beta, ell, leaf, alpha_lo)
    keys = tuple(
        TreeKey(kind, b, n + leaf, ell, width, seed, scw, vcw, tl, tr, cw_last, leaf=leaf)
        for b, seed in ((0, seed0), (1, seed1))
    )
    return keys  # type: ignore[return-value]


def workers() -> int:
    """Threads used by key generation: every core this process may run on.

    ``VEIL_FSS_THREADS`` overrides it (1: generate on the calling thread only).
    """
    env = os.environ.get("VEIL_FSS_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != size:  # noqa: SLF001
            _POOL = ThreadPoolExecutor(size, thread_name_prefix="veil-fss-gen")
        return _POOL


def gen(
    kind: str,
    alpha: np.ndarray,
    beta: np.ndarray,
    n: int,
    ell: int,
    rng: CSPRNG | None = None,
    leaf: int = 0,
) -> tuple[TreeKey, TreeKey]:
    """Keys of ``N`` point (``kind="dpf"``) or comparison (``"dcf"``) functions.

    ``alpha``: ``(N,)`` uint64 with ``n`` significant bits; ``beta``: ``(N, m)`` uint64;
    ``leaf``: early-termination depth (the tree has ``n - leaf`` levels). Generated in
    cache-sized chunks, on every core (:func:`workers`): the compiled walk releases the
    GIL, and each chunk writes straight into the keys' transport buffers.
    """
    rng = rng or default_generator()
    num = alpha.shape[0]
    width = beta.shape[1]
    check_leaf(n, ell, leaf, width)
    levels = n - leaf
    alpha_hi = alpha >> np.uint64(leaf)
    alpha_lo = alpha & _ring_mask(leaf) if leaf else None
    # Keys are built in the buffers of their transport form (TreeKey.to_parts): each party's
    # (root seed | seed corrections) rows, and one buffer of public value corrections.
    seeds = [np.empty((levels + 1, num, 2), np.uint64) for _ in (0, 1)]
    if kind == "dcf" and not leaf:
        values = np.zeros((levels + 1, num, width), np.uint64)
        vcw, cw_last = values[:levels], values[levels]
    elif leaf:
        values = None
        vcw = np.zeros((levels, num, width if kind == "dcf" else 0), np.uint64)
        cw_last = np.zeros((num, leaf_words(ell, width, leaf)), np.uint64)
    else:
        values = np.zeros((1, num, width), np.uint64)
        vcw = np.zeros((levels, num, width if kind == "dcf" else 0), np.uint64)
        cw_last = values[0]
    tl, tr = np.empty((levels, num), np.uint8), np.empty((levels, num), np.uint8)
    out = [TreeKey(kind, b, n, ell, width, seeds[b][0], seeds[b][1:], vcw, tl, tr,
                   cw_last, seeds_buf=seeds[b], values_buf=values if ell == 64 else None,
                   leaf=leaf) for b in (0, 1)]
    # The root seeds come from the caller's generator here, in order, so the threads below
    # never share it.
    out[0].seed[:] = _random_seeds(rng, num)
    out[1].seed[:] = _random_seeds(rng, num)

    def chunk(lo: int) -> None:
        hi = min(lo + GEN_CHUNK, num)
        a_lo = alpha_lo[lo:hi] if leaf else None
        if USE_KERNELS:
            _gen_chunk_fused(kind, alpha_hi[lo:hi], beta[lo:hi], levels, ell, None,
                             (out[0], out[1], lo), leaf, a_lo)
        else:
            parts = _gen_chunk(kind, alpha_hi[lo:hi], beta[lo:hi], levels, ell,
                               (out[0].seed[lo:hi], out[1].seed[lo:hi]), leaf, a_lo)
            for key, part in zip(out, parts, strict=True):
                key.scw[:, lo:hi] = part.scw
                key.vcw[:, lo:hi] = part.vcw
                key.tl[:, lo:hi], key.tr[:, lo:hi] = part.tl, part.tr
                key.cw_last[lo:hi] = part.cw_last
        out[1].scw[:, lo:hi] = out[0].scw[:, lo:hi]  # the seed corrections are in both keys

    starts = range(0, num, GEN_CHUNK)
    threads = min(workers(), len(starts))
    if threads > 1 and USE_NATIVE_AES:
        list(_pool(threads).map(chunk, starts))
    else:
        for lo in starts:
            chunk(lo)
    return out[0], out[1]


def _eval_chunk_fused(key: TreeKey, x: np.ndarray, lo: int, hi: int,
                      x_lo: np.ndarray | None) -> np.ndarray:
    dcf = key.kind == "dcf"
    width, ell, n = key.width, key.ell, key.levels
    lw = width if dcf else 0
    level = _Level(lw, ell)
    blocks = 2 + level.vblocks
    s = key.seed[lo:hi].copy()
    x = np.ascontiguousarray(x[lo:hi])
    t = np.full(hi - lo, key.party, dtype=np.uint64)
    acc = np.zeros((hi - lo, width), dtype=np.uint64)
    enc = np.empty((blocks, hi - lo + 1, 2), dtype=np.uint64)
    mode = kernels.layout(lw, ell)
    if USE_NATIVE_AES:
        # The whole walk in one compiled call, without the GIL (see veil.fss.native).
        ctx = native.contexts(blocks, 0)
        err = kernels.eval_walk(s, x, t, acc, key.scw[:, lo:hi], key.vcw[:, lo:hi],
                                key.tl[:, lo:hi], key.tr[:, lo:hi], ctx.ptrs, enc,
                                np.zeros(1, np.int32), lw, ell, dcf, mode)
        if err:
            raise RuntimeError("OpenSSL AES failed during FSS evaluation")
    for i in range(0 if USE_NATIVE_AES else n):
        for j in range(blocks):
            level.prg.encrypt_into(s, j, enc[j])
        kernels.eval_level(s, enc, x, n - 1 - i, t, acc, key.scw[i, lo:hi], key.vcw[i, lo:hi],
                           key.tl[i, lo:hi], key.tr[i, lo:hi], lw, ell, dcf, mode)
    acc += _leaf_output(s, t, key.cw_last[lo:hi], None if x_lo is None else x_lo[lo:hi],
                        width, ell, key.leaf)
    if key.party:
        acc = -acc
    return acc & _ring_mask(ell)


def _eval_chunk(key: TreeKey, x: np.ndarray, lo: int, hi: int,
                x_lo: np.ndarray | None = None) -> np.ndarray:
    """This party's outputs for inputs ``lo:hi``: ``x`` holds the tree bits (``x >> leaf``),
    ``x_lo`` the low ``leaf`` bits."""
    if USE_KERNELS:
        return _eval_chunk_fused(key, x, lo, hi, x_lo)
    dcf = key.kind == "dcf"
    width, ell, n = key.width, key.ell, key.levels
    level = _Level(width if dcf else 0, ell)
    s = key.seed[lo:hi]
    x = x[lo:hi]
    t = np.full(hi - lo, key.party, dtype=np.uint64)
    acc = np.zeros((hi - lo, width), dtype=np.uint64)
    tlr = (key.tl[:, lo:hi] | (key.tr[:, lo:hi] << 1)).astype(np.uint64)
    payload = width * ell if dcf else 0
    vmask = _ring_mask(ell)
    for i in range(n):
        xb = (x >> np.uint64(n - 1 - i)) & ONE
        xm = -xb
        corr = key.scw[i, lo:hi] & _widen(-t, 2)
        if level.small:
            s_l, s_r, word = level.expand_small(s)
            if dcf:
                v = (word >> (xb * np.uint64(payload))) & vmask
                v += t * key.vcw[i, lo:hi, 0]
                acc[:, 0] += v
            t_next = (word >> (xb + np.uint64(2 * payload))) & ONE
        else:
            s_l, s_r, v_l, v_r, t_l, t_r = level.expand(s)
            if dcf:
                acc += _select(v_l, v_r, _widen(xm, width))
                acc += _widen(t, width) * key.vcw[i, lo:hi]
            t_next = _select(t_l, t_r, xm)
        s = _select(s_l, s_r, _widen(xm, 2))
        s ^= corr
        t_next ^= t & ((tlr[i] >> xb) & ONE)
        t = t_next
    acc += _leaf_output(s, t, key.cw_last[lo:hi], None if x_lo is None else x_lo[lo:hi],
                        width, ell, key.leaf)
    if key.party:
        acc = -acc
    return acc & _ring_mask(ell)


def evaluate(key: TreeKey, x: np.ndarray) -> np.ndarray:
    """This party's output shares ``(N, m)`` at the public inputs ``x`` (consumes the key)."""
    x = np.asarray(x)
    if x.dtype != np.uint64 or x.shape != (key.count,):
        raise ValueError(
            f"inputs must be uint64 of shape ({key.count},) for this key batch, got "
            f"{x.dtype} {x.shape}"
        )
    if key.n < 64 and (x >> np.uint64(key.n)).any():
        raise ValueError(f"inputs exceed the key's {key.n}-bit domain")
    key.consume()
    x_lo = (x & _ring_mask(key.leaf)) if key.leaf else None
    x = x >> np.uint64(key.leaf) if key.leaf else x
    out = np.empty((key.count, key.width), dtype=np.uint64)
    for lo in range(0, key.count, EVAL_CHUNK):
        hi = min(lo + EVAL_CHUNK, key.count)
        out[lo:hi] = _eval_chunk(key, x, lo, hi, x_lo)
    return out
