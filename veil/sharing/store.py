"""Preprocessing stores: dealer material held in memory or on disk, consumed once, in order.

:func:`preprocess` runs the dealer ahead of time on a *plan* (the ordered list
of ``(kind, params)`` a computation will request) and writes one store per
party::

    store_dir/party0/store.json     manifest: store id, party, items (kind, params, file)
    store_dir/party0/consumed       how many items were taken (persisted before each take)
    store_dir/party0/items/000000.vm   one wire frame per item (never pickle)

Writes are atomic (temporary name, fsync, ``os.replace``, directory fsync); the
manifest is written last, so a crash mid-way leaves a directory without a
manifest, which is refused. Taking an item persists the incremented counter
*before* reading the item and deletes the item file afterwards: a crash can
lose an item, never replay one. A store is locked (``flock``) by the process
using it.

A copy of a store directory restored after a run would replay its items; the
:class:`~veil.sharing.ledger.StoreLedger`, kept outside every store
(``$VEIL_STATE_DIR``), records how far each store id was consumed and refuses
such a copy. Item file names are derived from the item's position, never read
from the manifest (a crafted manifest cannot point outside the store).

Example
-------
>>> from veil.sharing.material import Plan
>>> plan = Plan().add("beaver", shape_x=(3,), shape_y=(3,))
>>> stats = preprocess(plan, "/tmp/veil-doc-store", overwrite=True)   # doctest: +SKIP
>>> store = DiskStore("/tmp/veil-doc-store/party0")                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from veil.comm import wire
from veil.csprng import CSPRNG
from veil.sharing.errors import (
    MaterialExhaustedError,
    MaterialMismatchError,
    StoreError,
)
from veil.sharing.ledger import LedgerEntry, StoreLedger
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import get_kind, normalize_plan, request_key

FORMAT = "veil-store-1"


class MemoryStore:
    """Material for one party, in memory, consumed in order (used for ``run(plan=...)``)."""

    def __init__(self, items: list[tuple[str, dict, Any]], store_id: str = "memory") -> None:
        self._items = deque(items)  # (kind, canonical params, material)
        self.store_id = store_id
        self.consumed = 0
        self.total = len(items)

    @property
    def remaining(self) -> int:
        return len(self._items)

    def take(self, kind: str, params: dict) -> Any:
        """The next item; it must be of ``kind`` with ``params``."""
        if not self._items:
            raise MaterialExhaustedError(
                f"preprocessed material exhausted: the plan had {self.total} items and the "
                f"computation asked for more ({kind} {params})")
        k, p, material = self._items[0]
        if request_key(k, p) != request_key(kind, params):
            raise MaterialMismatchError(
                f"item {self.consumed} of the plan is {k} {p}, but the computation asked for "
                f"{kind} {params}")
        self._items.popleft()
        self.consumed += 1
        return material


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, replace)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class DiskStore:
    """One party's on-disk preprocessing store (see the module docstring).

    Parameters
    ----------
    path:
        The party's store directory (``<store_dir>/party<rank>``).
    ledger:
        Where consumption is recorded outside the store (the default
        :class:`~veil.sharing.ledger.StoreLedger` in ``$VEIL_STATE_DIR``).
    """

    def __init__(self, path: str | os.PathLike, ledger: StoreLedger | None = None) -> None:
        self.path = Path(path)
        self._lock_fd = -1
        self._entry: LedgerEntry | None = None
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"{self.path} is not a complete Veil store (no store.json); "
                             "it may be missing or a preprocessing run was interrupted")
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"corrupt store manifest {manifest}: {exc}") from None
        self.store_id, self.party, self.items = _check_manifest(meta, manifest)
        self.total = len(self.items)
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StoreError(f"store {self.path} is in use by another process") from None
        try:
            self.consumed = self._read_counter()
            ledger = ledger if ledger is not None else StoreLedger()
            self._entry = ledger.claim(self.store_id, self.party, self.consumed, self.total)
        except BaseException:
            self.close()
            raise

    def _read_counter(self) -> int:
        counter = self.path / "consumed"
        if not counter.exists():
            return 0
        try:
            value = int(counter.read_text().strip())
        except ValueError:
            raise StoreError(f"corrupt consumed counter in {self.path}") from None
        if not 0 <= value <= self.total:
            raise StoreError(f"consumed counter {value} out of range in {self.path}")
        return value

    @property
    def remaining(self) -> int:
        return self.total - self.consumed

    def take(self, kind: str, params: dict) -> Any:
        """Consume and return the next item, which must be ``kind`` with ``params``."""
        i = self.consumed
        if i >= self.total:
            raise MaterialExhaustedError(
                f"preprocessing store {self.path} is exhausted: all {self.total} items were "
                f"used; run preprocessing again (asked for {kind} {params})")
        item = self.items[i]
        if request_key(item["kind"], item["params"]) != request_key(kind, params):
            raise MaterialMismatchError(
                f"item {i} of store {self.path} is {item['kind']} {item['params']}, but the "
                f"computation asked for {kind} {params}")
        # Persist first (the ledger outside the store, then the store's counter): after a
        # crash, or from a copy of the directory, this item is gone, never served twice.
        if self._entry is None:
            raise StoreError(f"store {self.path} is closed")
        self._entry.record(i + 1)
        atomic_write(self.path / "consumed", str(i + 1).encode())
        self.consumed = i + 1
        file = self.path / "items" / _item_name(i)
        try:
            frame = bytearray(file.read_bytes())
        except OSError as exc:
            raise StoreError(f"store item {file} is missing or unreadable: {exc}") from None
        with contextlib.suppress(OSError):
            file.unlink()
        return wire.from_bytes(frame)

    def close(self) -> None:
        if self._entry is not None:
            self._entry.release()
            self._entry = None
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _item_name(index: int) -> str:
    """The file of item ``index`` inside ``items/`` (derived, never read from a manifest)."""
    return f"{index:06d}.vm"


def _check_manifest(meta: Any, manifest: Path) -> tuple[str, int, list[dict]]:
    """``(store_id, party, items)`` of a parsed manifest, every field checked."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StoreError(f"{manifest}: unknown store format {found!r}")
    store_id, party, items = meta.get("store_id"), meta.get("party"), meta.get("items")
    if not isinstance(store_id, str) or not 1 <= len(store_id) <= 128:
        raise StoreError(f"{manifest}: malformed store id")
    if party not in (0, 1) or isinstance(party, bool):
        raise StoreError(f"{manifest}: malformed party {party!r}")
    if not isinstance(items, list):
        raise StoreError(f"{manifest}: malformed item list")
    for i, item in enumerate(items):
        if (not isinstance(item, dict) or not isinstance(item.get("kind"), str)
                or not isinstance(item.get("params"), dict)):
            raise StoreError(f"{manifest}: malformed item {i}")
        if item.get("file", _item_name(i)) != _item_name(i):
            raise StoreError(f"{manifest}: item {i} names the file {item['file']!r}; an item's "
                             f"file is always items/{_item_name(i)} (refusing a crafted manifest)")
    return store_id, party, items


