"""Veil's two-server secure aggregation (Prio-style additive sharing with a seed).

Two non-colluding aggregators A and B add up the clients' updates without
either of them seeing any single update:

1. Each client encodes its weighted update ``v = [w·Δ, w]`` (``w`` = examples /
   ``max_weight``) in fixed point in the ring Z_2^k (k = 32 or 64, ``frac_bits``
   fractional bits, as :mod:`veil.ring` does for k = 64), draws a fresh 16-byte
   seed ``s`` and sets ``share_B = PRG(s)`` (AES-128-CTR, :class:`veil.csprng.CSPRNG`)
   and ``share_A = v - share_B mod 2^k``.
2. ``share_A`` (one update's worth of ring elements) goes to A; the seed goes to
   B sealed to B's X25519 public key (ephemeral X25519, HKDF-SHA256, AES-128-GCM:
   76 bytes), so the upload is one update plus 76 bytes even when A relays it.
3. Each aggregator lists the clients it received; both sum over the
   *intersection* (a client missing at either aggregator is excluded from both
   sums), optionally add their own Gaussian noise, and exchange the sums. The
   revealed total is ``Σ w·Δ`` and ``Σ w`` over the included clients.

Security (honest-but-curious, non-colluding A and B): A's view of a client is
``v - PRG(s)`` with ``s`` unknown to it, computationally uniform and independent
of ``v``; B's view is the seed alone, independent of ``v``. With noise, each
aggregator adds N(0, σ²) (in update units) to its own partial sum, so the
revealed sum carries noise of variance 2σ² and either aggregator, knowing only
its own noise, still faces N(0, σ²) from the other: central DP that trusts
neither server alone.

Quantisation error: rounding each coordinate costs at most ``2^-(f+1)``, so the
revealed weighted mean differs from the exact one by at most
about ``K·2^-(f+1)·(1 + max|Δ|) / Σw`` per coordinate (K included clients), see
:func:`error_bound`.
Values are range-checked on the client (``|w·Δ| < 2^(k-2-f) / max_clients``):
an update outside the range is refused with an error, never silently clipped.

Example
-------
>>> import numpy as np
>>> cfg = TwoServerConfig(ring_bits=32, frac_bits=16, max_weight=100, max_clients=8)
>>> a, b = Aggregator("A", cfg), Aggregator("B", cfg)
>>> rng = np.random.default_rng(0)                              # not-secret: test data
>>> ups = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
>>> for cid, u in enumerate(ups):
...     share, sealed = client_share(u, 50, cfg, b.public_key)
...     a.receive(cid, share); b.receive(cid, sealed)
>>> mean, weight, included = reveal(a, b, length=5)
>>> bool(np.abs(mean - np.mean(ups, axis=0)).max() <= error_bound(cfg, 3, weight, 5.0))
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil import ring
from veil.csprng import CSPRNG, SEED_BYTES

#: bytes of a sealed seed: ephemeral public key 32 + nonce 12 + seed 16 + GCM tag 16
SEALED_SEED_BYTES = 32 + 12 + SEED_BYTES + 16
_INFO = b"veil.fl.twoserver seed v1"


@dataclass(frozen=True)
class TwoServerConfig:
    """Public parameters of a round of two-server aggregation.

    Parameters
    ----------
    ring_bits:
        32 (4-byte shares, the upload of a float32 update) or 64 (Z_2^64 as in :mod:`veil.ring`).
    frac_bits:
        Fixed-point fractional bits.
    max_weight:
        A client's weight is ``num_examples / max_weight`` and must be <= 1.
    max_clients:
        The most clients one sum may hold; it sets the per-client value range.
    noise_std:
        Standard deviation of the Gaussian noise *each* aggregator adds to the
        weighted sum (update units); 0 for none.
    """

    ring_bits: int = 32
    frac_bits: int = 16
    max_weight: float = 1.0
    max_clients: int = 1024
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.ring_bits not in (32, 64):
            raise ValueError(f"ring_bits must be 32 or 64, got {self.ring_bits}")
        top = min(self.ring_bits - 8, ring.MAX_FRAC_BITS)
        if not 0 <= self.frac_bits <= top:
            raise ValueError(f"frac_bits must be in [0, {top}], got {self.frac_bits}")
        if not self.max_weight > 0 or self.max_clients < 1 or self.noise_std < 0:
            raise ValueError("max_weight must be > 0, max_clients >= 1, noise_std >= 0")

    @property
    def value_bound(self) -> float:
        """The largest ``|w·Δ|`` a client may contribute (one bit of headroom kept for noise)."""
        return 2.0 ** (self.ring_bits - 2 - self.frac_bits) / self.max_clients

    @property
    def share_dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.ring_bits == 32 else np.uint64)


def error_bound(cfg: TwoServerConfig, included: int, weight_sum: float,
                max_abs_update: float) -> float:
    """Worst-case per-coordinate error of the revealed weighted mean (without noise).

    With numerator ``N`` and weight sum ``W`` each rounded by at most ``e = K·2^-(f+1)``
    over ``K`` clients, ``|N'/W' - N/W| <= e (1 + max|Δ|) / W'``.
    """
    e = included * 2.0 ** -(cfg.frac_bits + 1)
    return e * (1 + max_abs_update) / (weight_sum - e)


def _mask(x: np.ndarray, bits: int) -> np.ndarray:
    return x if bits == 64 else x & np.int64(0xFFFFFFFF)


def _expand(seed: bytes, n: int, bits: int) -> np.ndarray:
    return _mask(CSPRNG(seed=seed).integers((n,)).numpy(), bits)


def encode(update: np.ndarray, weight: float, cfg: TwoServerConfig) -> np.ndarray:
    """``[w·Δ, w]`` in fixed point, as int64 ring elements (range-checked, never clipped)."""
    u = np.asarray(update, dtype=np.float64).ravel()
    if not np.isfinite(u).all():
        raise ValueError("the update holds NaN or infinite values")
    w = float(weight) / cfg.max_weight
    if not 0 < w <= 1:
        raise ValueError(f"weight {weight} outside (0, max_weight={cfg.max_weight}]")
    v = np.append(u * w, w)
    peak = float(np.abs(v).max())
    if peak >= cfg.value_bound:
        raise ValueError(
            f"update value {peak:.4g} (weighted) exceeds the two-server range "
            f"{cfg.value_bound:.4g} (ring_bits={cfg.ring_bits}, frac_bits={cfg.frac_bits}, "
            f"max_clients={cfg.max_clients}); refusing rather than clipping")
    return ring.encode(torch.from_numpy(v), cfg.frac_bits).numpy()


def _seal_key(shared: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=16, salt=None, info=_INFO).derive(shared)


def client_share(update: np.ndarray, weight: float, cfg: TwoServerConfig,
                 public_key_b: bytes) -> tuple[np.ndarray, bytes]:
    """A client's upload: ``(share for A, seed sealed to B)``.

    ``share`` has dtype uint32 (k = 32) or uint64 (k = 64), one element per
    coordinate plus one for the weight.
    """
    v = encode(update, weight, cfg)
    seed = os.urandom(SEED_BYTES)
    share_a = _mask(v - _expand(seed, len(v), cfg.ring_bits), cfg.ring_bits)
    eph = X25519PrivateKey.generate()
    key = _seal_key(eph.exchange(X25519PublicKey.from_public_bytes(public_key_b)))
    nonce = os.urandom(12)
    eph_pub = eph.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    sealed = eph_pub + nonce + AESGCM(key).encrypt(nonce, seed, _INFO)
    return share_a.astype(cfg.share_dtype), sealed


class Aggregator:
    """One of the two aggregators, holding only its own shares (party-local).

    ``name`` is ``"A"`` (receives ring shares) or ``"B"`` (receives sealed seeds;
    owns the X25519 key pair whose public half the clients seal to).
    """

    def __init__(self, name: str, cfg: TwoServerConfig) -> None:
        if name not in ("A", "B"):
            raise ValueError("an aggregator is 'A' or 'B'")
        self.name, self.cfg = name, cfg
        self._key = X25519PrivateKey.generate() if name == "B" else None
        self._inbox: dict[int, object] = {}
        self._noise = CSPRNG()

    @property
    def public_key(self) -> bytes:
        if self._key is None:
            raise ValueError(
                "aggregator A has no sealing key (clients send it shares in the clear)")
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)

    def receive(self, client: int, payload: np.ndarray | bytes) -> None:
        """Store one client's share (A) or sealed seed (B); a second upload is refused."""
        if client in self._inbox:
            raise ValueError(f"aggregator {self.name}: client {client} already uploaded this round")
        if self.name == "A":
            share = np.asarray(payload)
            if share.dtype != self.cfg.share_dtype or share.ndim != 1:
                raise ValueError(f"aggregator A: client {client} sent a {share.dtype} "
                                 f"{share.shape} share, expected 1-D {self.cfg.share_dtype}")
            self._inbox[client] = share.astype(np.int64)
        else:
            if not isinstance(payload, bytes | bytearray) or len(payload) != SEALED_SEED_BYTES:
                raise ValueError(f"aggregator B: client {client} sent no valid sealed seed")
            self._inbox[client] = bytes(payload)

    def received(self) -> set[int]:
        return set(self._inbox)

    def _seed(self, sealed: bytes) -> bytes:
        assert self._key is not None
        eph, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
        key = _seal_key(self._key.exchange(X25519PublicKey.from_public_bytes(eph)))
        return AESGCM(key).decrypt(nonce, ct, _INFO)

    def partial_sum(self, included: set[int], length: int) -> np.ndarray:
        """This aggregator's share of ``Σ v`` over ``included`` (plus its own noise).

        ``length`` is the number of update coordinates (the weight slot comes after).
        Clears the inbox: shares are used for one sum only.
        """
        missing = included - set(self._inbox)
        if missing:
            raise ValueError(f"aggregator {self.name} holds nothing from clients {sorted(missing)}")
        bits = self.cfg.ring_bits
        total = np.zeros(length + 1, dtype=np.int64)
        for cid in sorted(included):
            item = self._inbox[cid]
            part = item if self.name == "A" else _expand(self._seed(item), length + 1, bits)
            if len(part) != length + 1:
                raise ValueError(f"client {cid}'s share has {len(part) - 1} coordinates, "
                                 f"expected {length}")
            total += part  # wraps modulo 2^64, as the ring does
        if self.cfg.noise_std > 0:
            noise = self._noise.normal((length,)).numpy() * self.cfg.noise_std
            total[:length] += np.round(noise * 2.0 ** self.cfg.frac_bits).astype(np.int64)
        self._inbox.clear()
        return _mask(total, bits)


def included_clients(a: Aggregator, b: Aggregator) -> set[int]:
    """Clients whose upload reached *both* aggregators (the only ones summed)."""
    return a.received() & b.received()


def reveal(a: Aggregator, b: Aggregator, length: int) -> tuple[np.ndarray, float, set[int]]:
    """Sum both partial sums and decode: ``(weighted mean update, Σw, included clients)``.

    In a deployment the two partial sums cross the network (one message each way);
    nothing else of either aggregator is revealed.
    """
    if a.cfg != b.cfg:
        raise ValueError("the two aggregators run with different parameters")
    included = included_clients(a, b)
    if not included:
        raise ValueError("no client reached both aggregators this round")
    cfg = a.cfg
    total = _mask(a.partial_sum(included, length) + b.partial_sum(included, length), cfg.ring_bits)
    if cfg.ring_bits == 32:
        total = np.where(total >= 2**31, total - 2**32, total)
    values = total.astype(np.float64) * 2.0 ** -cfg.frac_bits
    weight = float(values[-1])
    if not weight > 0:
        raise ValueError("the revealed weight sum is not positive (range overflow?)")
    return values[:-1] / weight, weight, included
