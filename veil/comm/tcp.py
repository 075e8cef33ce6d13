"""TCP transport: stdlib sockets, length-prefixed frames, timeouts, a full mesh.

Every participant (party 0, party 1, the dealer: ranks 0, 1, 2) listens on its
own address and connects to every lower rank; the first frame on a
connection is a hello carrying the session token and the caller's rank, so
stray or cross-session connections are refused.

Frames are ``u64 length | frame`` (see :mod:`veil.comm.wire`). A length of
``2^64 - 1`` is a control frame: the peer is aborting and says why, so the
other side fails at once with that reason instead of waiting for a timeout.
A killed process closes its sockets (the peer sees EOF); a hung one is caught
by the socket timeout. Sending goes through a background thread per
connection, so two parties sending large messages to each other at the same
time cannot deadlock on full kernel buffers.

There is no encryption on these sockets: run across machines only on a
trusted network or through a tunnel (SSH, WireGuard, stunnel).
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from collections.abc import Sequence

from veil.comm import wire
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Channel

_LEN = struct.Struct("<Q")
_ABORT = 2**64 - 1
_HELLO = b"VEILHELO"
#: Frames larger than this are refused (a corrupt or hostile length prefix).
MAX_FRAME_BYTES = 2**36
_CHUNK = 1 << 22


def parse_address(addr: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(addr, tuple):
        host, port = addr
    else:
        host, sep, port = str(addr).rpartition(":")
        if not sep:
            raise ValueError(f"address {addr!r} must look like host:port")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port)
    if not 0 <= port < 65536:
        raise ValueError(f"bad port in address {addr!r}")
    return host, port


class SocketChannel(Channel):
    """A frame channel over one connected TCP socket."""

    def __init__(self, sock: socket.socket, peer_name: str, timeout: float) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self._sock = sock
        self.peer_name = peer_name
        self._timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._error: CommError | None = None
        self._closed = False
        self._sender = threading.Thread(target=self._send_loop, daemon=True,
                                        name=f"veil-send-{peer_name}")
        self._sender.start()

    # -- sending ---------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if isinstance(item, bytes):
                    self._sock.sendall(item)
                else:
                    chunks = item.chunks()
                    self._sock.sendall(_LEN.pack(item.nbytes) + bytes(chunks[0]))
                    for c in chunks[1:]:
                        self._sock.sendall(c)
            except TimeoutError:
                self._fail(PeerTimeoutError(
                    f"{self.peer_name} did not read our message within {self._timeout:g} s"))
            except OSError as exc:
                self._fail(PeerDisconnectedError(f"{self.peer_name} disconnected ({exc})"))
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _fail(self, err: CommError) -> None:
        if self._error is None:
            self._error = err

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise CommError(f"channel to {self.peer_name} is closed")

    def send_frame(self, enc: wire.Encoded) -> None:
        self._check()
        if enc.nbytes > MAX_FRAME_BYTES:
            raise CommError(f"message of {enc.nbytes} bytes exceeds {MAX_FRAME_BYTES}")
        with self._cond:
            self._pending += 1
        self._queue.put(enc)

    def flush(self) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._pending == 0 or self._error is not None,
                                     timeout=self._timeout)
        self._check()
        if not ok:
            raise PeerTimeoutError(
                f"{self.peer_name} did not read our messages within {self._timeout:g} s")

    # -- receiving -------------------------------------------------------------
    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self._sock.recv_into(view[got:], min(n - got, _CHUNK))
            except TimeoutError:
                raise PeerTimeoutError(
                    f"no message from {self.peer_name} within {self._timeout:g} s") from None
            except OSError as exc:
                raise PeerDisconnectedError(f"{self.peer_name} disconnected ({exc})") from None
            if k == 0:
                raise PeerDisconnectedError(f"{self.peer_name} disconnected (connection closed)")
            got += k
        return buf

    def recv_frame(self, timeout: float) -> bytearray:
        self._check()
        try:
            (n,) = _LEN.unpack(self._recv_exact(_LEN.size))
            if n == _ABORT:
                (m,) = struct.unpack("<I", self._recv_exact(4))
                reason = bytes(self._recv_exact(min(m, 4096))).decode("utf-8", "replace")
                raise PeerDisconnectedError(f"{self.peer_name} {reason}")
            if n > MAX_FRAME_BYTES:
                raise CommError(f"{self.peer_name} announced a {n}-byte frame; refusing")
            return self._recv_exact(n)
        except CommError as exc:
            self._fail(exc)
            raise

    def close(self, reason: str | None = None) -> None:
        if self._closed:
            return
        if reason and self._error is None:
            msg = reason.encode("utf-8", "replace")[:4096]
            with self._cond:
                self._pending += 1
            self._queue.put(_LEN.pack(_ABORT) + struct.pack("<I", len(msg)) + msg)
            with self._cond:
                self._cond.wait_for(lambda: self._pending == 0, timeout=min(self._timeout, 2.0))
        self._closed = True
        self._queue.put(None)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def listen(address: str | tuple[str, int], backlog: int = 8) -> socket.socket:
    """A listening socket on ``address`` (port 0 picks a free port)."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def _hello(rank: int, session: bytes) -> bytes:
    return _HELLO + struct.pack("<II", rank, len(session)) + session


