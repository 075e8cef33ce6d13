"""What a secure inference cost: times, bytes and rounds, measured at the transport.

:class:`InferenceReport` holds the measured figures of one private inference
(offline phase = the dealer's material; online phase = the two parties'
protocol on the data owner's batch) and derives, from the measured online
bytes and rounds, the online time under a *network model* (bandwidth and
round-trip time). Modelled times are labelled as such everywhere.

Example
-------
>>> r = InferenceReport(batch_size=1, online_s=0.01, online_bytes=1_000_000, online_rounds=10)
>>> round(r.modelled_online_s(LAN), 4)    # 0.01 s + 10 RTT of 0.5 ms + 1 MB at 1 Gbit/s
0.023
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NetworkModel:
    """A labelled network: bandwidth (bits per second) and round-trip time (seconds)."""

    name: str
    bandwidth_bps: float
    rtt_s: float

    def transfer_s(self, nbytes: float, rounds: int) -> float:
        """Time to move ``nbytes`` in ``rounds`` sequential rounds over this network."""
        return rounds * self.rtt_s + 8.0 * nbytes / self.bandwidth_bps


LAN = NetworkModel("LAN (model: 1 Gbit/s, 0.5 ms RTT)", 1e9, 0.5e-3)
WAN = NetworkModel("WAN (model: 100 Mbit/s, 40 ms RTT)", 1e8, 40e-3)


@dataclass
class InferenceReport:
    """Measured cost of one secure inference.

    Attributes
    ----------
    batch_size: images in the batch.
    transport: ``"local"`` (threads, in-memory queues) or ``"tcp"`` (processes, loopback).
    setup_s, setup_bytes, setup_rounds: sharing the weights (once per model, not per query).
    offline_s: the dealer generating and delivering this batch's material.
    offline_bytes: bytes of dealer material received by the two parties.
    dealer_key_bytes: the part of it that is FSS keys (comparisons: ReLU, max pool, argmax).
    online_s: wall time of the online phase (input sharing to revealed output).
    online_bytes: bytes sent by both parties during the online phase (input sharing included).
    online_rounds: communication rounds of the online phase (the longer party's count).
    """

    batch_size: int
    transport: str = "local"
    setup_s: float = 0.0
    setup_bytes: int = 0
    setup_rounds: int = 0
    offline_s: float = 0.0
    offline_bytes: int = 0
    dealer_key_bytes: int = 0
    online_s: float = 0.0
    online_bytes: int = 0
    online_rounds: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def modelled_online_s(self, network: NetworkModel) -> float:
        """Measured online compute time plus ``network``'s cost for the measured traffic.

        The traffic is counted per direction: both parties send at once, so the
        slower direction (half the total, for symmetric protocols) bounds it; we
        charge the full total to stay conservative.
        """
        return self.online_s + network.transfer_s(self.online_bytes, self.online_rounds)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lan_online_s"] = self.modelled_online_s(LAN)
        d["wan_online_s"] = self.modelled_online_s(WAN)
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        mb = 1e6
        return (
            f"batch {self.batch_size} over {self.transport}: offline {self.offline_s:.3f} s "
            f"({self.offline_bytes / mb:.2f} MB of dealer material, "
            f"{self.dealer_key_bytes / mb:.2f} MB FSS keys); online {self.online_s:.3f} s, "
            f"{self.online_bytes / mb:.2f} MB, {self.online_rounds} rounds; "
            f"online under the {LAN.name}: {self.modelled_online_s(LAN):.3f} s, "
            f"{WAN.name}: {self.modelled_online_s(WAN):.3f} s; weights shared once in "
            f"{self.setup_s:.3f} s ({self.setup_bytes / mb:.2f} MB)")
