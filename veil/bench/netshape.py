"""A latency-and-bandwidth shaping TCP proxy, for measuring services over a LAN or a WAN.

``tc netem`` is the usual tool, but our kernels lack the netem qdisc. A
:class:`ShapingProxy` listens on one address and forwards every connection to
an upstream address, delaying each direction independently: a chunk that
arrives at time ``t`` leaves the proxy at ``max(t, previous departure) +
size / bandwidth`` (serialisation on a link of that bandwidth) and reaches the
other side ``delay`` seconds later (propagation). TLS passes through untouched
(the proxy only moves bytes).

Accuracy: sleeps are made with ``time.sleep`` (tens of microseconds late on an
idle machine, more on a busy one) and Python moves about a gigabyte per second
at best, so shaping at 1 Gbit/s or below is meaningful; measured figures are
labelled *measured through the shaping proxy*.

Example
-------
>>> LAN.delay_s, LAN.bandwidth_bps
(0.00025, 1000000000.0)
>>> with ShapingProxy("127.0.0.1:0", "127.0.0.1:9", LAN) as proxy:   # doctest: +SKIP
...     print(proxy.address)
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass

from veil.comm.tcp import parse_address

_CHUNK = 1 << 16
#: Chunks buffered per direction before the sender blocks (backpressure, 16 MiB).
_QUEUE_CHUNKS = 256


@dataclass(frozen=True)
class Shape:
    """One-way propagation delay (seconds) and bandwidth (bits per second) of each direction."""

    name: str
    delay_s: float
    bandwidth_bps: float


LAN = Shape("LAN (measured: 0.25 ms each way, 1 Gbit/s)", 0.25e-3, 1e9)
WAN = Shape("WAN (measured: 20 ms each way, 100 Mbit/s)", 20e-3, 1e8)


class _Pipe:
    """One direction of one connection: read, stamp with a delivery time, deliver."""

    def __init__(self, src: socket.socket, dst: socket.socket, shape: Shape,
                 on_close) -> None:
        self.src, self.dst, self.shape = src, dst, shape
        self.queue: queue.Queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._on_close = on_close
        self._depart = 0.0
        threading.Thread(target=self._read, daemon=True, name="veil-shape-read").start()
        threading.Thread(target=self._write, daemon=True, name="veil-shape-write").start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(_CHUNK)
                if not data:
                    break
                now = time.perf_counter()
                self._depart = max(now, self._depart) + 8 * len(data) / self.shape.bandwidth_bps
                self.queue.put((self._depart + self.shape.delay_s, data))
        except OSError:
            pass
        self.queue.put(None)

    def _write(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    break
                due, data = item
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            self._on_close()


class _Pair:
    """Both sockets of one proxied connection, closed when both directions have ended."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.sockets = (a, b)
        self._open = 2
        self._lock = threading.Lock()

    def one_direction_closed(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0:
                for s in self.sockets:
                    s.close()


class ShapingProxy:
    """Forward connections from ``listen`` to ``upstream`` through a shaped link.

    Parameters
    ----------
    listen: ``host:port`` to accept on (port 0 picks one; see :attr:`address`).
    upstream: ``host:port`` of the real service.
    shape: delay and bandwidth applied to each direction.
    """

    def __init__(self, listen: str, upstream: str, shape: Shape) -> None:
        self.upstream = parse_address(upstream)
        self.shape = shape
        host, port = parse_address(listen)
        self._sock = socket.create_server((host, port), backlog=64)
        self.address = f"{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ShapingProxy:
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="veil-shape-accept")
        self._thread.start()
        return self

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, server)
            _Pipe(client, server, self.shape, pair.one_direction_closed)
            _Pipe(server, client, self.shape, pair.one_direction_closed)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(1.0)

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
