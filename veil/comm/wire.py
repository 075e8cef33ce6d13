"""The wire format of Veil messages: a JSON header plus raw little-endian buffers.

Never pickle: a peer's bytes must never be able to execute code. A message is
a tree of dicts (string keys), lists, tuples, JSON scalars, ``bytes``, numpy
arrays and torch tensors. It is encoded as::

    b"VEIL1\\0\\0\\0" | u64 header length | header (UTF-8 JSON) | pad to 8 |
    buffer 0 | pad to 8 | buffer 1 | ...

The header describes the tree; tensors and arrays are ``["t" | "a", index,
dtype, shape]`` nodes pointing at buffers. Only plain numeric dtypes from a
whitelist are accepted and every buffer's length is checked against its shape.
Buffers are 8-byte aligned so that tensors are decoded without a copy.

Decoding is bounded: the header is at most :data:`MAX_HEADER_BYTES`, the tree
at most :data:`MAX_DEPTH` deep, a tensor at most :data:`MAX_DIMS` dimensions,
every buffer index is used exactly once (two tensors never share memory), and
anything malformed raises :class:`~veil.comm.errors.WireFormatError` (never
another exception, never a partial result).

Example
-------
>>> import torch
>>> from veil.comm import wire
>>> frame = wire.to_bytes({"x": torch.arange(3), "tag": "hi"})
>>> wire.from_bytes(frame)["x"]
tensor([0, 1, 2])
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import torch

from veil.comm.errors import WireFormatError

MAGIC = b"VEIL1\0\0\0"
#: Largest JSON header accepted (a prefetch of thousands of material items is ~1 MB).
MAX_HEADER_BYTES = 64 << 20
#: Deepest nesting of dicts/lists/tuples in a message.
MAX_DEPTH = 32
#: Most dimensions of one tensor or array.
MAX_DIMS = 32
#: Largest size of one dimension.
_MAX_DIM_SIZE = 1 << 48
_PAD = 8
_LEN = struct.Struct("<Q")

_DTYPES: dict[str, tuple[torch.dtype, np.dtype]] = {
    "int64": (torch.int64, np.dtype("<i8")),
    "int32": (torch.int32, np.dtype("<i4")),
    "int16": (torch.int16, np.dtype("<i2")),
    "int8": (torch.int8, np.dtype("i1")),
    "uint8": (torch.uint8, np.dtype("u1")),
    "bool": (torch.bool, np.dtype("?")),
    "float64": (torch.float64, np.dtype("<f8")),
    "float32": (torch.float32, np.dtype("<f4")),
    "float16": (torch.float16, np.dtype("<f2")),
}
_TORCH_NAMES = {v[0]: k for k, v in _DTYPES.items()}
_NUMPY_NAMES = {v[1]: k for k, v in _DTYPES.items()}
_NUMPY_NAMES.update({np.dtype("=i8"): "int64", np.dtype("=f8"): "float64"})


def _pad(n: int) -> int:
    return (-n) % _PAD


class Encoded:
    """A message ready for the wire: a header and a list of raw buffers."""

    __slots__ = ("header", "buffers", "nbytes")

    def __init__(self, header: bytes, buffers: list[memoryview]) -> None:
        self.header = header
        self.buffers = buffers
        size = len(MAGIC) + _LEN.size + len(header) + _pad(len(header))
        for b in buffers:
            size += b.nbytes + _pad(b.nbytes)
        self.nbytes = size

    def to_bytearray(self) -> bytearray:
        """The whole frame in one contiguous (writable) buffer: one copy of the data."""
        out = bytearray(self.nbytes)
        pos = 0
        for chunk in self.chunks():
            n = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            out[pos : pos + n] = chunk
            pos += n
        return out

    def chunks(self) -> list[bytes | memoryview]:
        """The byte chunks of the frame, in order (padding included)."""
        out: list[bytes | memoryview] = [
            MAGIC + _LEN.pack(len(self.header)) + self.header + b"\0" * _pad(len(self.header))
        ]
        for b in self.buffers:
            out.append(b)
            if _pad(b.nbytes):
                out.append(b"\0" * _pad(b.nbytes))
        return out


def encode(obj: Any) -> Encoded:
    """Encode a message tree (see the module docstring) without copying tensor data."""
    buffers: list[memoryview] = []

    def walk(o: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WireFormatError(f"message nested deeper than {MAX_DEPTH} levels")
        if isinstance(o, torch.Tensor):
            name = _TORCH_NAMES.get(o.dtype)
            if name is None:
                raise WireFormatError(f"tensor dtype {o.dtype} cannot be sent")
            arr = o.detach().to("cpu").contiguous().numpy()
            buffers.append(memoryview(arr).cast("B") if arr.size else memoryview(b""))
            return ["t", len(buffers) - 1, name, list(o.shape)]
        if isinstance(o, np.ndarray):
            name = _NUMPY_NAMES.get(o.dtype)
            if name is None:
                raise WireFormatError(f"array dtype {o.dtype} cannot be sent")
            arr = np.ascontiguousarray(o)
            buffers.append(memoryview(arr).cast("B") if arr.size else memoryview(b""))
            return ["a", len(buffers) - 1, name, list(o.shape)]
        if isinstance(o, bytes | bytearray | memoryview):
            mv = memoryview(bytes(o)) if not isinstance(o, bytes) else memoryview(o)
            buffers.append(mv)
            return ["b", len(buffers) - 1, mv.nbytes]
        if isinstance(o, dict):
            if not all(isinstance(k, str) for k in o):
                raise WireFormatError("message dict keys must be strings")
            return ["d", {k: walk(v, depth + 1) for k, v in o.items()}]
        if isinstance(o, list):
            return ["l", [walk(v, depth + 1) for v in o]]
        if isinstance(o, tuple):
            return ["u", [walk(v, depth + 1) for v in o]]
        if o is None or isinstance(o, bool | int | float | str):
            if isinstance(o, int) and not isinstance(o, bool) and not -(2**63) <= o < 2**64:
                raise WireFormatError("integer too large for the wire")
            return ["v", o]
        if isinstance(o, np.generic):
            return ["v", o.item()]
        raise WireFormatError(f"cannot send an object of type {type(o).__name__}")

    tree = walk(obj)
    header = json.dumps(tree, separators=(",", ":"), allow_nan=True).encode()
    return Encoded(header, buffers)


def wire_size(obj: Any) -> int:
    """The number of bytes ``obj`` takes on the wire (frame only, no length prefix)."""
    return encode(obj).nbytes


def to_bytes(obj: Any) -> bytearray:
    """Encode ``obj`` into one contiguous frame."""
    return encode(obj).to_bytearray()


def from_bytes(frame: bytearray | bytes) -> Any:
    """Decode a frame produced by :func:`to_bytes` (tensors share its memory).

    Raises :class:`WireFormatError` on anything malformed.
    """
    if isinstance(frame, bytes):
        frame = bytearray(frame)
    try:
        return _decode(frame)
    except WireFormatError:
        raise
    except (ValueError, TypeError, RuntimeError, OverflowError, RecursionError,
            MemoryError, KeyError, IndexError) as exc:
        # Belt and braces: the checks below should leave nothing for torch/numpy to reject.
        raise WireFormatError(f"malformed message ({type(exc).__name__})") from None


def _decode(frame: bytearray) -> Any:
    view = memoryview(frame)
    head = len(MAGIC) + _LEN.size
    if len(frame) < head or bytes(view[: len(MAGIC)]) != MAGIC:
        raise WireFormatError("not a Veil message (bad magic)")
    (hlen,) = _LEN.unpack_from(frame, len(MAGIC))
    if hlen > MAX_HEADER_BYTES:
        raise WireFormatError(f"message header of {hlen} bytes exceeds {MAX_HEADER_BYTES}")
    if head + hlen > len(frame):
        raise WireFormatError("truncated message header")
    try:
        tree = json.loads(bytes(view[head : head + hlen]).decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers beyond Python's digit limit
        raise WireFormatError(f"corrupt message header: {type(exc).__name__}") from None
    pos = head + hlen + _pad(hlen)
    # Buffer offsets follow from the header: walk it once to find the sizes in order.
    sizes: dict[int, int] = {}

    def claim(idx: int, size: int) -> None:
        if idx in sizes:
            raise WireFormatError(f"buffer {idx} is referenced twice")
        sizes[idx] = size

    def scan(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise WireFormatError(f"message nested deeper than {MAX_DEPTH} levels")
        tag, body = _node(node)
        if tag in ("t", "a"):
            _, idx, name, shape = node
            if name not in _DTYPES or not isinstance(shape, list) or len(shape) > MAX_DIMS \
                    or not all(_is_int(s) and 0 <= s < _MAX_DIM_SIZE for s in shape):
                raise WireFormatError(f"bad tensor descriptor {node!r:.80}")
            claim(idx, math.prod(shape) * _DTYPES[name][1].itemsize)
        elif tag == "b":
            if not _is_int(node[2]) or node[2] < 0:
                raise WireFormatError("bad bytes descriptor")
            claim(body, node[2])
        elif tag == "d":
            for v in body.values():
                scan(v, depth + 1)
        elif tag in ("l", "u"):
            for v in body:
                scan(v, depth + 1)

    scan(tree, 0)
    nbuf = len(sizes)
    if sorted(sizes) != list(range(nbuf)):
        raise WireFormatError("message buffers are not numbered 0..n-1")
    offsets: list[tuple[int, int]] = []
    for i in range(nbuf):
        offsets.append((pos, sizes[i]))
        pos += sizes[i] + _pad(sizes[i])
        if pos > len(frame):
            raise WireFormatError(f"message length mismatch: buffers exceed the {len(frame)} "
                                  "bytes received")
    if pos != len(frame):
        raise WireFormatError(f"message length mismatch: expected {pos} bytes, got {len(frame)}")

    def build(node: Any) -> Any:
        tag, body = _node(node)
        if tag == "v":
            return body
        if tag == "d":
            return {k: build(v) for k, v in body.items()}
        if tag == "l":
            return [build(v) for v in body]
        if tag == "u":
            return tuple(build(v) for v in body)
        if tag == "b":
            start, n = offsets[body]
            return bytes(view[start : start + n])
        _, idx, name, shape = node
        start, n = offsets[idx]
        tdtype, ndtype = _DTYPES[name]
        if tag == "a":
            return np.frombuffer(frame, dtype=ndtype, count=n // ndtype.itemsize,
                                 offset=start).reshape(shape)
        if n == 0:
            return torch.empty(shape, dtype=tdtype)
        return torch.frombuffer(frame, dtype=tdtype, count=n // ndtype.itemsize,
                                offset=start).reshape(shape)

    return build(tree)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_SCALARS = (type(None), bool, int, float, str)


def _node(node: Any) -> tuple[str, Any]:
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise WireFormatError(f"malformed message node {node!r:.80}")
    tag = node[0]
    if tag in ("t", "a"):
        if len(node) != 4 or not _is_int(node[1]):
            raise WireFormatError(f"malformed tensor node {node!r:.80}")
        return tag, None
    if tag not in ("v", "d", "l", "u", "b"):
        raise WireFormatError(f"unknown message node tag {tag!r:.20}")
    if len(node) != (3 if tag == "b" else 2):
        raise WireFormatError(f"malformed message node {node!r:.80}")
    body = node[1]
    if tag == "v" and not isinstance(body, _SCALARS):
        raise WireFormatError("malformed value node")
    if tag == "d" and not isinstance(body, dict):
        raise WireFormatError("malformed dict node")
    if tag in ("l", "u") and not isinstance(body, list):
        raise WireFormatError("malformed list node")
    if tag == "b" and not _is_int(body):
        raise WireFormatError("malformed bytes node")
    return tag, body
