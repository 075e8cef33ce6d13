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


# ------------------------------------------------------------------------------ bounded parsing

@pytest.mark.parametrize("frame", [
    _frame_with_header(["l", [["t", 0, "int64", [1]], ["t", 0, "int64", [1]]]], b"\0" * 8),
    _frame_with_header(["l", [["b", 0, 8], ["t", 0, "int64", [1]]]], b"\0" * 8),
    _frame_with_header(["t", 0, "int64", [1] * 33], b"\0" * 8),            # too many dims
    _frame_with_header(["t", 0, "int64", [2**62, 0]]),                        # absurd dim
    _frame_with_header(["t", True, "int64", [1]], b"\0" * 8),               # bool index
    _frame_with_header(["t", 0, "int64", [True]], b"\0" * 8),               # bool dim
    _frame_with_header(["v", [1, 2]]),                                        # not a scalar
    _frame_with_header(["l", [["l", [1]]]]),                                  # list of non-nodes
    _frame_with_header(json.loads("[" * 40 + '"v",1' + "]" * 40)),          # deep junk
    bytearray(wire.MAGIC + struct.pack("<Q", 2**40)),                         # huge header length
    bytearray(wire.MAGIC + struct.pack("<Q", 12) + b"[" * 12 + b"\0" * 4),
    bytearray(wire.MAGIC + struct.pack("<Q", 5000) + b"1" * 5000),            # 5000-digit int
])
def test_hostile_frames_rejected(frame):
    with pytest.raises(WireFormatError):
        wire.from_bytes(frame)


def test_nesting_limit_on_both_sides():
    deep = 1
    for _ in range(wire.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(WireFormatError, match="nested deeper"):
        wire.encode(deep)
    tree = ["v", 1]
    for _ in range(wire.MAX_DEPTH + 2):
        tree = ["l", [tree]]
    with pytest.raises(WireFormatError, match="nested deeper"):
        wire.from_bytes(_frame_with_header(tree))
    deepest_ok = 1
    for _ in range(wire.MAX_DEPTH):
        deepest_ok = [deepest_ok]
    assert wire.from_bytes(wire.to_bytes(deepest_ok)) == deepest_ok
    # a header nested beyond the JSON parser's recursion limit
    frame = bytearray(wire.MAGIC + struct.pack("<Q", 200_000) + b"[" * 200_000)
    with pytest.raises(WireFormatError):
        wire.from_bytes(frame)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                     st.floats(allow_nan=False), st.text(max_size=8))
_tensors = st.builds(
    lambda vals, dtype: torch.tensor(vals, dtype=torch.int64).to(dtype),
    st.lists(st.integers(-100, 100), max_size=6),
    st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.float64, torch.bool]))
_messages = st.recursive(
    st.one_of(_scalars, _tensors, st.binary(max_size=16)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b and type(a) is type(b)


@given(_messages)
def test_any_message_round_trips(msg):
    assert _equal(wire.from_bytes(wire.to_bytes(msg)), msg)


@given(_messages, st.data())
def test_fuzz_mutated_frames_decode_or_raise_wire_format_error(msg, data):
    """Flipped, truncated, extended bytes of a real frame: a result or WireFormatError only."""
    frame = bytearray(wire.to_bytes(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "truncate", "extend", "header"]))
        if action == "flip" and frame:
            i = data.draw(st.integers(0, len(frame) - 1))
            frame[i] = data.draw(st.integers(0, 255))
        elif action == "truncate":
            del frame[data.draw(st.integers(0, len(frame))):]
        elif action == "extend":
            frame += data.draw(st.binary(max_size=16))
        elif action == "header" and len(frame) >= 16:
            struct.pack_into("<Q", frame, 8, data.draw(st.integers(0, 2**64 - 1)))
    try:
        wire.from_bytes(frame)
    except WireFormatError:
        pass


_json_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
              st.sampled_from(["t", "a", "b", "v", "d", "l", "u", "int64", "float32", "x"])),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=20)


@given(_json_trees, st.binary(max_size=64))
def test_fuzz_arbitrary_headers_decode_or_raise_wire_format_error(tree, payload):
    try:
        wire.from_bytes(_frame_with_header(tree, payload))
    except WireFormatError:
        pass


@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(frame):
    try:
        wire.from_bytes(wire.MAGIC + frame)
    except WireFormatError:
        pass
