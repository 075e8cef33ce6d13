"""Dealer material kinds for FSS gates (registered with :mod:`veil.sharing.dealer`).

- ``fss_sign`` (``count``, ``extra=0``, ``relu=False``, ``method="exact"``,
  ``ring_bits=64``): the one-round sign gate of :func:`veil.fss.gates.sign_keygen`
  (DReLU; with ``relu`` also ``d·x``; with ``extra = K`` also ``d·w`` for ``K``
  more operands per element).
- ``fss_eq`` (``count``, ``ring_bits=64``): equality-to-zero through a DPF
  (:func:`veil.fss.gates.eq_keygen`).

Each party's half is a dict of numpy arrays (packed keys as uint8, mask shares
as int64) and ints; it travels in Veil's wire format and is single-use (the
gate pops the key out of the dict, and the engine's stores hand it out once).

Example
-------
>>> from veil.csprng import CSPRNG
>>> from veil.fss.material import fss_sign
>>> m0, m1 = fss_sign(CSPRNG(), count=4, relu=True)
>>> m0["key_seeds"].shape, m0["r"].shape
((64, 4, 2), (4,))
"""

from __future__ import annotations

from veil.csprng import CSPRNG
from veil.fss import gates
from veil.sharing.dealer import register_material


@register_material("fss_sign")
def fss_sign(rng: CSPRNG, *, count: int, extra: int = 0, relu: bool = False,
             method: str = "exact", ring_bits: int = 64) -> tuple[dict, dict]:
    """Both halves of ``count`` sign gates (see :func:`veil.fss.gates.sign_keygen`)."""
    return gates.sign_keygen(int(count), extra=int(extra), relu=bool(relu), ring_bits=ring_bits,
                             method=method, rng=rng)


@register_material("fss_eq")
def fss_eq(rng: CSPRNG, *, count: int, ring_bits: int = 64) -> tuple[dict, dict]:
    """Both halves of ``count`` equality-to-zero gates (one DPF each)."""
    return gates.eq_keygen(int(count), ring_bits=ring_bits, rng=rng)
