"""Versioned binary serialisation of FE keys and ciphertexts.

Layout: ``b"VEILFE"``, a 2-byte format version, a 4-byte header length, a JSON
header (kind, sizes, the id of the master public key) and a payload of
fixed-size group elements (compressed: 48 bytes in ``G1``, 96 in ``G2``),
scalars (32 bytes) and int64 matrices. Loading checks the magic, the version,
the sizes, that every group element decodes to a valid point of the right
subgroup (``pymcl`` refuses others), that a public key is not degenerate and
that its id matches its contents. Pass ``mpk=`` to :func:`load`/:func:`loads`
to also refuse a ciphertext or key made under another public key.

Example
-------
>>> from veil import fe
>>> import numpy as np
>>> mpk, msk = fe.setup(2)
>>> ct = fe.encrypt(mpk, np.array([3, 4]))
>>> fe.loads(fe.dumps(ct), mpk=mpk).n
2
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from pymcl import G1, G2

from veil.fe.group import G1_BYTES, G2_BYTES, ORDER
from veil.fe.projection import ProjectedKey
from veil.fe.scheme import (
    Ciphertext,
    FEError,
    FunctionalKey,
    KeyMismatchError,
    MasterPublicKey,
    MasterSecretKey,
)

MAGIC = b"VEILFE"
VERSION = 1
_KINDS = {
    MasterPublicKey: "mpk",
    MasterSecretKey: "msk",
    Ciphertext: "ciphertext",
    FunctionalKey: "functional_key",
    ProjectedKey: "projected_key",
}
Item = MasterPublicKey | MasterSecretKey | Ciphertext | FunctionalKey | ProjectedKey


class SerializationError(FEError):
    """Malformed, truncated, foreign or tampered serialised data."""


def _matrix_bytes(m: np.ndarray) -> bytes:
    return np.ascontiguousarray(m, dtype="<i8").tobytes()


def dumps(item: Item) -> bytes:
    """Serialise a key or ciphertext to bytes."""
    kind = _KINDS.get(type(item))
    if kind is None:
        raise TypeError(f"cannot serialise {type(item).__name__}")
    header: dict[str, object] = {"kind": kind}
    if isinstance(item, MasterPublicKey):
        header.update(n=item.n, id=item.id)
        payload = b"".join(p.serialize() for p in item.s_g1)
        payload += b"".join(q.serialize() for q in item.t_g2)
    elif isinstance(item, MasterSecretKey):
        header.update(n=item.n, mpk_id=item.mpk_id)
        payload = b"".join(v.to_bytes(32, "little") for v in (*item.s, *item.t))
    elif isinstance(item, Ciphertext):
        header.update(n=item.n, mpk_id=item.mpk_id)
        payload = item.gamma_g1.serialize()
        payload += b"".join(p.serialize() for pair in item.a for p in pair)
        payload += b"".join(q.serialize() for pair in item.b for q in pair)
    elif isinstance(item, FunctionalKey):
        header.update(n=item.Q.shape[0], mpk_id=item.mpk_id)
        payload = item.key.serialize() + _matrix_bytes(item.Q)
    else:
        header.update(n=item.n, k=item.k, outputs=item.outputs, mpk_id=item.mpk_id)
        payload = b"".join(q.serialize() for q in item.keys)
        payload += _matrix_bytes(item.P) + _matrix_bytes(item.D)
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<HI", VERSION, len(head)) + head + payload


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.pos = data, offset

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise SerializationError("truncated data")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def g1(self) -> G1:
        raw = self.take(G1_BYTES)
        try:
            return G1.deserialize(raw)
        except ValueError as exc:
            raise SerializationError("invalid G1 element") from exc

    def g2(self) -> G2:
        raw = self.take(G2_BYTES)
        try:
            return G2.deserialize(raw)
        except ValueError as exc:
            raise SerializationError("invalid G2 element") from exc

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        raw = self.take(8 * rows * cols)
        return np.frombuffer(raw, dtype="<i8").reshape(rows, cols).astype(np.int64)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SerializationError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def _positive(header: dict, name: str) -> int:
    v = header.get(name)
    if not isinstance(v, int) or v < 1 or v > 1 << 24:
        raise SerializationError(f"bad {name!r} in header: {v!r}")
    return v


def loads(data: bytes, mpk: MasterPublicKey | None = None) -> Item:
    """Deserialise bytes written by :func:`dumps`, validating them.

    Parameters
    ----------
    mpk: when given, refuse (:class:`KeyMismatchError`) a ciphertext, secret key or
        functional key made under another master public key.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("loads expects bytes")
    data = bytes(data)
    if data[: len(MAGIC)] != MAGIC:
        raise SerializationError("not a Veil FE object (bad magic)")
    if len(data) < len(MAGIC) + 6:
        raise SerializationError("truncated data")
    version, head_len = struct.unpack_from("<HI", data, len(MAGIC))
    if version != VERSION:
        raise SerializationError(f"unsupported format version {version} (this is {VERSION})")
    start = len(MAGIC) + 6
    try:
        header = json.loads(data[start : start + head_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerializationError("corrupt header") from exc
    if not isinstance(header, dict):
        raise SerializationError("corrupt header")
    r = _Reader(data, start + head_len)
    kind = header.get("kind")
    n = _positive(header, "n")
    item: Item
    if kind == "mpk":
        s_g1 = [r.g1() for _ in range(n)]
        t_g2 = [r.g2() for _ in range(n)]
        r.done()
        item = MasterPublicKey.build(s_g1, t_g2)
        if item.id != header.get("id"):
            raise SerializationError("public key id does not match its contents")
        if mpk is not None and item.id != mpk.id:
            raise KeyMismatchError("this is another master public key")
        return item
    mpk_id = header.get("mpk_id")
    if not isinstance(mpk_id, str) or not mpk_id:
        raise SerializationError("missing mpk_id")
    if kind == "msk":
        vals = [int.from_bytes(r.take(32), "little") for _ in range(2 * n)]
        r.done()
        if any(v >= ORDER for v in vals):
            raise SerializationError("secret scalar out of range")
        item = MasterSecretKey(tuple(vals[:n]), tuple(vals[n:]), mpk_id)
    elif kind == "ciphertext":
        gamma = r.g1()
        a = [(r.g1(), r.g1()) for _ in range(n)]
        b = [(r.g2(), r.g2()) for _ in range(n)]
        r.done()
        item = Ciphertext(gamma, tuple(a), tuple(b), mpk_id)
    elif kind == "functional_key":
        key = r.g2()
        Q = r.matrix(n, n)
        r.done()
        item = FunctionalKey(key, Q, mpk_id)
    elif kind == "projected_key":
        k, outputs = _positive(header, "k"), _positive(header, "outputs")
        keys = [r.g2() for _ in range(outputs)]
        P, D = r.matrix(n, k), r.matrix(k, outputs)
        r.done()
        item = ProjectedKey(P, D, tuple(keys), mpk_id)
    else:
        raise SerializationError(f"unknown kind {kind!r}")
    if mpk is not None and mpk_id != mpk.id:
        raise KeyMismatchError(f"this {kind} was made under another master public key")
    return item


def dump(item: Item, path: str | os.PathLike) -> None:
    """Write ``dumps(item)`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(dumps(item))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, mpk: MasterPublicKey | None = None) -> Item:
    """Read a key or ciphertext written by :func:`dump` (see :func:`loads`)."""
    return loads(Path(path).read_bytes(), mpk=mpk)
