"""Errors raised by transports. All derive from :class:`CommError`."""

from __future__ import annotations


class CommError(RuntimeError):
    """A communication failure between parties."""


class PeerDisconnectedError(CommError):
    """The peer closed the connection, crashed, or reported its own failure."""


class PeerTimeoutError(CommError, TimeoutError):
    """The peer sent nothing within the configured timeout."""


class WireFormatError(CommError, ValueError):
    """A received message is malformed (never executed, always rejected)."""