def _read_hello(sock: socket.socket, session: bytes, deadline: float) -> int:
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    need = len(_HELLO) + 8
    data = b""
    while len(data) < need:
        chunk = sock.recv(need - len(data))
        if not chunk:
            raise PeerDisconnectedError("a connecting peer closed before saying hello")
        data += chunk
    if data[: len(_HELLO)] != _HELLO:
        raise CommError("a connecting peer is not speaking the Veil protocol")
    rank, slen = struct.unpack("<II", data[len(_HELLO):])
    got = b""
    while len(got) < slen:
        chunk = sock.recv(slen - len(got))
        if not chunk:
            raise PeerDisconnectedError("a connecting peer closed during hello")
        got += chunk
    if got != session:
        raise CommError("a peer from another session tried to connect")
    return rank


def connect_mesh(
    rank: int,
    addresses: Sequence[str | tuple[str, int]],
    timeout: float,
    names: Sequence[str],
    session: bytes = b"",
    listener: socket.socket | None = None,
    connect_timeout: float | None = None,
) -> dict[int, SocketChannel]:
    """Connect ``rank`` to every other participant; returns ``{peer rank: channel}``.

    ``connect_timeout`` (default: ``timeout``) bounds the whole set-up: a
    participant that never shows up gives a clear :class:`PeerTimeoutError`.
    """
    n = len(addresses)
    if not 0 <= rank < n:
        raise ValueError(f"rank {rank} out of range for {n} addresses")
    deadline = time.monotonic() + (connect_timeout or timeout)
    own_listener = listener is None
    if listener is None and rank < n - 1:
        listener = listen(addresses[rank])
    channels: dict[int, SocketChannel] = {}
    try:
        for peer in range(rank):
            host, port = parse_address(addresses[peer])
            while True:
                try:
                    sock = socket.create_connection(
                        (host, port), timeout=max(0.1, deadline - time.monotonic()))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise PeerTimeoutError(
                            f"could not connect to {names[peer]} at {host}:{port}") from None
                    time.sleep(0.05)
            sock.sendall(_hello(rank, session))
            channels[peer] = SocketChannel(sock, names[peer], timeout)
        expected = set(range(rank + 1, n))
        while expected:
            assert listener is not None
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                missing = ", ".join(names[p] for p in sorted(expected))
                raise PeerTimeoutError(f"{missing} never connected") from None
            try:
                peer = _read_hello(sock, session, deadline)
            except (CommError, OSError):
                sock.close()
                continue
            if peer not in expected:
                sock.close()
                continue
            expected.discard(peer)
            channels[peer] = SocketChannel(sock, names[peer], timeout)
    except BaseException:
        for ch in channels.values():
            ch.close()
        raise
    finally:
        if own_listener and listener is not None:
            listener.close()
    return channels