def generate_items(plan, rng: CSPRNG | None = None, keyring: MaskKeyring | None = None
                   ) -> tuple[list, list, float]:
    """Run the dealer's generators on a plan: per-party lists of ``(kind, params, material)``.

    Returns ``(items_party0, items_party1, seconds)``. Reusable masks (``keyring``,
    fresh by default) live only as long as this call: a plan that uses one must
    also issue it.
    """
    rng = rng or CSPRNG()
    keyring = keyring or MaskKeyring()
    items: tuple[list, list] = ([], [])
    t0 = time.perf_counter()
    for kind, params in normalize_plan(plan):
        m0, m1 = get_kind(kind).run(rng, keyring, params)
        items[0].append((kind, params, m0))
        items[1].append((kind, params, m1))
    return items[0], items[1], time.perf_counter() - t0


def write_store(path: str | os.PathLike, party: int, items: list, store_id: str,
                overwrite: bool = False) -> int:
    """Write one party's items as a store at ``path`` atomically; returns bytes written."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise StoreError(f"{path} already exists; refusing to overwrite a store "
                             "(pass overwrite=True to replace it)")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        (tmp / "items").mkdir()
        manifest_items, total = [], 0
        for i, (kind, params, material) in enumerate(items):
            name = _item_name(i)
            frame = wire.to_bytes(material)
            atomic_write(tmp / "items" / name, frame)
            total += len(frame)
            manifest_items.append({"kind": kind, "params": params, "file": name})
        _fsync_dir(tmp / "items")
        manifest = {"format": FORMAT, "store_id": store_id, "party": party,
                    "items": manifest_items}
        atomic_write(tmp / "store.json", json.dumps(manifest).encode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return total


def preprocess(plan, directory: str | os.PathLike, *, overwrite: bool = False,
               rng: CSPRNG | None = None, keyring: MaskKeyring | None = None
               ) -> dict[str, float]:
    """Generate the material of ``plan`` offline into ``directory/party0`` and ``party1``.

    Returns offline statistics: generation time, items, bytes per party.

    Example
    -------
    >>> from veil.sharing.material import Plan
    >>> stats = preprocess(Plan().add("matmul", shape_x=(2, 3), shape_y=(3, 4)),
    ...                    "/tmp/veil-doc-store", overwrite=True)
    >>> stats["items"]
    1
    """
    rng = rng or CSPRNG()
    items0, items1, gen_s = generate_items(plan, rng, keyring)
    store_id = rng.random_bytes(16).hex()
    t0 = time.perf_counter()
    directory = Path(directory)
    b0 = write_store(directory / "party0", 0, items0, store_id, overwrite)
    b1 = write_store(directory / "party1", 1, items1, store_id, overwrite)
    return {"items": len(items0), "generate_s": gen_s, "write_s": time.perf_counter() - t0,
            "bytes_party0": b0, "bytes_party1": b1, "store_id": store_id}


def open_store(directory: str | os.PathLike, rank: int,
               ledger: StoreLedger | None = None) -> DiskStore:
    """Open party ``rank``'s store: ``directory/party<rank>`` or ``directory`` itself."""
    directory = Path(directory)
    path = directory / f"party{rank}" if (directory / f"party{rank}").is_dir() else directory
    store = DiskStore(path, ledger)
    if store.party != rank:
        store.close()
        raise StoreError(f"store {path} belongs to party {store.party}, not party {rank}")
    return store
