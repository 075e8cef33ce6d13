"""The consumption ledger: how far each preprocessing store was consumed, kept outside it.

A store's own ``consumed`` counter lives in the store directory, so a copy of
the directory taken before a run, restored afterwards, would hand out the same
triples again; and a reused triple lets the other party compute the difference
of two inputs. The ledger records, per store id and party, how many items were
ever taken, in a directory of its own (:func:`veil.config.state_dir`,
``$VEIL_STATE_DIR``). A store whose counter is behind its ledger entry was
restored from a copy (or its counter was edited) and is refused; so is a store
whose every item was consumed. While a store is open, its ledger entry is
locked, so two copies of one store cannot be consumed at the same time either.

Protection holds as far as the ledger directory is kept: a party that deletes
its own ledger can only replay its *own* half, and the honest party's ledger
refuses to go along (both halves must be at the same position to start).

Example
-------
>>> import tempfile
>>> ledger = StoreLedger(tempfile.mkdtemp())
>>> with ledger.claim("a1b2", party=0, consumed=0, total=2) as entry:
...     entry.record(1)
>>> ledger.claim("a1b2", party=0, consumed=0, total=2)   # a copy taken before the run
Traceback (most recent call last):
...
veil.sharing.errors.StoreReplayError: store a1b2 (party 0) was already consumed up to item 1...
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from veil import config
from veil.sharing.errors import StoreError, StoreReplayError

__all__ = ["LedgerEntry", "StoreLedger"]


class LedgerEntry:
    """One store's (locked) entry in the ledger, held while the store is open."""

    def __init__(self, path: Path, lock_fd: int, recorded: int, label: str) -> None:
        self._path = path
        self._lock_fd = lock_fd
        self.recorded = recorded
        self._label = label

    def record(self, consumed: int) -> None:
        """Durably note that ``consumed`` items were taken (before the store's own counter)."""
        if self._lock_fd < 0:
            raise StoreError(f"the ledger entry of {self._label} was released")
        if consumed < self.recorded:
            raise StoreReplayError(f"{self._label}: the ledger already records {self.recorded} "
                                   f"items consumed, not {consumed}")
        fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(str(consumed).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.recorded = consumed

    def release(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> LedgerEntry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


class StoreLedger:
    """The register of consumed preprocessing stores (see the module docstring).

    Parameters
    ----------
    root:
        Its directory; ``<state_dir>/stores`` by default (:func:`veil.config.state_dir`).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else config.state_dir() / "stores"

    def _entry_path(self, store_id: str, party: int) -> Path:
        # Store ids come from a manifest on disk: hashed, never used as a file name.
        digest = hashlib.sha256(f"{store_id}\0{party}".encode()).hexdigest()[:40]
        return self.root / digest

    def recorded(self, store_id: str, party: int) -> int:
        """Items of ``store_id`` that party ``party`` consumed, as the ledger knows it."""
        return self._read(self._entry_path(store_id, party), store_id, party)

    def _read(self, path: Path, store_id: str, party: int) -> int:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"cannot read the store ledger {path}: {exc}") from None
        try:
            return int(text.strip())
        except ValueError:
            # A damaged entry must not reopen the store to replay: refuse, name the file.
            raise StoreError(f"corrupt ledger entry {path} for store {store_id} (party "
                             f"{party})") from None

    def claim(self, store_id: str, party: int, consumed: int, total: int) -> LedgerEntry:
        """Lock and check the entry of a store about to be used (see the module docstring).

        Raises :class:`~veil.sharing.errors.StoreReplayError` if the store is behind
        the ledger or fully consumed, :class:`~veil.sharing.errors.StoreError` if
        another process holds it.
        """
        label = f"store {store_id} (party {party})"
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot create the store ledger directory {self.root} "
                             f"(set $VEIL_STATE_DIR): {exc}") from None
        path = self._entry_path(store_id, party)
        lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise StoreError(f"{label} is in use by another process (possibly from a copy "
                             "of the store directory)") from None
        try:
            recorded = self._read(path, store_id, party)
            if recorded > consumed:
                raise StoreReplayError(
                    f"{label} was already consumed up to item {recorded}, but this copy says "
                    f"{consumed}: it was restored from an earlier copy. Correlated randomness "
                    "is single-use (a replayed triple reveals the difference of two inputs); "
                    "run preprocessing again")
            if total and recorded >= total:
                raise StoreReplayError(f"{label} was already consumed entirely; run "
                                       "preprocessing again")
        except BaseException:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
            raise
        return LedgerEntry(path, lock_fd, recorded, label)
