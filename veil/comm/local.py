"""In-memory transport: parties are threads of one process, frames go through queues.

Frames are real serialised bytes (the same wire format and byte counts as TCP),
so protocol code behaves identically on both transports; a frame is a copy,
so no party ever shares memory with another.

Example
-------
>>> from veil.comm.local import channel_pair
>>> from veil.comm.link import Link
>>> a, b = channel_pair("party 0", "party 1")
>>> la, lb = Link(a, timeout=1), Link(b, timeout=1)
>>> la.send([1, 2]); lb.recv()
[1, 2]
"""

from __future__ import annotations

import queue

from veil.comm import wire
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Channel

_CLOSED = object()


class QueueChannel(Channel):
    """One end of an in-memory channel (see :func:`channel_pair`)."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue, peer_name: str) -> None:
        self._inbox, self._outbox = inbox, outbox
        self.peer_name = peer_name
        self._closed = False
        self._peer_closed: str | None = None

    def send_frame(self, enc: wire.Encoded) -> None:
        if self._closed:
            raise CommError(f"channel to {self.peer_name} is closed")
        if self._peer_closed is not None:
            raise PeerDisconnectedError(self._peer_closed)
        self._outbox.put(enc.to_bytearray())

    def flush(self) -> None:
        return None

    def recv_frame(self, timeout: float) -> bytearray:
        if self._closed:
            raise CommError(f"channel to {self.peer_name} is closed")
        if self._peer_closed is not None:
            raise PeerDisconnectedError(self._peer_closed)
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise PeerTimeoutError(
                f"no message from {self.peer_name} within {timeout:g} s"
            ) from None
        if isinstance(item, tuple) and item and item[0] is _CLOSED:
            reason = item[1] or "closed the connection"
            self._peer_closed = f"{self.peer_name} {reason}"
            raise PeerDisconnectedError(self._peer_closed)
        return item

    def close(self, reason: str | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put((_CLOSED, reason))


def channel_pair(name_a: str, name_b: str) -> tuple[QueueChannel, QueueChannel]:
    """Two connected in-memory channel ends: the first talks to ``name_b``, the second to
    ``name_a``."""
    ab: queue.Queue = queue.Queue()
    ba: queue.Queue = queue.Queue()
    return QueueChannel(ba, ab, name_b), QueueChannel(ab, ba, name_a)
