"""Transports between parties: in-memory queues and TCP, with exact traffic accounting.

Protocol code talks to a :class:`~veil.comm.link.Link`; every message is
serialised with :mod:`veil.comm.wire` (never pickle) and counted at the
transport (rounds, messages, bytes). Every TCP link is mutual TLS 1.3 with a
deployment's credentials (:mod:`veil.comm.credentials`, docs/security.md).
"""

from veil.comm.credentials import Credentials, CredentialsError
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError, WireFormatError
from veil.comm.link import Channel, Counters, Link

__all__ = [
    "Channel",
    "CommError",
    "Credentials",
    "CredentialsError",
    "Counters",
    "Link",
    "PeerDisconnectedError",
    "PeerTimeoutError",
    "WireFormatError",
]
