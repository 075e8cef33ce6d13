"""Reusable masks held by the dealer: one secret mask per long-lived operand.

A served model is multiplied by many inputs. With a fresh triple per query,
every query opens the masked weights ``W - b`` again: a weight-sized message
(253 MB for VGG16) for nothing, since ``W`` does not change. With a *fixed*
mask ``b`` per weight, ``E = W - b`` is opened once when the model is shared,
and each query only opens its input under a fresh mask ``a``; the dealer then
supplies ``a`` and ``c = op(a, b)`` for the same ``b`` every time.

This is as secure as fresh triples as long as (1) ``b`` is uniform and opened
against exactly one value (two different ``W`` under one ``b`` would reveal
``W1 - W2``), and (2) ``a`` is fresh per query. The dealer enforces (1): a
mask is *issued* (its shares handed out) at most once per mask id, and
triples are only made for masks that were issued with the same shape; (2)
holds because ``a`` comes from the dealer's generator on every request.

The dealer derives ``b`` from a secret key of its own and a fresh random
nonce drawn for every keyring (HMAC-SHA256 of nonce and mask id, used as the
seed of :class:`~veil.csprng.CSPRNG`), so the masks cost no storage and
generation stays stateless apart from the issuance register. Mask ids are
public labels chosen by the parties (a session id plus the layer). The nonce
is what keeps an explicit key safe: two keyrings built from the same key (two
preprocessing runs, a restarted dealer) never derive the same mask, so a data
owner can never subtract two weights opened under one ``b``. A dealer that must
keep serving masks it issued earlier persists its whole state
(:meth:`MaskKeyring.state`, :meth:`MaskKeyring.restore`): key, nonce *and*
issuance register travel together, so a restored keyring still refuses to
issue a mask twice.

Example
-------
>>> ring = MaskKeyring()
>>> b = ring.issue("session/fc1.weight", (3, 4))
>>> bool((ring.mask("session/fc1.weight", (3, 4)) == b).all())
True
>>> ring.issue("session/fc1.weight", (3, 4))
Traceback (most recent call last):
...
veil.sharing.errors.MaterialReusedError: mask 'session/fc1.weight' was already issued...
>>> same_key = MaskKeyring(b"k" * 32), MaskKeyring(b"k" * 32)
>>> bool((same_key[0].issue("w", (4,)) == same_key[1].issue("w", (4,))).all())
False
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from veil.csprng import CSPRNG
from veil.sharing.errors import MaterialError, MaterialReusedError

__all__ = ["MaskKeyring"]

#: Cached masks up to this many bytes in all (then they are re-derived on demand).
_CACHE_BYTES = 1 << 30
#: Bytes of the per-keyring nonce (a collision between two keyrings is a 2^-64 birthday event).
_NONCE_BYTES = 16
_STATE_FORMAT = "veil-keyring-1"


class MaskKeyring:
    """The dealer's register of reusable masks, derived from a secret key.

    Parameters
    ----------
    key:
        At least 16 secret bytes (32 fresh from ``os.urandom`` by default). An
        explicit key is mixed with a fresh random nonce, so it never reissues a
        mask of another keyring; to go on serving masks issued earlier, save
        :meth:`state` and :meth:`restore` it instead of reusing the key.
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(32)
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("a mask keyring key is at least 16 secret bytes")
        self._key = key
        self._nonce = os.urandom(_NONCE_BYTES)
        self._issued: dict[str, tuple[int, ...]] = {}
        self._cache: dict[str, torch.Tensor] = {}
        self._cached_bytes = 0
        self._lock = threading.Lock()

    def _derive(self, mask_id: str, shape: tuple[int, ...]) -> torch.Tensor:
        # The nonce has a fixed length, so (nonce, id) pairs never collide as byte strings.
        seed = hmac.new(self._key, self._nonce + mask_id.encode(), hashlib.sha256).digest()[:16]
        return CSPRNG(seed).integers(shape)

    @staticmethod
    def _check_id(mask_id: str) -> str:
        if not isinstance(mask_id, str) or not mask_id:
            raise MaterialError("a reusable mask needs a non-empty string mask_id")
        return mask_id

    def issue(self, mask_id: str, shape: Sequence[int]) -> torch.Tensor:
        """The mask ``mask_id`` of ``shape``, for sharing it; allowed once per id."""
        shape = tuple(int(s) for s in shape)
        with self._lock:
            if self._check_id(mask_id) in self._issued:
                raise MaterialReusedError(
                    f"mask {mask_id!r} was already issued; a reusable mask is opened against "
                    "one operand only (two operands under one mask would reveal their "
                    "difference): use a new mask id")
            self._issued[mask_id] = shape
        return self._cached(mask_id, shape)

    def mask(self, mask_id: str, shape: Sequence[int]) -> torch.Tensor:
        """The issued mask ``mask_id`` (to make triples with it); checks the shape."""
        shape = tuple(int(s) for s in shape)
        with self._lock:
            issued = self._issued.get(self._check_id(mask_id))
        if issued is None:
            raise MaterialError(f"no reusable mask {mask_id!r} was issued by this dealer: "
                                "share the operand with it first (the dealer restarted, or "
                                "the material comes from another preprocessing run?)")
        if issued != shape:
            raise MaterialError(f"mask {mask_id!r} was issued with shape {issued}, "
                                f"not {shape}")
        return self._cached(mask_id, shape)

    def _cached(self, mask_id: str, shape: tuple[int, ...]) -> torch.Tensor:
        with self._lock:
            hit = self._cache.get(mask_id)
        if hit is not None:
            return hit
        b = self._derive(mask_id, shape)
        with self._lock:
            if self._cached_bytes + b.numel() * 8 <= _CACHE_BYTES:
                self._cache[mask_id] = b
                self._cached_bytes += b.numel() * 8
        return b

    @property
    def issued(self) -> dict[str, tuple[int, ...]]:
        """Mask ids issued so far and their shapes (public information)."""
        with self._lock:
            return dict(self._issued)

    def state(self) -> dict[str, Any]:
        """Everything needed to resume this keyring (secret: key and nonce), JSON-ready.

        Persist it as one unit: the key alone cannot reproduce the masks (the
        nonce is fresh per keyring), and key plus nonce without the register
        would let a mask be issued twice.
        """
        with self._lock:
            issued = {k: list(v) for k, v in self._issued.items()}
        return {"format": _STATE_FORMAT, "key": self._key.hex(), "nonce": self._nonce.hex(),
                "issued": issued}

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> MaskKeyring:
        """The keyring saved by :meth:`state`, with its issuance register.

        Example
        -------
        >>> ring = MaskKeyring()
        >>> b = ring.issue("w", (2,))
        >>> again = MaskKeyring.restore(ring.state())
        >>> bool((again.mask("w", (2,)) == b).all())
        True
        >>> again.issue("w", (2,))
        Traceback (most recent call last):
        ...
        veil.sharing.errors.MaterialReusedError: mask 'w' was already issued...
        """
        try:
            if state["format"] != _STATE_FORMAT:
                raise ValueError(f"unknown keyring state format {state['format']!r}")
            key, nonce = bytes.fromhex(state["key"]), bytes.fromhex(state["nonce"])
            issued = {str(k): tuple(int(s) for s in v) for k, v in state["issued"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MaterialError(f"not a saved mask keyring state: {exc}") from None
        if len(nonce) != _NONCE_BYTES:
            raise MaterialError("a saved mask keyring state needs its 16-byte nonce")
        ring = cls(key)
        ring._nonce = nonce
        ring._issued = issued
        return ring
