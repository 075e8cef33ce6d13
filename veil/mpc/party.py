"""A computing party: its rank, its links to the peer and the dealer, its randomness.

Protocol code is written once, from the point of view of one party holding its
own share (SPMD); :func:`veil.run` creates one :class:`Party` per computing
party and calls the job with it.

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.tensor([1.5, -2.0]) if party.rank == 0 else None,
...                     owner=0, shape=(2,))
...     return (x * x).reveal(), party.stats()["rounds"]
>>> veil.run(job)[0]            # doctest: +SKIP
(tensor([2.2500, 4.0000]), 2)
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from veil import ring
from veil.comm.link import Link
from veil.csprng import CSPRNG
from veil.sharing import triples  # noqa: F401  (registers the built-in kinds)
from veil.sharing.dealer import request_message
from veil.sharing.errors import MaterialError, MaterialMismatchError
from veil.sharing.material import (
    canonical_params,
    get_kind,
    normalize_plan,
    request_key,
    to_device,
)
from veil.sharing.store import DiskStore, MemoryStore

if TYPE_CHECKING:
    from veil.mpc.tensor import SecretTensor

#: ``hook(params, material) -> material``, see :meth:`Party.on_material`.
MaterialHook = Callable[[dict, dict], dict]


class Party:
    """One of the two computing parties (rank 0 or 1).

    Parameters
    ----------
    rank:
        0 or 1.
    peer:
        Link to the other computing party.
    dealer:
        Link to the dealer (``None``: only a preprocessing store can provide material).
    device:
        Where shares live (``"cpu"``, ``"cuda"``...).
    frac_bits:
        Default fixed-point precision of :meth:`share`.
    """

    def __init__(
        self,
        rank: int,
        peer: Link,
        dealer: Link | None = None,
        *,
        device: torch.device | str | None = None,
        frac_bits: int = ring.DEFAULT_FRAC_BITS,
        store: MemoryStore | DiskStore | None = None,
    ) -> None:
        if rank not in (0, 1):
            raise ValueError(f"a computing party has rank 0 or 1, got {rank}")
        self.rank = rank
        self.peer = peer
        self.dealer = dealer
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.frac_bits = ring.check_frac_bits(frac_bits)
        #: Private randomness of this party.
        self.rng = CSPRNG()
        #: Randomness shared with the peer (keyed in :meth:`setup`), for input sharing.
        self.common_rng: CSPRNG | None = None
        self._store = store
        self._buffer: deque[tuple[str, dict]] = deque()  # prefetched (key, material)
        self._material_hooks: dict[str, list[tuple[dict, MaterialHook]]] = {}
        self._offline_s = 0.0
        self._materials_used = 0
        self._t_start = time.perf_counter()
        self._offline_at_start = 0.0
        #: Identifies this pair of parties to the debug overflow oracle (veil.mpc.overflow).
        self.debug_pair: bytes | None = None
        self._debug_seq = 0

    # -- set-up ------------------------------------------------------------------
    def setup(self) -> None:
        """Agree on a common seed with the peer and check preprocessing stores match."""
        if self.rank == 0:
            seed = self.rng.seed()
            self.peer.send({"seed": seed, "store": self._store_state()})
            other = self.peer.recv()
        else:
            msg = self.peer.recv()
            self.peer.send({"store": self._store_state()})
            seed, other = msg.get("seed"), msg
        if not isinstance(seed, bytes) or len(seed) != 16:
            raise MaterialError("peer sent a malformed set-up message")
        mine = self._store_state()
        if other.get("store") != mine:
            raise MaterialMismatchError(
                f"the parties' preprocessing stores do not match: party {self.rank} has "
                f"{mine}, the peer has {other.get('store')} (same preprocessing run and same "
                "number of items consumed are required)")
        self.common_rng = CSPRNG(seed)
        self.debug_pair = hashlib.sha256(b"veil-debug-pair" + seed).digest()[:16]
        self.reset_stats()

    def _store_state(self) -> list | None:
        if self._store is None:
            return None
        return [self._store.store_id, self._store.consumed, self._store.total]

    def next_debug_seq(self) -> int:
        """The next sequence number of a debug-oracle check (same order in both parties)."""
        self._debug_seq += 1
        return self._debug_seq

    # -- communication -----------------------------------------------------------
    def exchange(self, obj: Any) -> Any:
        """Send ``obj`` to the peer and receive the peer's message: one round.

        Tensors, dicts and lists of tensors, bytes and JSON scalars may be sent.
        """
        return self.peer.exchange(obj)

    def send(self, obj: Any) -> None:
        """Send ``obj`` to the peer (one round).

        Sending is asynchronous over TCP, so the message's tensors are copied first:
        the caller may modify them in place right after.
        """
        self.peer.send(_snapshot(obj))

    def recv(self) -> Any:
        """Receive the peer's next message (one round)."""
        return self.peer.recv()

    def open(self, share: torch.Tensor) -> torch.Tensor:
        """Reveal a raw ring share to both parties: ``share + peer_share`` (one round).

        This is the building block of masked openings (``x + r`` with a dealer mask
        ``r``); it returns the public ring value.
        """
        if share.dtype != torch.int64:
            raise TypeError(f"ring shares are int64, got {share.dtype}")
        other = self.exchange(share)
        if not isinstance(other, torch.Tensor) or other.shape != share.shape:
            raise MaterialError("the peer opened a value of a different shape (programs diverge)")
        return share + other.to(share.device)

    def open_many(self, shares: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Open several ring shares in one round."""
        other = self.exchange(list(shares))
        if not isinstance(other, list) or len(other) != len(shares) or any(
            not isinstance(o, torch.Tensor) or o.shape != s.shape
            for o, s in zip(other, shares, strict=True)
        ):
            raise MaterialError("the peer opened values of different shapes "
                                "(programs diverge)")
        return [s + o.to(s.device) for s, o in zip(shares, other, strict=True)]

    # -- sharing -----------------------------------------------------------------
    def share(
        self,
        value: torch.Tensor | float | Sequence | None = None,
        owner: int = 0,
        shape: Sequence[int] | None = None,
        *,
        frac_bits: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> SecretTensor:
        """Secret-share ``value`` held by ``owner``; the other party passes ``None``.

        The non-owner's share is drawn from the randomness common to both parties
        and the owner keeps ``encode(value) - r``: no communication is needed, and
        the non-owner's share is independent of the value. Both parties must give
        the same ``shape`` (or both omit it, and the owner then sends it: one round).

        Parameters
        ----------
        value:
            The plaintext (owner only). Floats are encoded in fixed point.
        owner:
            Rank of the party holding the value.
        shape:
            The value's shape (needed by the non-owner).
        frac_bits:
            Fixed-point precision (default: the party's, 16); 0 shares integers exactly.
        dtype:
            Floating dtype returned by ``reveal`` (default ``torch.float64``, which
            holds every fixed-point value exactly; int64 when ``frac_bits=0``).
        """
        from veil.mpc.tensor import SecretTensor

        if owner not in (0, 1):
            raise ValueError(f"owner must be 0 or 1, got {owner}")
        if self.common_rng is None:
            raise RuntimeError("party is not set up (use veil.run)")
        f = self.frac_bits if frac_bits is None else ring.check_frac_bits(frac_bits)
        if dtype is None:
            dtype = torch.int64 if f == 0 else torch.float64
        mine = self.rank == owner
        if mine:
            if value is None:
                raise ValueError(f"party {self.rank} owns this input but passed value=None")
            enc = ring.encode(value, f, device=self.device)
            if shape is not None and tuple(enc.shape) != tuple(shape):
                raise ValueError(f"value has shape {tuple(enc.shape)} but shape={tuple(shape)}")
            if shape is None:
                self.peer.send({"shape": list(enc.shape)})
            shape = tuple(enc.shape)
        else:
            if value is not None:
                raise ValueError(f"party {self.rank} does not own this input (owner={owner}) "
                                 "and must pass value=None")
            if shape is None:
                msg = self.peer.recv()
                if not isinstance(msg, dict) or not isinstance(msg.get("shape"), list):
                    raise MaterialError("expected the input's shape from its owner")
                shape = tuple(int(s) for s in msg["shape"])
            shape = tuple(int(s) for s in shape)
        r = self.common_rng.integers(shape, device=self.device)
        share = enc - r if mine else r
        return SecretTensor(share, self, f, dtype)

    def from_share(self, share: torch.Tensor, frac_bits: int | None = None,
                   dtype: torch.dtype | None = None) -> SecretTensor:
        """Wrap a raw int64 share of this party as a :class:`SecretTensor`."""
        from veil.mpc.tensor import SecretTensor

        f = self.frac_bits if frac_bits is None else frac_bits
        if dtype is None:
            dtype = torch.int64 if f == 0 else torch.float64
        return SecretTensor(share.to(self.device), self, f, dtype)

    def constant(self, value: torch.Tensor | float | Sequence, frac_bits: int | None = None,
                 dtype: torch.dtype | None = None) -> SecretTensor:
        """A *public* value as a SecretTensor (party 0 holds it, party 1 holds zeros).

        Both parties must pass the same value; no communication.
        """
        f = self.frac_bits if frac_bits is None else ring.check_frac_bits(frac_bits)
        enc = ring.encode(value, f, device=self.device)
        share = enc if self.rank == 0 else torch.zeros_like(enc)
        return self.from_share(share, f, dtype)

    def zeros(self, shape: Sequence[int], frac_bits: int | None = None) -> SecretTensor:
        """A sharing of zeros (both shares zero: a public constant)."""
        return self.from_share(torch.zeros(tuple(shape), dtype=torch.int64, device=self.device),
                               frac_bits)

    # -- dealer material ---------------------------------------------------------
    def prefetch(self, plan: Iterable) -> None:
        """Fetch the material of ``plan`` from the dealer now (offline), to use later in order."""
        items = normalize_plan(plan)
        if not items:
            return
        t0 = time.perf_counter()
        materials = self._request(items)
        for (kind, params), m in zip(items, materials, strict=True):
            self._buffer.append((request_key(kind, params), self._finish(kind, params, m)))
        self._offline_s += time.perf_counter() - t0

    def preload(self, plan: Iterable) -> None:
        """Fetch all the material of ``plan`` now (the offline phase).

        Afterwards :meth:`material` must follow the plan exactly: a request that
        differs from the next planned item, or comes after the last one, raises.
        """
        items = normalize_plan(plan)
        t0 = time.perf_counter()
        mats = self._request(items) if items else []
        finished = [(k, p, self._finish(k, p, m)) for (k, p), m in zip(items, mats, strict=True)]
        self._store = MemoryStore(finished)
        self._offline_s += time.perf_counter() - t0

    def _request(self, items: list[tuple[str, dict]]) -> list:
        if self.dealer is None:
            raise MaterialError("no dealer is connected and no preprocessing store has "
                                f"material for {items[0][0]}")
        reply = self.dealer.exchange(request_message(items))
        if not isinstance(reply, dict) or reply.get("op") != "mat":
            msg = reply.get("msg") if isinstance(reply, dict) else None
            raise MaterialMismatchError(f"the dealer refused: {msg or 'malformed reply'}")
        mats = reply.get("items")
        if not isinstance(mats, list) or len(mats) != len(items):
            raise MaterialError("the dealer sent the wrong number of items")
        return mats

    def on_material(self, kind: str, hook: MaterialHook, **match: Any) -> None:
        """Run ``hook(params, material) -> material`` on each item of ``kind`` as it arrives.

        Only items whose parameters include ``match`` are concerned. Items arrive in
        the offline phase (prefetched, or read from a store), so a hook moves work
        that needs only the material and values this party already holds out of
        the online phase (e.g. :func:`veil.mpc.beaver.open_fixed`). Items already
        fetched when the hook is added are left as they are.
        """
        self._material_hooks.setdefault(kind, []).append((canonical_params(match), hook))

    def _finish(self, kind: str, params: dict, material: Any) -> dict:
        k = get_kind(kind)
        if not isinstance(material, dict):
            raise MaterialError(f"{kind} material is malformed")
        if k.expand is not None:
            material = k.expand(self.rank, material, **params)
        material = to_device(material, self.device)
        for match, hook in self._material_hooks.get(kind, ()):
            if all(params.get(name) == value for name, value in match.items()):
                material = hook(params, material)
        return material

    def material(self, kind: str, **params: Any) -> dict:
        """This party's half of one item of dealer material, consumed exactly once.

        Comes from the preprocessing store when there is one (it must be the
        next item, with the same parameters: otherwise a clear error), else from
        material prefetched with :meth:`prefetch`, else streamed from the dealer.
        """
        t0 = time.perf_counter()
        cparams = canonical_params(params)
        key = request_key(kind, cparams)
        try:
            if self._store is not None:
                m = self._store.take(kind, cparams)
                if isinstance(self._store, DiskStore):
                    m = self._finish(kind, cparams, m)
            elif self._buffer:
                k, m = self._buffer[0]
                if k != key:
                    raise MaterialMismatchError(
                        f"the next prefetched material is {k}, but the computation asked for "
                        f"{key}")
                self._buffer.popleft()
            else:
                m = self._finish(kind, cparams, self._request([(kind, cparams)])[0])
        finally:
            self._offline_s += time.perf_counter() - t0
        self._materials_used += 1
        return m

    # -- accounting --------------------------------------------------------------
    def reset_stats(self) -> None:
        """Zero the traffic counters and restart the online clock."""
        self.peer.counters.reset()
        if self.dealer is not None:
            self.dealer.counters.reset()
        self._offline_s = 0.0
        self._materials_used = 0
        self.start_online()

    def start_online(self) -> None:
        """Start the online clock (``veil.run`` does this just before the job)."""
        self._t_start = time.perf_counter()
        self._offline_at_start = self._offline_s

    def stats(self) -> dict[str, float]:
        """Measured traffic and times of this party.

        ``rounds``, ``bytes_sent``, ``bytes_received``, ``messages_*``: traffic with
        the peer (online), counted at the transport. ``offline_bytes_received``,
        ``offline_bytes_sent``: traffic with the dealer. ``online_s``: wall time since
        the job started, minus time spent obtaining material; ``offline_s``: time
        spent obtaining material (dealer, store, seed expansion), including any
        preprocessing before the job.
        """
        c = self.peer.counters
        d = self.dealer.counters if self.dealer is not None else None
        elapsed = time.perf_counter() - self._t_start
        return {
            "rank": self.rank,
            "rounds": c.rounds,
            "bytes_sent": c.bytes_sent,
            "bytes_received": c.bytes_received,
            "messages_sent": c.messages_sent,
            "messages_received": c.messages_received,
            "online_s": max(0.0, elapsed - (self._offline_s - self._offline_at_start)),
            "offline_s": self._offline_s,
            "offline_bytes_received": d.bytes_received if d else 0,
            "offline_bytes_sent": d.bytes_sent if d else 0,
            "offline_messages": (d.messages_received if d else 0),
            "materials_used": self._materials_used,
        }

    def barrier(self) -> None:
        """Wait until the peer reaches the same point (one round, a few bytes)."""
        self.peer.exchange(None)

    def __repr__(self) -> str:
        return f"Party(rank={self.rank}, device={self.device}, frac_bits={self.frac_bits})"


def _snapshot(obj: Any) -> Any:
    """A copy of every tensor in a message tree (other leaves are immutable or copied
    by the wire encoder)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_snapshot(v) for v in obj)
    return obj
