"""The wire format: round trips, and malformed frames are rejected (never executed)."""

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from veil.comm import wire
from veil.comm.errors import WireFormatError


def test_round_trip_nested_tree():
    msg = {
        "t": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "f": torch.tensor([1.5, -2.0], dtype=torch.float32),
        "b": torch.tensor([True, False]),
        "empty": torch.empty(0, 4, dtype=torch.int64),
        "scalar": torch.tensor(7),
        "arr": np.arange(4, dtype=np.uint8),
        "raw": b"\x00\x01seed",
        "list": [1, 2.5, "x", None, True],
        "tuple": (torch.ones(1), b""),
    }
    out = wire.from_bytes(wire.to_bytes(msg))
    for k in ("t", "f", "b", "empty", "scalar"):
        assert out[k].dtype == msg[k].dtype and torch.equal(out[k], msg[k])
    assert (out["arr"] == msg["arr"]).all()
    assert out["raw"] == msg["raw"] and out["list"] == msg["list"]
    assert isinstance(out["tuple"], tuple) and out["tuple"][1] == b""


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
def test_int64_round_trip(values):
    t = torch.tensor(values, dtype=torch.int64)
    assert torch.equal(wire.from_bytes(wire.to_bytes(t)), t)


def test_non_contiguous_and_size_accounting():
    t = torch.arange(12).reshape(3, 4).t()
    frame = wire.to_bytes(t)
    assert torch.equal(wire.from_bytes(frame), t)
    assert wire.wire_size(t) == len(frame)
    assert len(frame) % 8 == 0
    # Payload dominates: 12 int64 plus a small header.
    assert 96 < len(frame) < 96 + 80


@pytest.mark.parametrize("obj", [object(), {1: 2}, torch.tensor([1 + 2j]), 2**70, {"f": print}])
def test_unsendable_objects_rejected(obj):
    with pytest.raises(WireFormatError):
        wire.encode(obj)


def _frame_with_header(tree, payload=b""):
    header = json.dumps(tree).encode()
    pad = b"\0" * ((-len(header)) % 8)
    return bytearray(wire.MAGIC + struct.pack("<Q", len(header)) + header + pad + payload)


@pytest.mark.parametrize("frame", [
    bytearray(b"garbage!"),
    bytearray(b"VEIL1\0\0\0" + struct.pack("<Q", 1000) + b"{}"),
    _frame_with_header(["t", 0, "object", [2]], b"\0" * 16),          # dtype not whitelisted
    _frame_with_header(["t", 0, "int64", [4]], b"\0" * 16),           # buffer too short
    _frame_with_header(["t", 0, "int64", [1]], b"\0" * 24),           # trailing bytes
    _frame_with_header(["t", 0, "int64", [-1]], b""),                 # negative shape
    _frame_with_header(["x", 1]),                                     # unknown tag
    _frame_with_header(["d", [1, 2]]),                                # malformed dict node
    _frame_with_header(["t", 1, "int64", [1]], b"\0" * 8),            # buffer index gap
    _frame_with_header({"__reduce__": "os.system"}),                  # not a node at all
])
def test_malformed_frames_rejected(frame):
    with pytest.raises(WireFormatError):
        wire.from_bytes(frame)


def test_frame_contains_no_pickle_opcodes():
    frame = bytes(wire.to_bytes({"x": torch.zeros(2)}))
    assert b"\x80\x04" not in frame[:40]  # no pickle protocol header
    assert frame.startswith(wire.MAGIC)
