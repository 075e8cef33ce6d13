"""TCP transport: mutual TLS 1.3 links, length-prefixed frames, timeouts, a full mesh.

Every link is TLS 1.3 with a certificate required on both sides
(:mod:`veil.comm.credentials`): a peer is accepted only if its certificate
comes from the deployment's CA and names the role expected at that end, so a
process that knows only the addresses cannot join, and one holding a party's
key cannot pose as the dealer. All traffic, the hello included, is encrypted.

Participants (party 0, party 1, the dealer: ranks 0, 1, 2) form a mesh: each
listens on its own address and connects to every lower rank. After the TLS
handshake the connecting side sends a hello (its rank and the run's session
id, bounded in size) and the listening side answers ``OK`` or a refusal with
its reason, so a mismatched session or a duplicate participant fails at once
with a message naming it, on both sides.

Frames are ``u64 length | frame`` (see :mod:`veil.comm.wire`), inside TLS. A
length of ``2^64 - 1`` is a control frame: the peer is aborting and says why,
so the other side fails at once with that reason instead of waiting for a
timeout. Frames above ``max_frame_bytes`` are refused on both sides, and a
frame's buffer grows with the data actually received (never allocated from the
announced length alone). A killed process closes its sockets (the peer sees
EOF); a hung one is caught by the socket timeout. Sending goes through a
background thread per connection, so two parties sending large messages to
each other at the same time cannot deadlock on full kernel buffers.

TLS runs over memory BIOs (:class:`ssl.SSLObject`) with one lock per
connection: OpenSSL objects must not be used by two threads at once, and the
sender thread and the receiving thread share each connection.

Public helpers: :func:`connect_mesh` (the three participants of a run),
:func:`tls_connect` / :func:`tls_accept` (one authenticated channel, for
services with their own topology), :func:`listen`, :func:`parse_address`.
Byte counts of :class:`~veil.comm.link.Link` are Veil frames; TLS adds about
22 bytes per 16 KiB record and a ~2 KB handshake per link.
"""

from __future__ import annotations

import hmac
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Collection, Sequence

from veil.comm import wire
from veil.comm.credentials import ROLES, Credentials, CredentialsError, peer_role
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Channel

_LEN = struct.Struct("<Q")
_ABORT = 2**64 - 1
_HELLO = b"VEILHEL2"
_OK = b"VEILOK\0\0"
_NO = b"VEILNO\0\0"
#: Default cap on one frame (4 GiB): the largest messages are prefetched dealer material
#: (bounded by the prefetch limit, 1 GiB per party by default). Configurable per channel.
MAX_FRAME_BYTES = 2**32
#: Longest session id in a hello, and longest refusal or abort reason.
MAX_SESSION_BYTES = 256
MAX_REASON_BYTES = 4096
#: Seconds a connecting peer gets to complete the TLS handshake and hello.
HANDSHAKE_TIMEOUT = 10.0
_RAW_CHUNK = 1 << 18          # raw socket reads
_RECORD_BATCH = 1 << 16       # plaintext encrypted per lock hold (the receiver interleaves)
_INITIAL_FRAME = 1 << 20      # first allocation for an incoming frame; doubles as data arrives
_COALESCE = 1 << 16           # frames smaller than this are sent in one TLS write


def parse_address(addr: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(addr, tuple):
        host, port = addr
    else:
        host, sep, port = str(addr).rpartition(":")
        if not sep:
            raise ValueError(f"address {addr!r} must look like host:port")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"bad port in address {addr!r}") from None
    if not 0 <= port < 65536:
        raise ValueError(f"bad port in address {addr!r}")
    return host, port


