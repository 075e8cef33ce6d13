"""Serving HE inference over TCP: the model owner answers ciphertexts, never sees a plaintext.

Wire format: each message is an 8-byte little-endian length and a
:func:`veil.he.ckks.pack` blob. Requests (one or more per connection):

* ``{"op": "spec"}`` -> ``{"kind": "he-spec", "spec": ...}`` for a layout
  (``"layout"`` in the request, default ``vector``): what the client makes keys for;
* ``{"op": "keys"}`` + the client's :class:`~veil.he.client.PublicKeys` bytes ->
  ``{"kind": "he-key-id", "key_id": ...}`` (the server keeps the last few key sets);
* ``{"op": "infer", "key_id": ...}`` + an :class:`~veil.he.client.EncryptedBatch` ->
  the encrypted outputs.

Errors come back as ``{"kind": "error", "error": message}``; every socket
operation has a timeout and messages are capped, so a bad or silent peer never
hangs the other side.

Example
-------
>>> server = start_server(model, (1, 28, 28), port=0)       # doctest: +SKIP
>>> out = HEConnection(("127.0.0.1", server.port)).infer(x)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import struct
import threading
from collections import OrderedDict

import numpy as np
from torch import nn

from veil.he.ckks import pack, unpack
from veil.he.client import Client, EncryptedBatch, PublicKeys
from veil.he.convert import convert
from veil.he.plan import HESpec, plan
from veil.he.server import Server

MAX_MESSAGE = 2 << 30
DEFAULT_TIMEOUT = 120.0
KEY_CACHE = 8


class ServiceError(RuntimeError):
    """The peer closed the connection, timed out, or answered with an error."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise ServiceError("the peer closed the connection mid-message")
        buf += chunk
    return bytes(buf)


def send_message(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("<Q", len(payload)) + payload)


def recv_message(sock: socket.socket) -> bytes:
    (size,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if size > MAX_MESSAGE:
        raise ServiceError(f"message of {size} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _recv_exact(sock, size)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: HEServer = self.server  # type: ignore[assignment]
        self.request.settimeout(server.timeout)
        while True:
            try:
                data = recv_message(self.request)
            except (ServiceError, OSError, struct.error):
                return  # the client is done (or gone)
            try:
                reply = server.answer(data)
            except (ValueError, KeyError) as exc:
                reply = pack({"kind": "error", "error": str(exc)}, [])
            try:
                send_message(self.request, reply)
            except OSError:
                return


class HEServer(socketserver.ThreadingTCPServer):
    """A threaded TCP server that evaluates one model on clients' ciphertexts."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], host: str = "127.0.0.1",
                 port: int = 0, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__((host, port), _Handler)
        self.graph = convert(model, input_shape)
        self.timeout = timeout
        self.lock = threading.Lock()
        self.servers: OrderedDict[str, Server] = OrderedDict()
        self.served = 0

    @property
    def port(self) -> int:
        return self.server_address[1]

    def answer(self, data: bytes) -> bytes:
        header, blobs = unpack(data)
        op = header.get("op")
        if op == "spec":
            spec = plan(self.graph, header.get("layout", "vector"))
            return pack({"kind": "he-spec", "spec": spec.to_dict()}, [])
        if op == "keys":
            if len(blobs) != 1:
                raise ValueError("a keys request carries exactly one key blob")
            key_id = hashlib.sha256(blobs[0]).hexdigest()[:32]
            server = Server(self.graph, PublicKeys.from_bytes(blobs[0]))
            with self.lock:
                self.servers[key_id] = server
                while len(self.servers) > KEY_CACHE:
                    self.servers.popitem(last=False)
            return pack({"kind": "he-key-id", "key_id": key_id}, [])
        if op == "infer":
            with self.lock:
                server = self.servers.get(str(header.get("key_id")))
            if server is None:
                raise ValueError("unknown key_id: send the public keys first")
            enc = EncryptedBatch.from_bytes(server.ctx, pack({**header, "kind": "he-ciphertexts"},
                                                             blobs))
            out = server.evaluate(enc).to_bytes()
            self.served += enc.n
            return out
        raise ValueError(f"unknown request {op!r}")


def start_server(model: nn.Module, input_shape: tuple[int, ...], host: str = "127.0.0.1",
                 port: int = 0, timeout: float = DEFAULT_TIMEOUT) -> HEServer:
    """Start serving in a background thread; ``server.shutdown()`` stops it."""
    server = HEServer(model, input_shape, host, port, timeout)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class HEConnection:
    """The client's side: fetch the spec, make keys, send them once, query many times."""

    def __init__(self, address: tuple[str, int], layout: str = "vector",
                 timeout: float = DEFAULT_TIMEOUT, client: Client | None = None):
        self.address, self.timeout = address, timeout
        try:
            self.sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise ServiceError(f"cannot reach {address[0]}:{address[1]}: {exc}") from exc
        self.sock.settimeout(timeout)
        spec = HESpec.from_dict(self._call({"op": "spec", "layout": layout})[0]["spec"])
        if client is not None and client.spec != spec:
            raise ServiceError("the given client's keys do not match the server's model")
        self.client = client or Client(spec)
        keys = self.client.public_keys().to_bytes()
        self.key_bytes = len(keys)
        self.key_id = self._call({"op": "keys"}, [keys])[0]["key_id"]

    def _call(self, header: dict, blobs: list[bytes] | None = None) -> tuple[dict, list[bytes]]:
        try:
            send_message(self.sock, pack(header, blobs or []))
            reply = unpack(recv_message(self.sock))
        except TimeoutError as exc:
            raise ServiceError(f"no answer from {self.address[0]}:{self.address[1]} within "
                               f"{self.timeout}s") from exc
        except OSError as exc:
            raise ServiceError(f"connection to {self.address[0]}:{self.address[1]} failed: "
                               f"{exc}") from exc
        if reply[0].get("kind") == "error":
            raise ServiceError(f"server refused the request: {reply[0]['error']}")
        return reply

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Encrypt ``x`` (``(batch, features)``), have the server evaluate it, decrypt."""
        enc = self.client.encrypt(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
        header, blobs = unpack(enc.to_bytes())
        header, blobs = self._call({**header, "op": "infer", "key_id": self.key_id}, blobs)
        out = EncryptedBatch.from_bytes(self.client.ctx, pack(header, blobs))
        return self.client.decrypt(out)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HEConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
