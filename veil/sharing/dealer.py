"""The trusted dealer: generates correlated randomness on request, for two parties.

The dealer is a third participant (a thread with the in-memory transport, its
own process over TCP). Both parties send it the same ordered requests
``[(kind, params), ...]``; the dealer checks they agree, runs each kind's
registered generator (:func:`register_material`) and sends each party its own
half. The dealer never sees any party's data.

Protocol messages (all :mod:`veil.comm.wire`, never pickle):

- party -> dealer: ``{"op": "req", "items": [[kind, params, module], ...]}`` or
  ``{"op": "done"}``;
- dealer -> party: ``{"op": "mat", "items": [material, ...]}`` or
  ``{"op": "error", "msg": str}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import torch

from veil.comm.link import Link
from veil.csprng import CSPRNG
from veil.sharing.errors import MaterialError, MaterialMismatchError
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import (
    Material,
    MaterialKind,
    canonical_params,
    get_kind,
    register_material,
    registered_modules,
    request_key,
)

__all__ = [
    "Dealer",
    "Material",
    "MaterialKind",
    "register_material",
    "registered_modules",
    "request_message",
    "serve",
]


#: Halves at least this large are sent to both parties concurrently (see Dealer._send_both).
_CONCURRENT_SEND_BYTES = 1 << 20


def _nbytes(obj: Any) -> int:
    """Bytes of the arrays and tensors in a material tree (an estimate of its frame size)."""
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    return int(getattr(obj, "nbytes", 0))


def request_message(items: list[tuple[str, Mapping[str, Any]]]) -> dict:
    """The request a party sends for ``items`` (kind names, parameters, defining modules)."""
    out = []
    for kind, params in items:
        k = get_kind(kind)
        out.append([kind, canonical_params(params), k.module])
    return {"op": "req", "items": out}


class Dealer:
    """Serves material requests from parties 0 and 1 over two links until both are done.

    Parameters
    ----------
    links:
        ``{0: link to party 0, 1: link to party 1}``.
    rng:
        The dealer's generator (fresh ``os.urandom`` key by default).
    keyring:
        The dealer's reusable masks (a fresh secret key by default).
    """

    def __init__(self, links: Mapping[int, Link], rng: CSPRNG | None = None,
                 keyring: MaskKeyring | None = None) -> None:
        self.links = links
        self.rng = rng or CSPRNG()
        self.keyring = keyring or MaskKeyring()
        self.generate_s = 0.0
        self.items = 0

    def _fail(self, msg: str) -> None:
        for link in self.links.values():
            try:
                link.send({"op": "error", "msg": msg})
            except Exception:  # noqa: BLE001 - the party may already be gone
                pass
        raise MaterialMismatchError(msg)

    def serve(self) -> dict[str, float]:
        """Answer requests until both parties said ``done``; returns dealer statistics."""
        done = {0: False, 1: False}
        while not all(done.values()):
            msgs = {}
            for r in (0, 1):
                if done[r]:
                    continue
                msg = self.links[r].recv()
                if not isinstance(msg, dict) or msg.get("op") not in ("req", "done"):
                    self._fail(f"party {r} sent the dealer a malformed message")
                msgs[r] = msg
            if any(m["op"] == "done" for m in msgs.values()):
                for r, m in msgs.items():
                    if m["op"] == "done":
                        done[r] = True
                if all(done.values()):
                    break
                waiting = [r for r, d in done.items() if not d]
                self._fail(f"party {waiting[0]} asked the dealer for material that the other "
                           "party does not need: the parties' programs diverge")
            if len(msgs) < 2:
                continue
            reqs = [msgs[0].get("items"), msgs[1].get("items")]
            if not all(isinstance(r, list) for r in reqs):
                self._fail("malformed material request")
            keys = [[request_key(i[0], i[1]) for i in r] for r in reqs]
            if keys[0] != keys[1]:
                self._fail("the parties asked the dealer for different material: "
                           f"party 0 {keys[0][:3]}..., party 1 {keys[1][:3]}...")
            halves: tuple[list, list] = ([], [])
            t0 = time.perf_counter()
            try:
                for kind, params, module in reqs[0]:
                    m0, m1 = self.generate(kind, params, module)
                    halves[0].append(m0)
                    halves[1].append(m1)
            except (MaterialError, TypeError, ValueError) as exc:
                self._fail(f"the dealer could not generate {kind}: {exc}")
            self.generate_s += time.perf_counter() - t0
            self.items += len(halves[0])
            self._send_both(halves)
        return self.stats()

    def generate(self, kind: str, params: dict, module: str | None = None) -> tuple[Any, Any]:
        """Both halves of one item of ``kind``; a subclass may serve preprocessed items."""
        return get_kind(kind, module).run(self.rng, self.keyring, params)

    def _send_both(self, halves: tuple[list, list]) -> None:
        """Send each party its half; large halves to both parties at once.

        Sent one after the other, party 1's half of a large item (a 1e5-element
        ReLU key is ~200 MB per party) arrived only after party 0's was fully
        copied, and party 0 then spent that time waiting for party 1 in its first
        opening, which counts as *online* time. Two sender threads serve both
        parties concurrently (over TCP the socket writes overlap; in memory the
        frame copies interleave, so both halves arrive at about the same time).
        """
        msgs = [{"op": "mat", "items": halves[r]} for r in (0, 1)]
        if _nbytes(halves[1]) < _CONCURRENT_SEND_BYTES:
            for r in (0, 1):
                self.links[r].send(msgs[r])
            return
        errors: list[BaseException] = []

        def send_one() -> None:
            try:
                self.links[1].send(msgs[1])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the dealer thread
                errors.append(exc)

        helper = threading.Thread(target=send_one, daemon=True, name="veil-dealer-send")
        helper.start()
        try:
            self.links[0].send(msgs[0])
        finally:
            helper.join()
        if errors:
            raise errors[0]

    def stats(self) -> dict[str, float]:
        return {
            "generate_s": self.generate_s,
            "items": self.items,
            "bytes_sent_party0": self.links[0].counters.bytes_sent,
            "bytes_sent_party1": self.links[1].counters.bytes_sent,
        }


def serve(links: Mapping[int, Link], rng: CSPRNG | None = None) -> dict[str, float]:
    """Run a :class:`Dealer` on ``links`` until both parties are done."""
    return Dealer(links, rng).serve()
