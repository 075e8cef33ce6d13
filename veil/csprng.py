"""Cryptographically secure random tensors: AES-128 in counter mode.

Everything secret in Veil (shares, masks, dealer material, FSS keys, DP noise,
encryption randomness) is drawn from :class:`CSPRNG`, never from torch's or
numpy's default generators. The keystream of AES-128-CTR (OpenSSL through the
``cryptography`` package, AES-NI where the CPU has it) is turned into tensors
without per-element Python work.

A generator is keyed either from ``os.urandom`` (the default) or from an
explicit 16-byte seed; the seeded form lets two parties expand the same short
seed into the same stream (dealer compression, pairwise masks).

Example
-------
>>> from veil.csprng import CSPRNG
>>> g = CSPRNG()
>>> x = g.integers((4, 8))          # uniform over all int64 values
>>> z = g.normal((3,))              # standard normal, float64
>>> g2, g3 = CSPRNG(seed=b"0" * 16), CSPRNG(seed=b"0" * 16)
>>> bool((g2.integers((5,)) == g3.integers((5,))).all())
True
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16

Shape = int | Sequence[int] | torch.Size


def _numel(shape: Shape) -> tuple[tuple[int, ...], int]:
    dims = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimension in shape {dims}")
    return dims, math.prod(dims)


class CSPRNG:
    """A stream of cryptographically secure random bytes shaped into tensors.

    Parameters
    ----------
    seed:
        16 bytes. ``None`` (default) draws a fresh key from ``os.urandom``.
        Two generators built from the same seed produce the same stream.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            seed = os.urandom(SEED_BYTES)
        if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes, got {seed!r:.40}")
        self._encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(b"\0" * 16)).encryptor()
        self._lock = threading.Lock()

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""
        if n < 0:
            raise ValueError("n must be non-negative")
        with self._lock:
            return self._encryptor.update(bytes(n))

    def _array(self, count: int, dtype: np.dtype) -> np.ndarray:
        n = count * np.dtype(dtype).itemsize
        # update_into writes the keystream straight into a writable buffer: no extra copy
        buf = bytearray(n + 15)
        with self._lock:
            self._encryptor.update_into(bytes(n), buf)
        return np.frombuffer(buf, dtype=np.uint8, count=n).view(dtype)

    def integers(self, shape: Shape, device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform int64 tensor over the whole ring Z_2^64 (all 2^64 values)."""
        dims, n = _numel(shape)
        t = torch.from_numpy(self._array(n, np.int64)).reshape(dims)
        return t.to(device) if device is not None else t

    def bits(self, shape: Shape, device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform bits as an int64 tensor of 0/1."""
        dims, n = _numel(shape)
        packed = self._array((n + 7) // 8, np.uint8)
        b = np.unpackbits(packed)[:n].astype(np.int64)
        t = torch.from_numpy(b).reshape(dims)
        return t.to(device) if device is not None else t

    def below(self, bound: int, shape: Shape) -> torch.Tensor:
        """Uniform integers in ``[0, bound)`` (int64), without modulo bias.

        Rejection sampling on 63-bit draws, vectorised: redraws only the few
        rejected entries.
        """
        if not 0 < bound <= 2**62:
            raise ValueError(f"bound must be in (0, 2^62], got {bound}")
        dims, n = _numel(shape)
        limit = (2**63 // bound) * bound
        out = np.empty(n, dtype=np.int64)
        todo = np.arange(n)
        while todo.size:
            draw = self._array(todo.size, np.uint64) >> np.uint64(1)
            ok = draw < np.uint64(limit)
            out[todo[ok]] = (draw[ok] % np.uint64(bound)).astype(np.int64)
            todo = todo[~ok]
        return torch.from_numpy(out).reshape(dims)

    def uniform(self, shape: Shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Uniform floats in ``[0, 1)`` with 53 random bits each."""
        dims, n = _numel(shape)
        u = (self._array(n, np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return torch.from_numpy(u).reshape(dims).to(dtype)

    def uniform_open(self, shape: Shape) -> torch.Tensor:
        """Uniform float64 in the open interval ``(0, 1)`` (safe for ``log``)."""
        dims, n = _numel(shape)
        u = ((self._array(n, np.uint64) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        return torch.from_numpy(u).reshape(dims)

    def normal(
        self,
        shape: Shape,
        mean: float = 0.0,
        std: float = 1.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Gaussian samples (Box-Muller on secure uniforms)."""
        dims, n = _numel(shape)
        half = (n + 1) // 2
        u1, u2 = self.uniform_open(half), self.uniform_open(half)
        r = torch.sqrt(-2.0 * torch.log(u1))
        z = torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)])[:n]
        t = (z * std + mean).reshape(dims).to(dtype)
        return t.to(device) if device is not None else t

    def seed(self) -> bytes:
        """A fresh 16-byte seed drawn from this stream (to key a child generator)."""
        return self.random_bytes(SEED_BYTES)


_local = threading.local()


def default_generator() -> CSPRNG:
    """This thread's generator, keyed from ``os.urandom`` (re-keyed after ``fork``)."""
    pid = os.getpid()
    gen = getattr(_local, "gen", None)
    if gen is None or getattr(_local, "pid", None) != pid:
        gen = CSPRNG()
        _local.gen, _local.pid = gen, pid
    return gen
