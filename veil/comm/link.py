"""A link to one peer: message (de)serialisation and accounting on top of a channel.

A :class:`Channel` moves opaque frames between two endpoints (in-memory
queues, a TCP socket). A :class:`Link` turns messages into frames with
:mod:`veil.comm.wire` and counts, at the transport, every message, byte and
communication round. Byte counts are the exact frame sizes plus an 8-byte
length prefix per message, identical for every transport.

Rounds: :meth:`Link.exchange` (send then receive, both directions at once)
counts one round, as does a one-way :meth:`Link.send` or :meth:`Link.recv`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from veil.comm import wire

#: Bytes of framing added per message by every transport (the length prefix).
FRAME_OVERHEAD = 8


@dataclass
class Counters:
    """Traffic measured on one link."""

    rounds: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wait_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def reset(self) -> None:
        self.__init__()


class Channel(ABC):
    """A bidirectional, ordered, reliable frame channel to one peer."""

    peer_name: str = "peer"

    @abstractmethod
    def send_frame(self, enc: wire.Encoded) -> None:
        """Queue a frame for sending (may return before it is on the wire)."""

    @abstractmethod
    def flush(self) -> None:
        """Block until every queued frame has been handed to the transport."""

    @abstractmethod
    def recv_frame(self, timeout: float) -> bytearray:
        """Return the next frame; raise PeerTimeoutError / PeerDisconnectedError."""

    @abstractmethod
    def close(self, reason: str | None = None) -> None:
        """Close the channel; a reason tells the peer why (it then fails fast)."""


class Link:
    """Messages to and from one peer over a :class:`Channel`, with accounting.

    Parameters
    ----------
    channel:
        The underlying frame channel.
    timeout:
        Seconds to wait for an incoming message before raising
        :class:`~veil.comm.errors.PeerTimeoutError`.
    """

    def __init__(self, channel: Channel, timeout: float) -> None:
        self.channel = channel
        self.timeout = float(timeout)
        self.counters = Counters()
        self._lock = threading.Lock()

    @property
    def peer_name(self) -> str:
        return self.channel.peer_name

    def _send(self, obj: Any) -> None:
        enc = wire.encode(obj)
        self.channel.send_frame(enc)
        self.counters.messages_sent += 1
        self.counters.bytes_sent += enc.nbytes + FRAME_OVERHEAD

    def _recv(self) -> Any:
        t0 = time.perf_counter()
        frame = self.channel.recv_frame(self.timeout)
        self.counters.wait_s += time.perf_counter() - t0
        self.counters.messages_received += 1
        self.counters.bytes_received += len(frame) + FRAME_OVERHEAD
        return wire.from_bytes(frame)

    def send(self, obj: Any) -> None:
        """Send one message (one round). Do not modify its tensors in place afterwards."""
        self._send(obj)
        self.counters.rounds += 1

    def recv(self) -> Any:
        """Receive one message (one round)."""
        obj = self._recv()
        self.counters.rounds += 1
        return obj

    def exchange(self, obj: Any) -> Any:
        """Send ``obj`` and receive the peer's message, concurrently: one round."""
        self._send(obj)
        other = self._recv()
        self.channel.flush()
        self.counters.rounds += 1
        return other

    def close(self, reason: str | None = None) -> None:
        self.channel.close(reason)