class _TLSStream:
    """TLS over a blocking socket through memory BIOs, safe for one sender + one receiver."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_side: bool) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self._lock = threading.Lock()

    def handshake(self) -> None:
        """Run the handshake (blocking, under the socket's timeout); raises ssl.SSLError."""
        while True:
            try:
                self._obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionResetError(
                        "connection closed during the TLS handshake") from None
            except ssl.SSLError:
                try:
                    self._flush()  # the alert tells the peer why
                except OSError:
                    pass
                raise

    @property
    def obj(self) -> ssl.SSLObject:
        return self._obj

    def _flush(self) -> None:
        with self._lock:
            data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(_RAW_CHUNK)
        if not data:
            return False
        with self._lock:
            self._in.write(data)
        return True

    def sendall(self, data: bytes | memoryview) -> None:
        """Encrypt and send ``data`` (one thread at a time sends)."""
        view = memoryview(data).cast("B")
        for i in range(0, view.nbytes, _RECORD_BATCH):
            with self._lock:
                self._obj.write(view[i:i + _RECORD_BATCH])
                ct = self._out.read()
            self.sock.sendall(ct)

    def recv_into(self, view: memoryview) -> int:
        """Decrypt at least one byte into ``view``; 0 at end of stream."""
        while True:
            with self._lock:
                try:
                    return self._obj.read(view.nbytes, view)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    return 0
            if not self._fill():
                return 0

    def recv_exact(self, n: int) -> bytes:
        """Exactly ``n`` (small) bytes; raises ConnectionResetError at end of stream."""
        buf = bytearray(n)
        got = 0
        with memoryview(buf) as mv:
            while got < n:
                with mv[got:] as sub:
                    k = self.recv_into(sub)
                if k == 0:
                    raise ConnectionResetError("connection closed")
                got += k
        return bytes(buf)


class SocketChannel(Channel):
    """A frame channel over one authenticated TLS connection (see :func:`tls_connect`)."""

    def __init__(self, stream: _TLSStream, peer_name: str, timeout: float,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        sock = stream.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self._stream = stream
        self._sock = sock
        self.peer_name = peer_name
        self.peer_role = peer_role(stream.obj)
        self.max_frame_bytes = int(max_frame_bytes)
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
                    self._stream.sendall(item)
                elif item.nbytes < _COALESCE:
                    self._stream.sendall(_LEN.pack(item.nbytes) + bytes(item.to_bytearray()))
                else:
                    chunks = item.chunks()
                    self._stream.sendall(_LEN.pack(item.nbytes) + bytes(chunks[0]))
                    for c in chunks[1:]:
                        self._stream.sendall(c)
            except TimeoutError:
                self._fail(PeerTimeoutError(
                    f"{self.peer_name} did not read our message within {self._timeout:g} s"))
            except (OSError, ssl.SSLError) as exc:
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
        if enc.nbytes > self.max_frame_bytes:
            raise CommError(f"message of {enc.nbytes} bytes exceeds the frame limit of "
                            f"{self.max_frame_bytes} bytes (max_frame_bytes)")
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
    def _recv_into(self, view: memoryview) -> int:
        try:
            k = self._stream.recv_into(view)
        except TimeoutError:
            raise PeerTimeoutError(
                f"no message from {self.peer_name} within {self._timeout:g} s") from None
        except ssl.SSLError as exc:
            raise PeerDisconnectedError(
                f"{self.peer_name}: TLS error ({exc.reason or exc})") from None
        except OSError as exc:
            raise PeerDisconnectedError(f"{self.peer_name} disconnected ({exc})") from None
        if k == 0:
            raise PeerDisconnectedError(f"{self.peer_name} disconnected (connection closed)")
        return k

    def _recv_exact(self, n: int) -> bytearray:
        """``n`` bytes; the buffer grows (doubling) only as data arrives."""
        buf = bytearray(min(n, _INITIAL_FRAME))
        got = 0
        while got < n:
            if got == len(buf):
                buf.extend(bytes(min(n - got, len(buf))))
            with memoryview(buf) as mv, mv[got:] as sub:
                got += self._recv_into(sub)
        return buf

    def recv_frame(self, timeout: float) -> bytearray:
        self._check()
        try:
            (n,) = _LEN.unpack(self._recv_exact(_LEN.size))
            if n == _ABORT:
                (m,) = struct.unpack("<I", self._recv_exact(4))
                reason = bytes(self._recv_exact(min(m, MAX_REASON_BYTES)))
                raise PeerDisconnectedError(
                    f"{self.peer_name} {reason.decode('utf-8', 'replace')}")
            if n > self.max_frame_bytes:
                raise CommError(f"{self.peer_name} announced a {n}-byte frame, above the "
                                f"limit of {self.max_frame_bytes} bytes; refusing")
            return self._recv_exact(n)
        except CommError as exc:
            self._fail(exc)
            raise

    def close(self, reason: str | None = None) -> None:
        if self._closed:
            return
        if reason and self._error is None:
            msg = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
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
    """A listening socket on ``address`` (port 0 picks a free port).

    Raises :class:`CommError` naming the address when it cannot be bound.
    """
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise CommError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.strerror or str(exc)
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return str(exc) or type(exc).__name__


def tls_connect(address: str | tuple[str, int], credentials: Credentials, expect_role: str, *,
                timeout: float, connect_timeout: float | None = None,
                name: str | None = None,
                max_frame_bytes: int = MAX_FRAME_BYTES) -> SocketChannel:
    """Connect to ``address`` and authenticate it as ``expect_role`` (mutual TLS 1.3).

    Retries the TCP connection until ``connect_timeout`` (default ``timeout``);
    raises :class:`PeerTimeoutError` if nobody listens, :class:`CredentialsError`
    at once if the peer is not ``expect_role`` of this deployment.

    Example
    -------
    >>> ch = tls_connect("10.0.0.1:7000", creds, "dealer", timeout=30)   # doctest: +SKIP
    """
    host, port = parse_address(address)
    name = name or expect_role
    deadline = time.monotonic() + (connect_timeout or timeout)
    while True:
        try:
            sock = socket.create_connection(
                (host, port), timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise PeerTimeoutError(f"could not connect to {name} at {host}:{port}") from None
            time.sleep(0.05)
    try:
        # The listener completes the handshake only once it reaches accept(): a busy peer
        # gets at least HANDSHAKE_TIMEOUT, even past the connect deadline.
        sock.settimeout(max(HANDSHAKE_TIMEOUT, deadline - time.monotonic()))
        stream = _TLSStream(sock, credentials.context(server=False), server_side=False)
        try:
            stream.handshake()
        except (ssl.SSLError, OSError) as exc:
            raise CredentialsError(f"{name} at {host}:{port} failed authentication: "
                                   f"{_tls_reason(exc)}") from None
        role = peer_role(stream.obj)
        if not hmac.compare_digest(role.encode(), expect_role.encode()):
            raise CredentialsError(f"the process at {host}:{port} holds the {role} certificate, "
                                   f"not the {expect_role} one")
        return SocketChannel(stream, name, timeout, max_frame_bytes)
    except BaseException:
        sock.close()
        raise


def tls_accept(listener: socket.socket, credentials: Credentials, roles: Collection[str], *,
               timeout: float, deadline: float | None = None,
               names: dict[str, str] | None = None,
               max_frame_bytes: int = MAX_FRAME_BYTES) -> SocketChannel:
    """Accept one connection from a peer holding one of ``roles`` (mutual TLS 1.3).

    Waits until ``deadline`` (``time.monotonic()``; default ``timeout`` from now)
    for a connection: :class:`PeerTimeoutError` if none comes. A connection that
    fails the handshake or holds another role raises :class:`CredentialsError`
    (the caller usually logs it and accepts again). The channel's
    ``peer_role`` says which role connected.
    """
    deadline = deadline if deadline is not None else time.monotonic() + timeout
    listener.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        sock, addr = listener.accept()
    except TimeoutError:
        raise PeerTimeoutError("no connection within the timeout") from None
    where = f"{addr[0]}:{addr[1]}"
    try:
        sock.settimeout(max(0.1, min(HANDSHAKE_TIMEOUT, deadline - time.monotonic())))
        stream = _TLSStream(sock, credentials.context(server=True), server_side=True)
        try:
            stream.handshake()
        except (ssl.SSLError, OSError) as exc:
            raise CredentialsError(f"a connection from {where} failed authentication: "
                                   f"{_tls_reason(exc)}") from None
        role = peer_role(stream.obj)
        if role not in roles:
            raise CredentialsError(f"a connection from {where} holds the {role} certificate, "
                                   f"expected {' or '.join(sorted(roles))}")
        name = (names or {}).get(role, role)
        return SocketChannel(stream, name, timeout, max_frame_bytes)
    except BaseException:
        sock.close()
        raise


# ------------------------------------------------------------------------------ the mesh

def _hello(rank: int, session: bytes) -> bytes:
    return _HELLO + struct.pack("<IH", rank, len(session)) + session


def _refusal(reason: str) -> bytes:
    msg = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    return _NO + struct.pack("<H", len(msg)) + msg


def _read_hello(ch: SocketChannel) -> tuple[int, bytes]:
    head = ch._stream.recv_exact(len(_HELLO) + 6)
    if head[: len(_HELLO)] != _HELLO:
        raise CommError("the peer is not speaking this version of the Veil protocol")
    rank, slen = struct.unpack("<IH", head[len(_HELLO):])
    if slen > MAX_SESSION_BYTES:
        raise CommError(f"hello with a {slen}-byte session id (limit {MAX_SESSION_BYTES})")
    return rank, ch._stream.recv_exact(slen)


def _read_answer(ch: SocketChannel) -> str | None:
    """``None`` if the listener accepted us, else its reason."""
    head = ch._stream.recv_exact(len(_OK))
    if head == _OK:
        return None
    if head != _NO:
        raise CommError("the peer answered our hello with garbage")
    (m,) = struct.unpack("<H", ch._stream.recv_exact(2))
    return ch._stream.recv_exact(min(m, MAX_REASON_BYTES)).decode("utf-8", "replace")


def connect_mesh(
    rank: int,
    addresses: Sequence[str | tuple[str, int]],
    timeout: float,
    names: Sequence[str],
    credentials: Credentials,
    session: bytes = b"",
    listener: socket.socket | None = None,
    connect_timeout: float | None = None,
    max_frame_bytes: int = MAX_FRAME_BYTES,
) -> dict[int, SocketChannel]:
    """Connect ``rank`` to every other participant; returns ``{peer rank: channel}``.

    Every link is mutual TLS 1.3 with ``credentials`` (this participant's role,
    ``ROLES[rank]``); each peer must hold the certificate of its rank's role.
    ``session`` (at most 256 bytes, not a secret) keeps concurrent runs of one
    deployment apart. ``connect_timeout`` (default: ``timeout``) bounds the
    whole set-up: a participant that never shows up gives a clear
    :class:`PeerTimeoutError`, listing the connections that were refused.
    """
    n = len(addresses)
    if not 0 <= rank < n:
        raise ValueError(f"rank {rank} out of range for {n} addresses")
    if not isinstance(credentials, Credentials):
        raise CredentialsError("a TCP run needs credentials (see veil.comm.credentials)")
    if credentials.role != ROLES[rank]:
        raise CredentialsError(f"rank {rank} ({names[rank]}) needs the {ROLES[rank]} "
                               f"credentials, got the {credentials.role} ones")
    if len(session) > MAX_SESSION_BYTES:
        raise ValueError(f"session id longer than {MAX_SESSION_BYTES} bytes")
    deadline = time.monotonic() + (connect_timeout or timeout)
    own_listener = listener is None
    if listener is None and rank < n - 1:
        listener = listen(addresses[rank])
    channels: dict[int, SocketChannel] = {}
    try:
        for peer in range(rank):
            ch = tls_connect(addresses[peer], credentials, ROLES[peer], timeout=timeout,
                             connect_timeout=max(0.1, deadline - time.monotonic()),
                             name=names[peer], max_frame_bytes=max_frame_bytes)
            try:
                ch._stream.sendall(_hello(rank, session))
                refused = _read_answer(ch)
            except (OSError, ssl.SSLError) as exc:
                ch.close()
                raise CredentialsError(f"{names[peer]} refused us: {_tls_reason(exc)}") from None
            if refused is not None:
                ch.close()
                raise CommError(f"{names[peer]} refused the connection: {refused}")
            channels[peer] = ch
        expected = {ROLES[p]: p for p in range(rank + 1, n)}
        refusals: list[str] = []
        while expected:
            assert listener is not None
            try:
                ch = tls_accept(listener, credentials, expected, timeout=timeout,
                                deadline=deadline,
                                names=dict(zip(ROLES, names, strict=False)),
                                max_frame_bytes=max_frame_bytes)
            except PeerTimeoutError:
                missing = ", ".join(names[p] for p in sorted(expected.values()))
                why = f" (refused: {'; '.join(refusals[-3:])})" if refusals else ""
                raise PeerTimeoutError(f"{missing} never connected{why}") from None
            except (CredentialsError, OSError) as exc:
                refusals.append(str(exc))
                continue
            peer = expected[ch.peer_role]
            try:
                claimed, their_session = _read_hello(ch)
            except (CommError, OSError, ssl.SSLError) as exc:
                refusals.append(f"{names[peer]} sent a bad hello ({exc})")
                ch.close()
                continue
            reason = None
            if claimed != peer:
                reason = f"rank {claimed} does not match the {ch.peer_role} certificate"
            elif not hmac.compare_digest(their_session, session):
                reason = f"{names[peer]} belongs to another session (different session id)"
            try:
                ch._stream.sendall(_OK if reason is None else _refusal(reason))
            except (OSError, ssl.SSLError):
                reason = reason or f"{names[peer]} left during the hello"
            if reason is not None:
                refusals.append(reason)
                ch.close()
                continue
            del expected[ch.peer_role]
            channels[peer] = ch
    except BaseException:
        for ch in channels.values():
            ch.close()
        raise
    finally:
        if own_listener and listener is not None:
            listener.close()
    return channels
