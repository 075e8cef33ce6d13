"""In-memory and TCP channels: accounting, large messages, dead and silent peers."""

import socket
import threading
import time

import pytest
import torch

from veil.comm.credentials import ROLES, ephemeral
from veil.comm.errors import PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import FRAME_OVERHEAD, Link
from veil.comm.local import channel_pair
from veil.comm.tcp import connect_mesh, listen, parse_address
from veil.comm.wire import wire_size

NAMES = ("party 0", "party 1", "the dealer")
CREDS = ephemeral()


def _local_links(timeout=2.0):
    a, b = channel_pair("party 0", "party 1")
    return Link(a, timeout), Link(b, timeout)


def _tcp_mesh(timeout=5.0):
    """Three participants connected over loopback, each in its own thread."""
    listeners = [listen(("127.0.0.1", 0)) for _ in range(2)]
    addrs = [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners] + ["127.0.0.1:0"]
    out: dict[int, dict] = {}

    def connect(rank):
        out[rank] = connect_mesh(rank, addrs, timeout, NAMES, CREDS[ROLES[rank]], session=b"s",
                                 listener=listeners[rank] if rank < 2 else None)

    threads = [threading.Thread(target=connect, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for s in listeners:
        s.close()
    return out


def _exchange_both(la, lb, ma, mb):
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("b", lb.exchange(mb)))
    t.start()
    got["a"] = la.exchange(ma)
    t.join(10)
    return got["a"], got["b"]


def test_local_exchange_counts_rounds_and_bytes():
    la, lb = _local_links()
    x, y = torch.arange(1000), torch.ones(3)
    ga, gb = _exchange_both(la, lb, x, y)
    assert torch.equal(ga, y) and torch.equal(gb, x)
    assert la.counters.rounds == 1 and la.counters.messages_sent == 1
    assert la.counters.bytes_sent == wire_size(x) + FRAME_OVERHEAD == lb.counters.bytes_received
    la.send({"k": 1})
    assert lb.recv() == {"k": 1}
    assert la.counters.rounds == 2 and lb.counters.rounds == 2


def test_local_received_tensor_is_a_copy():
    la, lb = _local_links()
    x = torch.zeros(4, dtype=torch.int64)
    la.send(x)
    got = lb.recv()
    got += 5
    assert x.sum().item() == 0


def test_local_timeout_and_close_reason():
    la, lb = _local_links(timeout=0.2)
    t0 = time.perf_counter()
    with pytest.raises(PeerTimeoutError, match="party 1"):
        la.recv()
    assert time.perf_counter() - t0 < 2
    lb.close("failed: ValueError: boom")
    with pytest.raises(PeerDisconnectedError, match="boom"):
        la.recv()
    with pytest.raises(PeerDisconnectedError):
        la.send(1)


def test_tcp_mesh_exchange_large_messages_without_deadlock():
    mesh = _tcp_mesh()
    assert sorted(mesh[0]) == [1, 2] and sorted(mesh[2]) == [0, 1]
    l0, l1 = Link(mesh[0][1], 10), Link(mesh[1][0], 10)
    big0 = torch.arange(2_000_000, dtype=torch.int64)  # 16 MB each way, > socket buffers
    big1 = -big0
    g0, g1 = _exchange_both(l0, l1, big0, big1)
    assert torch.equal(g0, big1) and torch.equal(g1, big0)
    assert l0.counters.bytes_sent == l1.counters.bytes_received == wire_size(big0) + 8
    d0 = Link(mesh[2][0], 10)
    p0d = Link(mesh[0][2], 10)
    d0.send({"op": "mat", "items": [b"x" * 16]})
    assert p0d.recv()["items"][0] == b"x" * 16
    for peers in mesh.values():
        for ch in peers.values():
            ch.close()


def test_tcp_dead_peer_and_abort_reason_fail_fast():
    mesh = _tcp_mesh(timeout=30)
    l0, l1 = Link(mesh[0][1], 30), Link(mesh[1][0], 30)
    t0 = time.perf_counter()
    l1.close("failed: RuntimeError: party 1 crashed")
    with pytest.raises(PeerDisconnectedError, match="party 1 crashed"):
        l0.recv()
    # Hard death (no reason): the socket just closes.
    l2, d0 = Link(mesh[0][2], 30), Link(mesh[2][0], 30)
    mesh[2][0]._sock.close()
    with pytest.raises(PeerDisconnectedError):
        l2.recv()
    assert time.perf_counter() - t0 < 5  # not the 30 s timeout
    for peers in mesh.values():
        for ch in peers.values():
            ch.close()
    del d0


def test_tcp_silent_peer_times_out():
    mesh = _tcp_mesh(timeout=0.3)
    l0 = Link(mesh[0][1], 0.3)
    t0 = time.perf_counter()
    with pytest.raises(PeerTimeoutError, match="party 1"):
        l0.recv()
    assert time.perf_counter() - t0 < 3
    for peers in mesh.values():
        for ch in peers.values():
            ch.close()


def test_tcp_connect_to_absent_peer_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(PeerTimeoutError, match="party 0"):
        connect_mesh(1, [f"127.0.0.1:{port}", "127.0.0.1:0", "127.0.0.1:0"], 0.5, NAMES,
                     CREDS["party1"], connect_timeout=0.5, listener=listen(("127.0.0.1", 0)))
    assert time.perf_counter() - t0 < 5


def test_parse_address():
    assert parse_address("10.0.0.1:9000") == ("10.0.0.1", 9000)
    assert parse_address(("h", 1)) == ("h", 1)
    with pytest.raises(ValueError):
        parse_address("nohostport")


def test_tcp_frame_length_is_capped_and_never_preallocated():
    import struct
    import tracemalloc

    from veil.comm.errors import CommError

    mesh = _tcp_mesh()
    a, b = mesh[0][1], mesh[1][0]
    # an announced 2 GiB frame whose data never comes: memory grows only with what arrives
    b._stream.sendall(struct.pack("<Q", 2**31) + b"x" * 1000)
    b.close()
    tracemalloc.start()
    with pytest.raises(PeerDisconnectedError):
        a.recv_frame(5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20
    # above the configured cap: refused on receipt, and on sending
    c, d = mesh[0][2], mesh[2][0]
    c.max_frame_bytes = 1024
    d._stream.sendall(struct.pack("<Q", 4096))
    with pytest.raises(CommError, match="above the limit of 1024"):
        c.recv_frame(5)
    from veil.comm import wire

    e = mesh[1][2]
    e.max_frame_bytes = 1024
    with pytest.raises(CommError, match="exceeds the frame limit"):
        e.send_frame(wire.encode(torch.zeros(1000)))
    for peers in mesh.values():
        for ch in peers.values():
            ch.close()


def test_listen_failure_names_the_address():
    from veil.comm.errors import CommError

    with listen(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(CommError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen(("127.0.0.1", port))
