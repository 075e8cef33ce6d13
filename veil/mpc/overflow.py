"""Opt-in fixed-point overflow checks for debugging (``VEIL_DEBUG_OVERFLOW=1``).

Values that each pass :func:`veil.ring.encode` can still overflow the ring in
a product or a sum: ``(2^20)·(2^20)`` needs 2^72 ring units with 16 fractional
bits and comes out as garbage, four times 2^45 wraps to a negative number.
Nothing in the protocol notices, since no party may look at the values.

With ``VEIL_DEBUG_OVERFLOW=1`` (:func:`veil.config.debug_overflow`) every
secret product and every sum of two secrets is checked by a *test oracle*:
both parties hand their shares to a process-local register, nothing goes over
any link, and each party raises :class:`FixedPointOverflowError` (the same in
both) when the exact magnitude of the operands' product or sum reaches the
ring's range. That needs both parties in one process (``transport="local"``,
the default of :func:`veil.run`); across processes the check refuses to run
rather than reveal anything to the peer. It is a debugging aid: it costs a
synchronisation per operation and must stay off in a deployment.

Example
-------
>>> import os, torch, veil
>>> os.environ["VEIL_DEBUG_OVERFLOW"] = "1"
>>> def job(party):
...     x = party.share(torch.tensor([2.0**20]) if party.rank == 0 else None, owner=0, shape=(1,))
...     return (x * x).reveal()
>>> veil.run(job)                     # doctest: +SKIP
Traceback (most recent call last):
...
FixedPointOverflowError: fixed-point overflow in the product (beaver): ...
>>> del os.environ["VEIL_DEBUG_OVERFLOW"]
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from veil import ring

if TYPE_CHECKING:
    from veil.mpc.party import Party

__all__ = ["FixedPointOverflowError", "check_product", "check_scaled", "check_sum",
           "reconstruct"]

#: Magnitude (ring units) a value may reach: the ring's signed range.
LIMIT = 2.0 ** (ring.RING_BITS - 1)
_WAIT_S = 10.0

_cond = threading.Condition()
_slots: dict[tuple[bytes, int], dict[int, torch.Tensor]] = {}


class FixedPointOverflowError(ArithmeticError):
    """A secret product or sum left the ring's range (found by the debug oracle)."""


def reconstruct(party: Party, share: torch.Tensor) -> torch.Tensor:
    """Both parties' shares of one value, added in this process (debug oracle only).

    Both parties call this at the same point of their (SPMD) programs; their
    calls are matched by the pair's set-up seed and a per-party counter.
    """
    pair = party.debug_pair
    if pair is None:
        raise RuntimeError("the overflow oracle needs a party that was set up (veil.run)")
    seq = party.next_debug_seq()
    key = (pair, seq)
    with _cond:
        slot = _slots.setdefault(key, {})
        slot[party.rank] = share.detach().to("cpu")
        _cond.notify_all()
        if not _cond.wait_for(lambda: len(slot) == 2, timeout=_WAIT_S):
            _slots.pop(key, None)
            raise RuntimeError(
                "VEIL_DEBUG_OVERFLOW checks values with both parties in one process "
                "(transport='local'); the other party never reached this operation")
        value = slot[0] + slot[1]
        if party.rank == 1:  # both have read it: forget it
            _slots.pop(key, None)
    return value


def _magnitude(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64).abs()


def check_product(party: Party, x: torch.Tensor, y: torch.Tensor, op: str,
                  product=torch.mul) -> None:
    """Raise if ``op(x, y)`` of two shared operands overflows (both parties raise)."""
    a = _magnitude(reconstruct(party, x))
    b = _magnitude(reconstruct(party, y))
    peak = float(product(a, b).max()) if a.numel() and b.numel() else 0.0
    if peak >= LIMIT:
        raise FixedPointOverflowError(
            f"fixed-point overflow in the product ({op}): its exact value reaches "
            f"{peak:.3g} ring units, beyond 2^{ring.RING_BITS - 1}; the result would be "
            "garbage. Scale the operands down (or use fewer fractional bits)")


def check_sum(party: Party, x: torch.Tensor, y: torch.Tensor, what: str = "sum") -> None:
    """Raise if ``x + y`` (or ``x - y``) of two shared operands can leave the ring's range."""
    a = _magnitude(reconstruct(party, x))
    b = _magnitude(reconstruct(party, y))
    peak = float((a + b).max()) if a.numel() and b.numel() else 0.0
    if peak >= LIMIT:
        raise FixedPointOverflowError(
            f"fixed-point overflow in a {what}: the operands' magnitudes add up to "
            f"{peak:.3g} ring units, beyond 2^{ring.RING_BITS - 1}")


def check_scaled(party: Party, x: torch.Tensor, factor: float, op: str) -> None:
    """Raise if a shared ``x`` times a public factor of magnitude ``factor`` (in the units
    the share is multiplied by) overflows."""
    a = _magnitude(reconstruct(party, x))
    peak = float(a.max()) * abs(factor) if a.numel() else 0.0
    if peak >= LIMIT:
        raise FixedPointOverflowError(
            f"fixed-point overflow in the product ({op}) with a public value: its exact "
            f"value reaches {peak:.3g} ring units, beyond 2^{ring.RING_BITS - 1}")
