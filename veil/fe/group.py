"""The BLS12-381 pairing group (through ``pymcl``): scalars, multi-exponentiation, fingerprints.

Everything above this module speaks in Python integers and ``pymcl`` group
elements. Secret scalars come from :mod:`veil.csprng` (64 random bytes reduced
modulo the group order ``r``: the bias is below ``2^-255``).

Group elements are written additively for ``G1``/``G2`` (``P + Q``, ``P * Fr``)
and multiplicatively for ``GT`` (``a * b``, ``a ** Fr``), following ``pymcl``.

Example
-------
>>> from veil.fe.group import random_scalars, fr, G1_GEN, lincomb
>>> s = random_scalars(2)
>>> P = [G1_GEN * fr(v) for v in (3, 5)]
>>> lincomb(P, [2, -1], zero=G1_GEN * fr(0)) == G1_GEN * fr(1)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TypeVar

import pymcl
from pymcl import G1, G2, GT, Fr

from veil.csprng import CSPRNG, default_generator

ORDER: int = pymcl.r
G1_GEN: G1 = pymcl.g1
G2_GEN: G2 = pymcl.g2
GT_GEN: GT = pymcl.pairing(pymcl.g1, pymcl.g2)
G1_BYTES, G2_BYTES, GT_BYTES = 48, 96, 576

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

E = TypeVar("E", G1, G2)


def fr(value: int) -> Fr:
    """An ``Fr`` element from any Python integer (reduced modulo ``r``; negatives allowed)."""
    value = int(value)
    if _INT64_MIN <= value <= _INT64_MAX:
        return Fr(value)
    return Fr(str(value % ORDER))


def random_scalars(count: int, rng: CSPRNG | None = None) -> list[int]:
    """``count`` uniform scalars in ``[0, r)`` from the CSPRNG (one batched AES call)."""
    rng = rng or default_generator()
    raw = rng.random_bytes(64 * count)
    return [int.from_bytes(raw[64 * i : 64 * (i + 1)], "little") % ORDER for i in range(count)]


def random_nonzero_scalar(rng: CSPRNG | None = None) -> int:
    """A uniform scalar in ``[1, r)``."""
    while True:
        (v,) = random_scalars(1, rng)
        if v:
            return v


def lincomb(points: Sequence[E], coeffs: Iterable[int], zero: E) -> E:
    """``sum_i coeffs[i] * points[i]`` for small signed integer coefficients.

    Bucket method: points with the same coefficient are added first, then the
    buckets are combined with running sums, so the cost is about one group
    addition per non-zero coefficient plus ``2 * max|c|`` additions, instead of a
    scalar multiplication per point. Zero coefficients cost nothing. Falls back
    to one scalar multiplication per distinct coefficient when the coefficients
    are large and few.

    Parameters
    ----------
    points: group elements (``G1`` or ``G2``).
    coeffs: integers, one per point.
    zero: the group identity of the same type (e.g. ``G1()``).
    """
    buckets: dict[int, E] = {}
    for point, c in zip(points, coeffs, strict=True):
        if c == 0:
            continue
        mag = c if c > 0 else -c
        acc = buckets.get(mag)
        if acc is None:
            buckets[mag] = point if c > 0 else -point
        else:
            buckets[mag] = acc + point if c > 0 else acc - point
    if not buckets:
        return zero
    total = _bucket_total(buckets, lambda u, v: u + v, zero)
    if total is not None:
        return total
    total = zero
    for mag, b in buckets.items():
        total = total + (b * fr(mag) if mag != 1 else b)
    return total


def _bucket_total(buckets: dict, add, zero):
    """``sum_m m * buckets[m]`` by running sums (or one scalar step per bucket when sparse)."""
    top = max(buckets)
    if top <= 4 * len(buckets) + 64:
        running, total = zero, zero
        for mag in range(top, 0, -1):
            b = buckets.get(mag)
            if b is not None:
                running = add(running, b)
            total = add(total, running)
        return total
    return None


def gt_multi_power(bases: Sequence[GT], exponents: Iterable[int]) -> GT:
    """``prod_i bases[i] ** exponents[i]`` for small signed integer exponents (bucket method)."""
    pos: dict[int, GT] = {}
    neg: dict[int, GT] = {}
    for base, e in zip(bases, exponents, strict=True):
        if e == 0:
            continue
        table, mag = (pos, e) if e > 0 else (neg, -e)
        acc = table.get(mag)
        table[mag] = base if acc is None else acc * base
    out = GT()
    for table, sign in ((pos, 1), (neg, -1)):
        if not table:
            continue
        part = _bucket_total(table, lambda u, v: u * v, GT())
        if part is None:
            part = GT()
            for mag, b in table.items():
                part = part * gt_power(b, mag)
        out = out * part if sign > 0 else out / part
    return out


def gt_power(base: GT, exponent: int) -> GT:
    """``base ** exponent`` for any signed integer exponent."""
    if exponent == 0:
        return GT()
    if exponent == 1:
        return base
    if exponent < 0:
        return ~gt_power(base, -exponent)
    return base ** fr(exponent)


def fingerprint(*chunks: bytes) -> str:
    """A short hex SHA-256 digest of the given byte strings (identifies a public key)."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()[:32]
