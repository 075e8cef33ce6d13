"""Exact truncation of secret-shared fixed-point values (for private training).

Local probabilistic truncation (SecureML, :func:`veil.ring.truncate_share`)
fails with probability about ``|x| / 2^63`` per element, and a failure is off by
``2^(64 - f)``: harmless for one inference, fatal for training, where one such
error corrupts a weight. :func:`truncate` is exact instead: it returns shares of
``floor(x / 2^shift)`` (an arithmetic shift, the fixed-point twin's ``>>``) for
every ``|x| < 2^62``, with no failure probability, in one online round.

**Protocol** (dealer material ``trunc``, :mod:`veil.sharing.truncation`).
Shift to ``x' = x + 2^62`` in ``[0, 2^63)`` and open ``x̂ = x' + r`` for a
uniform ring mask ``r`` (perfectly hiding). Over the integers
``x' = x̂ - r + w·2^64`` with the wrap bit ``w = 1{x̂ < r}`` (unsigned), so::

    floor(x' / 2^s) = floor(x̂ / 2^s) - floor(r / 2^s) - c + w·2^(64-s)

where ``c = 1{x̂ mod 2^s < r mod 2^s}`` is the borrow of the low bits. The
dealer shares ``r``, ``r >> s`` and two DCF keys (BCG+21) that give shares of
``w`` (mod ``2^s``, all that ``w·2^(64-s)`` needs) and of ``c`` at the public
point ``x̂``; subtracting ``2^(62-s)`` undoes the shift. Cost per element: one
opened ring element per party (64 bits), about 1.6 KB of keys per party.

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.tensor([2.5, -3.25]) if party.rank == 0 else None, owner=0,
...                     shape=(2,))
...     y = x.share * 3                      # 3x at scale 2^16: keep it, drop one bit
...     z = truncate(party, y, 1)            # floor(3x * 2^16 / 2)
...     return party.from_share(z, 15).reveal()
>>> veil.run(job)[0]                         # doctest: +SKIP
tensor([ 7.5000, -9.7500])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from veil.sharing import truncation as _material
from veil.sharing.errors import MaterialError

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import SecretTensor

#: Elements per dealer request.
MAX_CHUNK = 1 << 17
#: Elements opened in one round (bounds the key memory held at once).
MAX_ROUND = 1 << 20
_OFFSET = 1 << 62

__all__ = ["MAX_CHUNK", "MAX_ROUND", "plan", "truncate", "truncate_tensor"]


def _chunks(count: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + MAX_CHUNK, count)) for lo in range(0, count, MAX_CHUNK)]


def plan(count: int, shift: int) -> list[tuple[str, dict]]:
    """The dealer requests of :func:`truncate` on ``count`` elements.

    Example
    -------
    >>> plan(5, 16)
    [('trunc', {'count': 5, 'shift': 16})]
    """
    shift = _material.check_shift(shift)
    return [("trunc", {"count": hi - lo, "shift": shift}) for lo, hi in _chunks(int(count))]


def truncate(party: Party, share: torch.Tensor, shift: int) -> torch.Tensor:
    """This party's share of ``floor(x / 2^shift)`` for shares of ``x`` with ``|x| < 2^62``.

    Exact (no probabilistic error), one online round per :data:`MAX_ROUND` elements.
    """
    if share.dtype != torch.int64:
        raise TypeError(f"ring shares are int64, got {share.dtype}")
    shift = _material.check_shift(shift)
    shape, device = share.shape, share.device
    flat = share.detach().reshape(-1).to("cpu")
    if party.rank == 0:
        flat = flat + _OFFSET
    xs = flat.numpy().view(np.uint64)
    out = np.empty(xs.shape[0], dtype=np.uint64)
    chunks = list(zip(_chunks(xs.shape[0]), plan(xs.shape[0], shift), strict=True))
    per_round = MAX_ROUND // MAX_CHUNK
    for g in range(0, len(chunks), per_round):
        group = chunks[g:g + per_round]
        mats = [party.material(kind, **params) for _, (kind, params) in group]
        masked = []
        for ((lo, hi), _), mat in zip(group, mats, strict=True):
            r = _field(mat, "r", hi - lo)
            masked.append(torch.from_numpy((xs[lo:hi] + r).view(np.int64)))
        opened = party.open_many(masked)  # the one round of this group
        for ((lo, hi), _), mat, xh in zip(group, mats, opened, strict=True):
            out[lo:hi] = _finish(party.rank, mat, xh.numpy().view(np.uint64), shift)
    return torch.from_numpy(out.view(np.int64)).reshape(shape).to(device)


def _field(mat: dict, name: str, count: int) -> np.ndarray:
    v = mat.get(name)
    if not isinstance(v, np.ndarray) or v.shape != (count,):
        raise MaterialError(f"trunc material: {name} missing or of the wrong shape")
    return v.view(np.uint64)


def _finish(rank: int, mat: dict, x_hat: np.ndarray, shift: int) -> np.ndarray:
    from veil.fss.dcf import dcf_eval  # compiled kernels: loaded on first use

    if int(mat["shape"][1]) != shift:
        raise MaterialError(f"trunc material is for shift {int(mat['shape'][1])}, not {shift}")
    kw, kc = _material.take_keys(mat, rank)
    w = dcf_eval(kw, x_hat)[:, 0]
    c = dcf_eval(kc, x_hat & np.uint64((1 << shift) - 1))[:, 0]
    z = w - c - _field(mat, "r_hi", x_hat.shape[0])
    if rank == 0:
        z = z + (x_hat >> np.uint64(shift)) - np.uint64(_OFFSET >> shift)
    return z


def truncate_tensor(x: SecretTensor, shift: int, frac_bits: int | None = None) -> SecretTensor:
    """``x`` with ``shift`` fewer fractional bits (exactly), as a SecretTensor.

    ``frac_bits`` sets the result's precision (default: ``x.frac_bits``, i.e. ``x``
    held a product at scale ``2^(frac_bits + shift)``).
    """
    return x._wrap(truncate(x.party, x.share, shift), frac_bits)
