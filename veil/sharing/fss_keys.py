"""Dealer material kinds for FSS gates, beside the triples (registered with the dealer).

The FSS primitives (:mod:`veil.fss`: DPF/DCF trees and the gates' local steps)
know nothing of the dealer; this module turns them into material kinds:

- ``fss_sign`` (``count``, ``extra=0``, ``relu=False``, ``method="exact"``,
  ``ring_bits=64``, ``bits=ring_bits``, ``lean=False``): the sign gate of
  :func:`veil.fss.gates.sign_keygen` (DReLU; with ``relu`` also ``d·x``; with
  ``extra = K`` also ``d·w`` for ``K`` more operands per element; ``bits = k``
  compares on the low ``k`` bits, exact for ``|x| < 2^(k-1)``; ``lean``: the
  two-round gate with a 1-bit, early-terminated DCF).
- ``fss_eq`` (``count``, ``ring_bits=64``): equality-to-zero through a DPF
  (:func:`veil.fss.gates.eq_keygen`).

Each party's half is a dict of numpy arrays (packed keys as uint8, mask shares
as int64) and ints; it travels in Veil's wire format and is single-use (the
gate pops the key out of the dict, and the engine's stores hand it out once).
Key generation runs on every core (:func:`veil.fss.tree.workers`).

Example
-------
>>> from veil.csprng import CSPRNG
>>> from veil.sharing.fss_keys import fss_sign
>>> m0, m1 = fss_sign(CSPRNG(), count=4, relu=True)
>>> m0["key_seeds"].shape, m0["r"].shape
((64, 4, 2), (4,))
>>> m0, m1 = fss_sign(CSPRNG(), count=4, relu=True, bits=32, lean=True)
>>> m0["key_seeds"].shape          # 31 - 7 tree levels and the root
(25, 4, 2)
"""

from __future__ import annotations

from veil.csprng import CSPRNG
from veil.fss import gates
from veil.sharing.dealer import register_material

__all__ = ["fss_eq", "fss_sign"]


def _sign_bytes(*, count: int, extra: int = 0, relu: bool = False, method: str = "exact",
                ring_bits: int = 64, bits: int | None = None, lean: bool = False) -> int:
    """One party's bytes: the packed DCF keys plus the mask shares (r, c and r_w)."""
    key = gates.sign_key_bits(ring_bits, extra=int(extra), relu=bool(relu), method=method,
                              bits=bits, lean=bool(lean))
    return int(count) * ((key + 7) // 8 + 8 * (2 + int(extra)))


def _eq_bytes(*, count: int, ring_bits: int = 64) -> int:
    """One party's bytes: the packed DPF keys plus the mask share."""
    from veil.fss.key import key_bits

    return int(count) * ((key_bits("dpf", ring_bits, ring_bits) + 7) // 8 + 8)


@register_material("fss_sign", family="fss_key", size=_sign_bytes)
def fss_sign(rng: CSPRNG, *, count: int, extra: int = 0, relu: bool = False,
             method: str = "exact", ring_bits: int = 64, bits: int | None = None,
             lean: bool = False) -> tuple[dict, dict]:
    """Both halves of ``count`` sign gates (see :func:`veil.fss.gates.sign_keygen`)."""
    return gates.sign_keygen(int(count), extra=int(extra), relu=bool(relu), ring_bits=ring_bits,
                             method=method, rng=rng, bits=bits, lean=bool(lean))


@register_material("fss_eq", family="fss_key", size=_eq_bytes)
def fss_eq(rng: CSPRNG, *, count: int, ring_bits: int = 64) -> tuple[dict, dict]:
    """Both halves of ``count`` equality-to-zero gates (one DPF each)."""
    return gates.eq_keygen(int(count), ring_bits=ring_bits, rng=rng)
