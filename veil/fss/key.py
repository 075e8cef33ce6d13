"""Batched FSS tree keys (DPF and DCF), their exact sizes and bit-packed format.

A :class:`TreeKey` holds one party's keys for ``N`` independent point or
comparison functions, field by field as numpy arrays laid out level-major (so
that evaluating level ``i`` of all ``N`` keys reads contiguous memory: measured
about twice as fast as key-major rows):

=========  ===================  =============================================
field      shape, dtype         meaning
=========  ===================  =============================================
seed       (N, 2) uint64        root seed s^(0) (λ = 128 bits)
scw        (n, N, 2) uint64     seed correction word per level
vcw        (n, N, m) uint64     value correction word per level (DCF only)
tl, tr     (n, N) uint8         control-bit correction words per level
cw_last    (N, m) uint64        final output correction word
=========  ===================  =============================================

The output group is ``(Z_{2^ell})^m``: ``m`` components of ``ell`` bits.
A DCF key has ``n(λ + m·ell + 2) + λ + m·ell`` bits (BCG+21, Eurocrypt 2021),
a DPF key ``n(λ + 2) + λ + m·ell`` bits; :meth:`TreeKey.pack` stores exactly
that many bits per key (rounded up to whole bytes), whatever ``α`` is.

Keys are single-use: evaluating a key marks it consumed and a second
evaluation raises :class:`KeyReuseError`, as does packing a consumed key (so a
used key cannot come back as a fresh one through serialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from veil.fss import kernels

LAMBDA = 128


class KeyReuseError(RuntimeError):
    """Raised when single-use FSS key material is evaluated a second time."""


#: Largest supported early-termination depth (a leaf table of ``2^leaf`` entries).
MAX_LEAF = 10


def check_leaf(n: int, ell: int, leaf: int, width: int = 1) -> None:
    """Refuse an early-termination depth the key layout does not support."""
    if not 0 <= leaf <= min(n, MAX_LEAF):
        raise ValueError(f"leaf must be in 0..min(n, {MAX_LEAF}) = {min(n, MAX_LEAF)}, got {leaf}")
    if leaf and ell == 64:
        raise ValueError("early termination (leaf > 0) is for small outputs (ell < 64): a "
                         "64-bit leaf table costs more than the levels it saves")
    if leaf and (width * ell << leaf) % 64:
        raise ValueError(f"a leaf table of 2^{leaf} entries of {width}x{ell} bits must fill "
                         "whole 64-bit words")


def leaf_words(ell: int, width: int, leaf: int) -> int:
    """64-bit words of a packed leaf table (0 without early termination)."""
    return (width * ell << leaf) // 64 if leaf else 0


def key_bits(kind: str, n: int, ell: int, width: int = 1, leaf: int = 0) -> int:
    """Exact size in bits of one key (one party, one function).

    ``leaf`` is the early-termination depth: the tree stops ``leaf`` levels early and
    the last seed expands into a table of ``2^leaf`` outputs (Boyle-Gilboa-Ishai's
    early termination; Orca's DCF uses ``leaf = 7`` with a 1-bit output: one AES block).

    Example
    -------
    >>> key_bits("dcf", 31, 1)   # the BCG+21 DReLU key for 32-bit inputs
    4190
    >>> key_bits("dcf", 31, 1, leaf=7)   # the same with early termination
    3400
    """
    payload = width * ell
    levels = n - leaf
    if kind == "dcf":
        return levels * (LAMBDA + payload + 2) + LAMBDA + (payload << leaf)
    if kind == "dpf":
        return levels * (LAMBDA + 2) + LAMBDA + (payload << leaf)
    raise ValueError(f"unknown key kind {kind!r}")


def _field_bits(values: np.ndarray, ell: int) -> np.ndarray:
    """(N, F) uint64 -> (N, F*ell) uint8 bits, little-endian within each field."""
    n, f = values.shape
    if ell == 1:
        return (values & np.uint64(1)).astype(np.uint8)
    nbytes = (ell + 7) // 8
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, f, 8)[:, :, :nbytes]
    bits = np.unpackbits(raw, axis=-1, bitorder="little")
    return bits[:, :, :ell].reshape(n, f * ell)


def _bits_field(bits: np.ndarray, f: int, ell: int) -> np.ndarray:
    """Inverse of :func:`_field_bits`: (N, F*ell) bits -> (N, F) uint64."""
    n = bits.shape[0]
    if ell == 1:
        return bits.astype(np.uint64)
    nbytes = (ell + 7) // 8
    full = np.zeros((n, f, 8 * nbytes), dtype=np.uint8)
    full[:, :, :ell] = bits.reshape(n, f, ell)
    raw = np.zeros((n, f, 8), dtype=np.uint8)
    raw[:, :, :nbytes] = np.packbits(full, axis=-1, bitorder="little")
    return raw.view(np.uint64).reshape(n, f)


@dataclass
class TreeKey:
    """One party's batch of ``N`` DPF or DCF keys (see the module docstring).

    With early termination (``leaf > 0``) the tree has ``n - leaf`` levels and
    ``cw_last`` is the leaf table's correction, packed: ``(N, w)`` uint64 words,
    entry ``j`` component ``i`` at bit ``(j·m + i)·ell``.
    """

    kind: str
    party: int
    n: int
    ell: int
    width: int
    seed: np.ndarray
    scw: np.ndarray
    vcw: np.ndarray
    tl: np.ndarray
    tr: np.ndarray
    cw_last: np.ndarray
    #: Optional buffers that the fields are views of, in the layout of :meth:`to_parts`.
    seeds_buf: np.ndarray | None = field(default=None, repr=False)
    values_buf: np.ndarray | None = field(default=None, repr=False)
    #: Early-termination depth: ``n - leaf`` tree levels, ``cw_last`` the packed leaf table.
    leaf: int = 0
    _consumed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("dcf", "dpf"):
            raise ValueError(f"unknown key kind {self.kind!r}")
        if self.party not in (0, 1):
            raise ValueError("party must be 0 or 1")
        if not 1 <= self.n <= 64 or not 1 <= self.ell <= 64:
            raise ValueError(f"need 1 <= n, ell <= 64, got n={self.n}, ell={self.ell}")
        check_leaf(self.n, self.ell, self.leaf, self.width)

    @property
    def levels(self) -> int:
        """Tree levels walked (``n - leaf``)."""
        return self.n - self.leaf

    @property
    def count(self) -> int:
        """Number of keys in the batch."""
        return self.seed.shape[0]

    @property
    def bits(self) -> int:
        """Exact size in bits of one key of this batch."""
        return key_bits(self.kind, self.n, self.ell, self.width, self.leaf)

    @property
    def nbytes(self) -> int:
        """Bytes of one packed key."""
        return (self.bits + 7) // 8

    def consume(self) -> None:
        """Mark the batch used; raise :class:`KeyReuseError` if it already was."""
        if self._consumed:
            raise KeyReuseError(
                f"FSS {self.kind} key batch (party {self.party}, {self.count} keys) was already "
                "evaluated; keys are single-use, ask the dealer for fresh material"
            )
        self._consumed = True

    @property
    def consumed(self) -> bool:
        """Whether the batch has been evaluated."""
        return self._consumed

    def _refuse_if_consumed(self) -> None:
        # Single use must survive serialisation: a consumed batch packed and unpacked again
        # would come back as a fresh key.
        if self._consumed:
            raise KeyReuseError(
                f"FSS {self.kind} key batch (party {self.party}) was already evaluated; a used "
                "key is never serialised again (keys are single-use)")

    # -- bit-packed format ----------------------------------------------------------------
    def _value_bits(self, with_leaf: bool = True) -> np.ndarray:
        """(N, b) uint8 bits of the value corrections and the final word(s), in key order
        (``with_leaf=False``: without an early-termination table)."""
        if not self.leaf:
            return _field_bits(self._per_key_values(), self.ell)
        parts = [_field_bits(np.ascontiguousarray(self.cw_last), 64)] if with_leaf else []
        if self.kind == "dcf":
            vcw = self.vcw.transpose(1, 0, 2).reshape(self.count, -1)
            parts.insert(0, _field_bits(vcw, self.ell))
        return np.concatenate(parts, axis=1)

    def _per_key_values(self) -> np.ndarray:
        """(N, nvals) uint64: value corrections level by level, then the final word."""
        num = self.count
        if self.kind == "dcf":
            vcw = self.vcw.transpose(1, 0, 2).reshape(num, -1)
            return np.concatenate([vcw, self.cw_last], axis=1)
        return np.ascontiguousarray(self.cw_last)

    def pack(self) -> np.ndarray:
        """The keys as bytes, ``(N, nbytes)`` uint8: exactly :attr:`bits` bits per key.

        Layout per key: root seed and the ``n`` seed corrections (16 bytes each),
        then the value corrections and final word (whole bytes when ``ell`` is a
        multiple of 8, otherwise bit-packed together with the control bits),
        then the ``2n`` control-bit corrections.
        """
        self._refuse_if_consumed()
        num = self.count
        seeds = np.concatenate([self.seed[None], self.scw], axis=0).transpose(1, 0, 2)
        parts = [np.ascontiguousarray(seeds).reshape(num, -1).view(np.uint8)]
        vals = None if self.leaf else self._per_key_values()
        tbits = np.concatenate([self.tl.T, self.tr.T], axis=1)
        if self.ell % 8 == 0 and not self.leaf:
            byte_vals = np.ascontiguousarray(vals).view(np.uint8).reshape(num, vals.shape[1], 8)
            parts.append(byte_vals[:, :, : self.ell // 8].reshape(num, -1))
            parts.append(np.packbits(tbits, axis=1, bitorder="little"))
        else:
            bits = np.concatenate([self._value_bits(), tbits], axis=1)
            parts.append(np.packbits(bits, axis=1, bitorder="little"))
        out = np.ascontiguousarray(np.concatenate(parts, axis=1))
        assert out.shape[1] == self.nbytes
        return out

    @classmethod
    def _values_from_bits(cls, bits: np.ndarray, kind: str, n: int, ell: int, width: int,
                          leaf: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Value corrections and final word(s) from a key's bit row; also the bits used."""
        if not leaf:
            nvals = (width * n if kind == "dcf" else 0) + width
            vcw, cw_last = cls._split_values(_bits_field(bits[:, :nvals * ell], nvals, ell),
                                             kind, n, width)
            return vcw, cw_last, nvals * ell
        nv = width * n if kind == "dcf" else 0
        words = leaf_words(ell, width, leaf)
        vcw = _bits_field(bits[:, :nv * ell], nv, ell)
        vcw = np.ascontiguousarray(vcw.reshape(bits.shape[0], n, width if kind == "dcf" else 0)
                                   .transpose(1, 0, 2))
        cw_last = _bits_field(bits[:, nv * ell:nv * ell + 64 * words], words, 64)
        return vcw, cw_last, nv * ell + 64 * words

    @staticmethod
    def _split_values(vals: np.ndarray, kind: str, n: int, width: int):
        num = vals.shape[0]
        if kind == "dcf":
            vcw = np.ascontiguousarray(vals[:, : n * width].reshape(num, n, width)
                                       .transpose(1, 0, 2))
            return vcw, np.ascontiguousarray(vals[:, n * width :])
        return np.zeros((n, num, 0), dtype=np.uint64), np.ascontiguousarray(vals)

    @classmethod
    def unpack(
        cls, data: np.ndarray, kind: str, party: int, n: int, ell: int, width: int = 1,
        leaf: int = 0,
    ) -> TreeKey:
        """Rebuild a batch from :meth:`pack` output (checks the byte length)."""
        check_leaf(n, ell, leaf, width)
        expect = (key_bits(kind, n, ell, width, leaf) + 7) // 8
        full_n, n = n, n - leaf
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != expect:
            raise ValueError(
                f"packed {kind} keys for n={n}, ell={ell}, width={width} must be uint8 of shape "
                f"(N, {expect}), got {data.dtype} {data.shape}"
            )
        num = data.shape[0]
        seed_bytes = 16 * (n + 1)
        seeds = np.ascontiguousarray(data[:, :seed_bytes]).view(np.uint64).reshape(num, n + 1, 2)
        seeds = np.ascontiguousarray(seeds.transpose(1, 0, 2))
        nvals = (width * n if kind == "dcf" else 0) + width
        rest = data[:, seed_bytes:]
        if ell % 8 == 0 and not leaf:
            vb = ell // 8
            raw = np.zeros((num, nvals, 8), dtype=np.uint8)
            raw[:, :, :vb] = rest[:, : nvals * vb].reshape(num, nvals, vb)
            vals = raw.view(np.uint64).reshape(num, nvals)
            tbits = np.unpackbits(rest[:, nvals * vb :], axis=1, bitorder="little")[:, : 2 * n]
            vcw, cw_last = cls._split_values(vals, kind, n, width)
        else:
            bits = np.unpackbits(rest, axis=1, bitorder="little")
            vcw, cw_last, used = cls._values_from_bits(bits, kind, n, ell, width, leaf)
            tbits = bits[:, used:used + 2 * n]
        return cls(kind=kind, party=party, n=full_n, ell=ell, width=width, seed=seeds[0],
                   scw=seeds[1:], vcw=vcw, tl=np.ascontiguousarray(tbits[:, :n].T),
                   tr=np.ascontiguousarray(tbits[:, n:].T), cw_last=cw_last, leaf=leaf)

    def to_parts(self) -> dict[str, np.ndarray]:
        """The same bits as :meth:`pack`, as three arrays in the evaluation layout.

        ``seeds`` ``(n+1, N, 2)`` int64 (root seeds, then the seed corrections
        level by level), ``values`` ``(L, N, m)`` int64 (``ell = 64``: the value
        corrections level by level and the final word, ``L = n + 1``; a DPF has
        only the final word, ``L = 1``; with early termination the packed leaf
        table, ``(1, N, words)``; otherwise empty when ``ell < 64``) and ``bits``
        ``(N, b)`` uint8 (the value corrections when ``ell < 64``, then the control
        bits, bit-packed per key). Their total size per key is :attr:`nbytes`;
        :meth:`from_parts` rebuilds the keys as views, without copies.
        """
        self._refuse_if_consumed()
        num, n = self.count, self.levels
        if self.seeds_buf is not None:
            seeds = self.seeds_buf
        else:
            seeds = np.concatenate([self.seed[None], self.scw], axis=0)
        fast = kernels.AVAILABLE  # one compiled pass instead of unpack/concatenate/packbits
        tbits = None if fast else np.concatenate([self.tl.T, self.tr.T], axis=1)
        if self.ell == 64:
            if self.values_buf is not None:
                values = self.values_buf
            elif self.kind == "dcf":
                values = np.concatenate([self.vcw, self.cw_last[None]], axis=0)
            else:
                values = self.cw_last[None]
        elif self.leaf:  # whole words: the evaluator reads them in place
            values = self.cw_last[None]
        else:
            values = np.zeros((0, num, self.width), dtype=np.uint64)
        if fast:
            vcw = self.vcw if self.kind == "dcf" else self.vcw[:, :, :0]
            last = self.cw_last[:, :0] if self.leaf else self.cw_last
            bits = kernels.pack_bits(vcw, last, self.tl, self.tr, self.ell, self.ell != 64,
                                     self.ell)
        elif self.ell == 64:
            bits = np.packbits(tbits, axis=1, bitorder="little")
        else:
            vbits = self._value_bits(with_leaf=False)
            bits = np.packbits(np.concatenate([vbits, tbits], axis=1), axis=1,
                               bitorder="little")
        assert seeds.shape == (n + 1, num, 2)
        return {"seeds": np.ascontiguousarray(seeds).view(np.int64),
                "values": np.ascontiguousarray(values).view(np.int64), "bits": bits}

    @classmethod
    def from_parts(cls, parts: dict, kind: str, party: int, n: int, ell: int,
                   width: int = 1, leaf: int = 0) -> TreeKey:
        """Rebuild a batch from :meth:`to_parts` (checks every shape)."""
        check_leaf(n, ell, leaf, width)
        full_n, n = n, n - leaf
        seeds, values, bits = (np.asarray(parts[k]) for k in ("seeds", "values", "bits"))
        num = seeds.shape[1] if seeds.ndim == 3 else -1
        nvbits = (width * n if kind == "dcf" else 0) * ell + (0 if leaf else width * ell)
        levels = (n + 1 if kind == "dcf" else 1) if ell == 64 else int(leaf > 0)
        vwidth = leaf_words(ell, width, leaf) if leaf else width
        nbits = 2 * n + (0 if ell == 64 else nvbits)
        if (seeds.shape != (n + 1, num, 2) or seeds.dtype != np.int64
                or values.shape != (levels, num, vwidth) or values.dtype != np.int64
                or bits.shape != (num, (nbits + 7) // 8) or bits.dtype != np.uint8):
            raise ValueError(f"{kind} key parts for n={full_n}, ell={ell}, width={width}, "
                             f"leaf={leaf} have the "
                             f"wrong shapes: {seeds.shape}, {values.shape}, {bits.shape}")
        seeds = seeds.view(np.uint64)
        toff = 0 if ell == 64 else nvbits  # first control bit
        if ell == 64:
            vals = values.view(np.uint64)
            if kind == "dcf":
                vcw, cw_last = vals[:n], vals[n]
            else:
                vcw, cw_last = np.zeros((n, num, 0), dtype=np.uint64), vals[0]
        elif leaf:
            cw_last = values.view(np.uint64)[0]
            if kind == "dpf":
                vcw = np.zeros((n, num, 0), dtype=np.uint64)
            elif kernels.AVAILABLE and ell == 1 and width == 1:
                # n one-bit corrections: the control-bit unpacker reads them in one pass
                vbits, _ = kernels.unpack_control(np.ascontiguousarray(bits), 0, n)
                vcw = vbits.astype(np.uint64)[:, :, None]
            else:
                tb = np.unpackbits(bits[:, : (toff + 7) // 8], axis=1, bitorder="little")
                vcw = _bits_field(tb[:, :toff], width * n, ell)
                vcw = np.ascontiguousarray(vcw.reshape(num, n, width).transpose(1, 0, 2))
        else:
            tb = np.unpackbits(bits[:, : (toff + 7) // 8], axis=1, bitorder="little")
            vcw, cw_last, _ = cls._values_from_bits(tb, kind, n, ell, width, leaf)
        if kernels.AVAILABLE:
            tl, tr = kernels.unpack_control(np.ascontiguousarray(bits), toff, n)
        else:
            tbits = np.unpackbits(bits, axis=1, bitorder="little")[:, toff : toff + 2 * n]
            tl = np.ascontiguousarray(tbits[:, :n].T)
            tr = np.ascontiguousarray(tbits[:, n:].T)
        return cls(kind=kind, party=party, n=full_n, ell=ell, width=width, seed=seeds[0],
                   scw=seeds[1:], vcw=vcw, tl=tl, tr=tr, cw_last=cw_last, leaf=leaf)
