"""Measured bytes and waiting time of every message a ServerApp exchanges.

:func:`metered` wraps a Flower ``Grid`` so that each ``send_and_receive`` counts
the serialised size (protobuf ``ByteSize`` of the message content, the payload
that gRPC carries, before transport framing) of what goes out and what comes
back, and the time spent waiting for clients. The same meter serves plain
FedAvg, SecAgg+ (four exchanges per round) and two-server aggregation, so
their per-client bytes compare like for like.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import Message
from flwr.common.serde import recorddict_to_proto


def content_bytes(msg: Message) -> int:
    """Serialised size of a message's content (0 for an error reply)."""
    return recorddict_to_proto(msg.content).ByteSize() if msg.has_content() else 0


@dataclass
class Meter:
    """Totals since the last :meth:`take`."""

    bytes_down: int = 0
    bytes_up: int = 0
    wait_s: float = 0.0
    _down_nodes: set | None = None

    def take(self) -> dict[str, float]:
        """Return the totals (and per-client averages) and reset."""
        nodes = max(len(self._down_nodes or ()), 1)
        out = {"bytes_down_total": self.bytes_down, "bytes_up_total": self.bytes_up,
               "bytes_down_per_client": self.bytes_down / nodes,
               "bytes_up_per_client": self.bytes_up / nodes,
               "clients_contacted": len(self._down_nodes or ()), "wait_s": self.wait_s}
        self.bytes_down = self.bytes_up = 0
        self.wait_s, self._down_nodes = 0.0, set()
        return out


def metered(grid, meter: Meter):
    """Make ``grid.send_and_receive`` record into ``meter``; returns ``grid``."""
    inner = grid.send_and_receive
    meter._down_nodes = set()

    def send_and_receive(messages, *args, **kwargs):
        messages = list(messages)
        for m in messages:
            meter.bytes_down += content_bytes(m)
            meter._down_nodes.add(m.metadata.dst_node_id)
        start = time.perf_counter()
        replies = list(inner(messages, *args, **kwargs))
        meter.wait_s += time.perf_counter() - start
        for r in replies:
            meter.bytes_up += content_bytes(r)
        return replies

    grid.send_and_receive = send_and_receive
    return grid
