"""The shaping proxy of the service benchmark: bytes pass intact, delay and bandwidth are
applied (lower bounds only: a busy machine can only make it slower)."""

from __future__ import annotations

import os
import socket
import threading
import time

from veil.bench.netshape import Shape, ShapingProxy


def _echo_server() -> tuple[socket.socket, str]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(1 << 16):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return bytes(buf)


def test_proxy_delays_each_direction_and_keeps_bytes():
    srv, upstream = _echo_server()
    shape = Shape("test", delay_s=0.02, bandwidth_bps=1e12)
    with srv, ShapingProxy("127.0.0.1:0", upstream, shape) as proxy:
        host, port = proxy.address.split(":")
        with socket.create_connection((host, int(port))) as c:
            t0 = time.perf_counter()
            c.sendall(b"ping")
            assert _recv_exact(c, 4) == b"ping"
            assert time.perf_counter() - t0 >= 2 * shape.delay_s  # one delay each way
            payload = os.urandom(3 << 20)
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            assert _recv_exact(c, len(payload)) == payload
            sender.join()


def test_proxy_limits_bandwidth():
    srv, upstream = _echo_server()
    shape = Shape("slow", delay_s=0.0, bandwidth_bps=80e6)  # 10 MB/s
    payload = os.urandom(2 << 20)
    with srv, ShapingProxy("127.0.0.1:0", upstream, shape) as proxy:
        host, port = proxy.address.split(":")
        with socket.create_connection((host, int(port))) as c:
            t0 = time.perf_counter()
            sender = threading.Thread(target=c.sendall, args=(payload,))
            sender.start()
            assert _recv_exact(c, len(payload)) == payload
            sender.join()
            # serialised at 10 MB/s in each direction, pipelined: at least one pass
            assert time.perf_counter() - t0 >= 8 * len(payload) / shape.bandwidth_bps
