"""Fixed-key AES-128 PRG in Matyas–Meyer–Oseas mode, batched through OpenSSL.

The GGM trees of the DPF and DCF expand each 128-bit seed ``s`` into several
pseudorandom blocks ``G_j(s) = AES_{k_j}(s) xor s``, one fixed public key ``k_j``
per output block (distinct keys for distinct outputs, so no output is a
function of another). Seeds are numpy ``uint64`` arrays of shape ``(N, 2)``; one
call expands all ``N`` seeds with a single AES-ECB pass (AES-NI through the
``cryptography`` package), never a Python loop over keys.

Example
-------
>>> import numpy as np
>>> from veil.fss.prg import MMO
>>> prg = MMO(3)
>>> seeds = np.zeros((4, 2), dtype=np.uint64)
>>> prg.expand(seeds, 0).shape
(4, 2)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_BYTES = 16

_T = TypeVar("_T")
_LOCAL = threading.local()


def per_thread(factory: Callable[[int, int], _T], count: int, first: int) -> _T:
    """This thread's ``factory(count, first)``, built once per thread.

    AES contexts (OpenSSL's, whichever wrapper holds them) are borrowed exclusively
    by one caller at a time, so each thread keeps its own.
    """
    cache = getattr(_LOCAL, "instances", None)
    if cache is None:
        cache = _LOCAL.instances = {}
    key = (factory, count, first)
    if key not in cache:
        cache[key] = factory(count, first)
    return cache[key]


def fixed_key(index: int) -> bytes:
    """The public fixed AES key number ``index`` (SHA-256 of a domain label)."""
    return hashlib.sha256(f"veil.fss.prg.mmo/{index}".encode()).digest()[:BLOCK_BYTES]


class MMO:
    """A family of fixed-key Matyas–Meyer–Oseas PRG outputs.

    Parameters
    ----------
    count:
        Number of distinct output blocks (one fixed AES key each).
    first:
        Index of the first fixed key, so that disjoint families never share keys.
    """

    def __init__(self, count: int, first: int = 0) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self._enc = [
            Cipher(algorithms.AES(fixed_key(first + j)), modes.ECB()).encryptor()
            for j in range(count)
        ]
        self.count = count

    def expand(self, seeds: np.ndarray, j: int, out: np.ndarray | None = None) -> np.ndarray:
        """``AES_{k_j}(s) xor s`` for every row ``s`` of ``seeds`` (uint64, ``(N, 2)``)."""
        if seeds.dtype != np.uint64 or seeds.ndim != 2 or seeds.shape[1] != 2:
            raise ValueError(f"seeds must be uint64 (N, 2), got {seeds.dtype} {seeds.shape}")
        seeds = np.ascontiguousarray(seeds)
        n = seeds.shape[0]
        if out is None:
            out = np.empty((n, 2), dtype=np.uint64)
        if n:
            # update_into wants room for one extra block; write into a spare row then trim.
            buf = np.empty((n + 1, 2), dtype=np.uint64)
            src, dst = seeds.view(np.uint8).reshape(-1), buf.view(np.uint8).reshape(-1)
            self._enc[j].update_into(src, dst)
            np.bitwise_xor(buf[:n], seeds, out=out)
        return out

    def encrypt_into(self, seeds: np.ndarray, j: int, out: np.ndarray) -> None:
        """Raw ``AES_{k_j}(s)`` of every seed into ``out`` (uint64, ``(N + 1, 2)``: one spare row).

        The MMO XOR with the seed is left to the caller (the fused kernels do it).
        """
        n = seeds.shape[0]
        if out.shape != (n + 1, 2) or out.dtype != np.uint64 or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous uint64 array of shape (N + 1, 2)")
        if n:
            src = np.ascontiguousarray(seeds).view(np.uint8).reshape(-1)
            self._enc[j].update_into(src, out.view(np.uint8).reshape(-1))

    def expand_many(self, seeds: np.ndarray, first: int, blocks: int) -> np.ndarray:
        """Blocks ``first .. first+blocks-1`` of every seed as uint64 words ``(N, 2*blocks)``."""
        n = seeds.shape[0]
        out = np.empty((n, 2 * blocks), dtype=np.uint64)
        for b in range(blocks):
            out[:, 2 * b : 2 * b + 2] = self.expand(seeds, first + b)
        return out
