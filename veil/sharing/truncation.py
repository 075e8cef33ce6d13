"""Dealer material for exact truncation: ``trunc`` (a mask and two DCF keys per element).

The online protocol is :func:`veil.mpc.truncation.truncate`; this module is the
dealer's half. For each element the dealer draws a uniform ring mask ``r`` and
hands out additive shares of

- ``r`` and of ``r_hi = r >> shift`` (a logical shift of the unsigned ``r``);
- a DCF key (BCG+21) for ``z -> 2^(64 - shift)·1{z < r}`` on 64-bit inputs (the
  *wrap* bit of ``x' + r``, already at the weight it is used with);
- a DCF key for ``z -> 1{z < r mod 2^shift}`` on ``shift``-bit inputs with a
  64-bit output (the *borrow* of the low bits).

Parameters: ``count`` (elements), ``shift`` (bits to drop, 1..62). Each
party's half is a dict of numpy arrays; the keys are single-use (evaluating one
pops it out of the dict).

Example
-------
>>> from veil.csprng import CSPRNG
>>> m0, m1 = generate_trunc(CSPRNG(), count=3, shift=16)
>>> m0["r"].shape, int(m0["shape"][1])
((3,), 16)
>>> trunc_key_bytes(16) < 2100   # both keys and two ring shares, per element and party
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from veil.csprng import CSPRNG
from veil.sharing.errors import MaterialError
from veil.sharing.material import register_material

if TYPE_CHECKING:
    from veil.fss.key import TreeKey

# veil.fss is imported where keys are made or read: it loads compiled kernels (~2 s), which
# ``import veil.nn`` should not pay.

RING_BITS = 64
#: The largest magnitude the truncated values may have: ``|x| < 2^62`` (every encodable value).
MAX_MAGNITUDE_BITS = 62


def _random_u64(rng: CSPRNG, count: int) -> np.ndarray:
    return np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64).copy()


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)


def check_shift(shift: int) -> int:
    """``shift`` as an int in 1..62, or a clear error."""
    shift = int(shift)
    if not 1 <= shift <= MAX_MAGNITUDE_BITS:
        raise ValueError(f"truncation shift must be in 1..{MAX_MAGNITUDE_BITS}, got {shift}")
    return shift


def trunc_key_bytes(shift: int) -> int:
    """Bytes of one element's ``trunc`` material held by one party."""
    from veil.fss.key import key_bits

    bits = key_bits("dcf", RING_BITS, RING_BITS) + key_bits("dcf", shift, RING_BITS)
    return (bits + 7) // 8 + 2 * 8


@register_material("trunc", family="fss_key",
                   size=lambda *, count, shift: int(count) * trunc_key_bytes(shift))
def generate_trunc(rng: CSPRNG, *, count: int, shift: int) -> tuple[dict, dict]:
    """Both parties' halves of ``count`` exact truncations by ``shift`` bits."""
    from veil.fss.dcf import dcf_gen

    count, shift = int(count), check_shift(shift)
    if count < 0:
        raise ValueError("count must be non-negative")
    r = _random_u64(rng, count)
    r_hi = r >> np.uint64(shift)
    # 64-bit outputs: the evaluator's fast layout (narrower outputs are bit-packed)
    w0, w1 = dcf_gen(r, np.uint64(1) << np.uint64(RING_BITS - shift), RING_BITS, RING_BITS, rng)
    c0, c1 = dcf_gen(r & _mask(shift), 1, shift, RING_BITS, rng)
    halves = []
    for party, kw, kc in ((0, w0, c0), (1, w1, c1)):
        half = {"party": party, "shape": np.array([count, shift], dtype=np.int64)}
        half.update({"kw_" + k: v for k, v in kw.to_parts().items()})
        half.update({"kc_" + k: v for k, v in kc.to_parts().items()})
        halves.append(half)
    for name, value in (("r", r), ("r_hi", r_hi)):
        s0 = _random_u64(rng, count)
        halves[0][name] = s0.view(np.int64)
        halves[1][name] = (value - s0).view(np.int64)
    return halves[0], halves[1]


def take_keys(material: dict, party: int) -> tuple[TreeKey, TreeKey]:
    """Pop the wrap and borrow keys out of ``material`` (single use)."""
    from veil.fss.key import TreeKey

    if int(material.get("party", -1)) != party:
        raise MaterialError(f"trunc material belongs to party {material.get('party')}, "
                            f"not {party}")
    shift = int(material["shape"][1])
    keys = []
    for prefix, n, ell in (("kw_", RING_BITS, RING_BITS), ("kc_", shift, RING_BITS)):
        parts = {k: material.pop(prefix + k, None) for k in ("seeds", "values", "bits")}
        if any(v is None for v in parts.values()):
            raise MaterialError("trunc material was already used: keys are single-use")
        keys.append(TreeKey.from_parts(parts, "dcf", party, n, ell, 1))
    return keys[0], keys[1]
