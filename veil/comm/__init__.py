"""Transports between parties: in-memory queues and TCP, with exact traffic accounting.

Protocol code talks to a :class:`~veil.comm.link.Link`; every message is
serialised with :mod:`veil.comm.wire` (never pickle) and counted at the
transport (rounds, messages, bytes).
"""

from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError, WireFormatError
from veil.comm.link import Channel, Counters, Link

__all__ = [
    "Channel",
    "CommError",
    "Counters",
    "Link",
    "PeerDisconnectedError",
    "PeerTimeoutError",
    "WireFormatError",
]
