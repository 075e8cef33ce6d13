"""Serving an :class:`~veil.fe.pipeline.EncryptedClassifier` over TCP.

Wire format (one request per connection): the client sends an 8-byte
little-endian length and a serialised ciphertext (:func:`veil.fe.dumps`); the
server answers with an 8-byte length and a UTF-8 JSON object
``{"label", "outputs", "logits"}`` or ``{"error": message}``. Every socket
operation has a timeout, messages are capped in size, and a malformed or
foreign ciphertext gets an error reply instead of a crash, so a bad or silent
peer can never hang the other side.

Example
-------
>>> server = start_server(classifier, port=0)         # doctest: +SKIP
>>> query(("127.0.0.1", server.port), ct)              # doctest: +SKIP
{'label': 7, 'outputs': [...], 'logits': [...]}
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
from dataclasses import asdict

from veil.fe.pipeline import EncryptedClassifier
from veil.fe.scheme import Ciphertext, FEError
from veil.fe.serialization import dumps, loads

MAX_MESSAGE = 64 << 20
DEFAULT_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """The peer closed the connection, timed out, or answered with an error."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ServiceError("the peer closed the connection mid-message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_message(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("<Q", len(payload)) + payload)


def recv_message(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size > MAX_MESSAGE:
        raise ServiceError(f"message of {size} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _recv_exact(sock, size)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: FEServer = self.server  # type: ignore[assignment]
        self.request.settimeout(server.timeout)
        try:
            data = recv_message(self.request)
        except (ServiceError, OSError) as exc:
            server.log(f"dropped a request: {exc}")
            return
        try:
            ct = loads(data, mpk=server.classifier.mpk)
            if not isinstance(ct, Ciphertext):
                raise FEError(f"expected a ciphertext, got a {type(ct).__name__}")
            with server.lock:  # one decryption at a time: the solver is not thread-safe
                reply = asdict(server.classifier.classify(ct))
        except (FEError, ValueError) as exc:
            reply = {"error": str(exc)}
        try:
            send_message(self.request, json.dumps(reply).encode())
        except OSError as exc:
            server.log(f"could not reply: {exc}")
        server.served += 1


class FEServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server around an :class:`EncryptedClassifier`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, classifier: EncryptedClassifier, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = DEFAULT_TIMEOUT, log=None) -> None:
        super().__init__((host, port), _Handler)
        self.classifier, self.timeout = classifier, timeout
        self.lock = threading.Lock()
        self.served = 0
        self.log = log or (lambda msg: None)

    @property
    def port(self) -> int:
        return self.server_address[1]


def start_server(classifier: EncryptedClassifier, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = DEFAULT_TIMEOUT) -> FEServer:
    """Start serving in a background thread; ``server.shutdown()`` stops it."""
    server = FEServer(classifier, host, port, timeout)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def query(address: tuple[str, int], ct: Ciphertext, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Send one ciphertext, return the server's JSON answer (raises :class:`ServiceError`)."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            send_message(sock, dumps(ct))
            reply = json.loads(recv_message(sock))
    except TimeoutError as exc:
        raise ServiceError(f"no answer from {address[0]}:{address[1]} within {timeout}s") from exc
    except OSError as exc:
        raise ServiceError(f"cannot reach {address[0]}:{address[1]}: {exc}") from exc
    if "error" in reply:
        raise ServiceError(f"server refused the ciphertext: {reply['error']}")
    return reply
