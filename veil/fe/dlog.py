"""Discrete logarithm in ``GT`` by baby-step giant-step, with a table cached on disk.

Decryption yields ``g_T ** y`` for a small integer ``y``; finding ``y`` needs a
discrete logarithm. :class:`DiscreteLog` precomputes the baby steps
``g_T ** j`` for ``0 <= j < m`` (``m = 2 ** table_bits``) once, keyed by an
8-byte digest of each element's canonical serialisation, sorted, and saved as a
small ``.npz`` file under ``~/.cache/veil/fe`` (12 bytes per entry: 12 MiB for
the default ``m = 2^20``). A lookup then walks the giant steps
``h * g_T ** (-i m)`` outward from ``i = 0`` (small values first) in batches,
and matches them against the table with one vectorised ``searchsorted``.
A digest hit is confirmed by recomputing ``g_T ** y`` and comparing whole
elements, so a digest collision can never give a wrong answer.

Values outside ``[-bound, bound]`` raise :class:`DiscreteLogRangeError`; the
search never runs past ``bound``.

Example
-------
>>> from veil.fe.dlog import DiscreteLog
>>> from veil.fe.group import GT_GEN, gt_power
>>> dl = DiscreteLog(table_bits=10, cache_dir=None)
>>> dl.solve(gt_power(GT_GEN, -123456), bound=2**20)
-123456
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from pymcl import GT

from veil import config
from veil.fe.group import GT_GEN, gt_power

_FORMAT = 1
_BATCH = 64
MAX_TABLE_BITS = 26


class DiscreteLogRangeError(ValueError):
    """The value lies outside the range the decryptor was asked to search."""


def default_cache_dir() -> Path:
    """``$VEIL_CACHE/fe`` or ``~/.cache/veil/fe``."""
    return config.cache_dir() / "fe"


def _digest(element: GT) -> int:
    # The canonical serialisation is uniform-looking; 8 bytes of it are a
    # digest, and every hit is confirmed on the whole element anyway.
    return int.from_bytes(element.serialize()[:8], "little")


def _generator_tag() -> str:
    return hashlib.sha256(GT_GEN.serialize()).hexdigest()[:16]


class DiscreteLog:
    """Baby-step giant-step solver for ``g_T ** y`` with ``|y| <= bound``.

    Parameters
    ----------
    table_bits: the table holds ``2 ** table_bits`` baby steps; a lookup costs at
        most ``bound / 2 ** (table_bits - 1)`` giant steps.
    cache_dir: folder for the table file; ``None`` keeps it in memory only.
    """

    def __init__(self, table_bits: int = 20, cache_dir: str | os.PathLike | None = "default"):
        if not 1 <= table_bits <= MAX_TABLE_BITS:
            raise ValueError(f"table_bits must be in [1, {MAX_TABLE_BITS}], got {table_bits}")
        self.table_bits = table_bits
        self.m = 1 << table_bits
        if cache_dir == "default":
            cache_dir = default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._keys, self._values = self._load_or_build()
        self._giant = gt_power(GT_GEN, -self.m)  # g^-m
        self._giant_inv = gt_power(GT_GEN, self.m)

    @property
    def path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"bsgs-{_generator_tag()}-v{_FORMAT}-{self.table_bits}.npz"

    def _load_or_build(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.path
        if path is not None and path.exists():
            try:
                with np.load(path) as f:
                    keys, values = f["keys"], f["values"]
                if keys.shape == (self.m,) and values.shape == (self.m,):
                    return keys, values
            except (OSError, ValueError, KeyError):
                pass  # a corrupt or foreign file: rebuild it below
        keys, values = self._build()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a temporary file then rename: a crash never leaves a torn table.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, values=values)
            os.replace(tmp, path)
        return keys, values

    def _build(self) -> tuple[np.ndarray, np.ndarray]:
        keys = np.empty(self.m, dtype=np.uint64)
        cur, g = GT(), GT_GEN
        for j in range(self.m):
            keys[j] = _digest(cur)
            cur = cur * g
        order = np.argsort(keys, kind="stable")
        return keys[order], order.astype(np.uint32)

    def _candidates(self, digest: int) -> np.ndarray:
        lo = np.searchsorted(self._keys, np.uint64(digest), side="left")
        hi = np.searchsorted(self._keys, np.uint64(digest), side="right")
        return self._values[lo:hi]

    def solve(self, h: GT, bound: int) -> int:
        """The integer ``y`` with ``g_T ** y == h`` and ``|y| <= bound``.

        Raises
        ------
        DiscreteLogRangeError: no such ``y`` in ``[-bound, bound]``.
        """
        bound = int(bound)
        if bound < 0:
            raise ValueError(f"bound must be non-negative, got {bound}")
        # y = i*m + j with 0 <= j < m; i runs over [imin, imax].
        imin, imax = -((bound + self.m - 1) // self.m), bound // self.m
        # Walk i = 0, 1, ... with h * g^(-i m), and i = -1, -2, ... with h * g^(i m).
        up, down = h, h * self._giant_inv
        i_up, i_down = 0, -1
        while i_up <= imax or i_down >= imin:
            batch: list[tuple[int, GT]] = []
            for _ in range(_BATCH):
                if i_up <= imax:
                    batch.append((i_up, up))
                    up, i_up = up * self._giant, i_up + 1
                if i_down >= imin:
                    batch.append((i_down, down))
                    down, i_down = down * self._giant_inv, i_down - 1
            digests = np.array([_digest(e) for _, e in batch], dtype=np.uint64)
            pos = np.searchsorted(self._keys, digests)
            pos = np.minimum(pos, self.m - 1)
            for idx in np.nonzero(self._keys[pos] == digests)[0]:
                i, elem = batch[idx]
                for j in self._candidates(int(digests[idx])):
                    y = i * self.m + int(j)
                    if -bound <= y <= bound and gt_power(GT_GEN, y) == h:
                        return y
        raise DiscreteLogRangeError(
            f"the decrypted value is outside [-{bound}, {bound}] (or the ciphertext and key "
            "do not match); raise `bound` if the function's output can be that large"
        )
