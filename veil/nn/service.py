"""Private inference across machines: a dealer service, a model-owner server, a data-owner client.

Three long-running roles, each on its own host, each with its own credentials
from ``veil keys init`` (:mod:`veil.comm.credentials`; every link is mutual
TLS 1.3 and each end checks the role named by the other's certificate):

- :class:`DealerService` (role ``dealer``) **listens**; it pairs the two
  parties of each inference session and serves that session's correlated
  randomness, generated on demand or taken from a preprocessed
  :class:`MaterialPool` (single-use);
- :class:`InferenceServer` (role ``party0``, the model owner) **listens** for
  clients and **connects to the dealer** once per client session;
- :class:`InferenceClient` / :func:`query` (role ``party1``, the data owner)
  **connects to the server and to the dealer**. It needs only the public
  architecture (never the weights).

Who connects to whom::

    data owner (client) ----> model owner (server, --listen)
           |                        |
           +-------> dealer <-------+   (dealer --listen)

A session: the client says hello with a digest of its public architecture;
the server checks it, draws a public session id and a secret pairing ticket,
joins the dealer with them and passes both to the client, which joins the
dealer too (the dealer pairs the two joins only when the tickets agree). The
server then shares its weights once (under reusable masks that this session's
dealer keeps, fresh per session), and the client sends any number of queries;
each query gets fresh dealer material and ends with the output revealed to the
client only. Each client session is its own 2PC session with its own dealer
session; a client that disappears ends only its session.

Example
-------
>>> import tempfile, torch
>>> from veil.comm.credentials import init_keys
>>> from veil.models import build
>>> keys = tempfile.mkdtemp(); _ = init_keys(keys)
>>> model = build("network1")
>>> with DealerService("127.0.0.1:0", keys) as dealer, \\
...      InferenceServer(model, (1, 28, 28), "127.0.0.1:0", dealer.address, keys) as server:
...     out, reports = query(server.address, dealer.address, build("network1"), (1, 28, 28),
...                          torch.randn(2, 1, 28, 28), keys)       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from veil.comm.credentials import Credentials, CredentialsError
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Link
from veil.comm.tcp import SocketChannel, listen, parse_address, tls_accept, tls_connect
from veil.csprng import CSPRNG
from veil.nn.graph import SecureGraph, convert
from veil.nn.report import InferenceReport
from veil.sharing.dealer import Dealer, _nbytes
from veil.sharing.errors import MaterialExhaustedError, StoreError
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import normalize_plan, request_key
from veil.sharing.store import DiskStore, generate_items, write_store

__all__ = [
    "DealerService",
    "InferenceClient",
    "InferenceServer",
    "MaterialPool",
    "ServiceError",
    "architecture_digest",
    "preprocess_pool",
    "query",
]

log = logging.getLogger("veil.service")

#: Roles of the credentials (``veil keys init``): model owner, data owner, dealer.
SERVER_ROLE, CLIENT_ROLE, DEALER_ROLE = "party0", "party1", "dealer"
_PROTOCOL = 1
_POOL_FORMAT = "veil-dealer-pool-1"


class ServiceError(CommError):
    """A service refused a request or a session failed; the message says why."""


Keys = str | os.PathLike | Credentials


def _credentials(keys: Keys, role: str) -> Credentials:
    """The credentials of ``role``: loaded (and checked) from a keys directory, or given."""
    if isinstance(keys, Credentials):
        if keys.role != role:
            raise CredentialsError(f"credentials of role {keys.role!r} given where the "
                                   f"{role} role is needed")
        keys.check()
        return keys
    return Credentials.load(keys, role)


#: torch.fx shape propagation is not thread-safe: clients built in several threads at once
#: failed with spurious shape errors.
_CONVERT_LOCK = threading.Lock()


def _convert(model: nn.Module, input_shape: Sequence[int]) -> SecureGraph:
    with _CONVERT_LOCK:
        return convert(model.eval(), tuple(input_shape))


def architecture_digest(graph: SecureGraph) -> str:
    """A digest of the public architecture (ops, wiring, shapes; never weights)."""
    return hashlib.sha256(repr(graph.public().signature()).encode()).hexdigest()


# --------------------------------------------------------------------------- TLS links

def _connect(address: str, creds: Credentials, expect: str, name: str, timeout: float,
             connect_timeout: float | None = None) -> SocketChannel:
    """A mutually authenticated channel to ``address``, whose certificate must name ``expect``."""
    return tls_connect(address, creds, expect, timeout=timeout, name=name,
                       connect_timeout=connect_timeout or min(timeout, 10.0))


def _peer_address(channel: SocketChannel) -> str:
    try:
        host, port = channel._sock.getpeername()[:2]
    except (AttributeError, OSError):
        return "an unknown address"
    return f"{host}:{port}"


#: Threads accepting connections at once: a peer stalling its TLS handshake (up to
#: HANDSHAKE_TIMEOUT) holds only one of them.
_ACCEPTORS = 4


class _Listener:
    """Accepts TLS connections from allowed roles; each is handled in its own thread.

    A connection that fails the handshake or presents a role that is not
    allowed is logged and dropped; the service goes on.
    """

    def __init__(self, address: str, creds: Credentials, allowed: dict[str, str],
                 handler: Callable[[SocketChannel, str], None], what: str,
                 timeout: float) -> None:
        self._sock = listen(address, backlog=64)
        self._creds = creds
        self._allowed = allowed  # role -> peer name
        self._handler = handler
        self._what = what
        self._timeout = timeout
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        host, port = self._sock.getsockname()[:2]
        self.address = f"{host}:{port}"

    def serve(self) -> None:
        acceptors = [threading.Thread(target=self._accept_loop, daemon=True,
                                      name=f"veil-{self._what}-accept") for _ in range(_ACCEPTORS)]
        for t in acceptors:
            t.start()
        for t in acceptors:
            t.join()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                # A far deadline: tls_accept gives the handshake what is left of it (up to
                # HANDSHAKE_TIMEOUT); close() wakes the blocked accept.
                channel = tls_accept(self._sock, self._creds, self._allowed.keys(),
                                     timeout=self._timeout, deadline=time.monotonic() + 3600,
                                     names=self._allowed)
            except PeerTimeoutError:
                continue
            except CredentialsError as exc:
                log.warning("%s: refused a connection: %s", self._what, exc)
                continue
            except OSError as exc:  # the listener was closed
                if self._stop.is_set():
                    return
                log.warning("%s: accept failed: %s", self._what, exc)
                continue
            t = threading.Thread(target=self._handle, args=(channel,), daemon=True,
                                 name=f"veil-{self._what}-conn")
            with self._lock:
                self._threads.add(t)
            t.start()

    def _handle(self, channel: SocketChannel) -> None:
        try:
            self._handler(channel, channel.peer_role)
        except Exception as exc:  # noqa: BLE001 - one connection never stops the service
            log.warning("%s: a connection from %s ended: %s: %s", self._what,
                        channel.peer_name, type(exc).__name__, exc)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked in accept
        except OSError:
            pass
        self._sock.close()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


class _Service:
    """Start/stop plumbing shared by the dealer service and the server."""

    _listener: _Listener
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The ``host:port`` actually listened on (port 0 picks a free one)."""
        return self._listener.address

    def start(self) -> _Service:
        """Serve in a background thread; returns ``self``."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name=f"veil-{type(self).__name__}")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        self._listener.serve()

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let running work end (up to ``grace_s``), close what remains."""
        self._listener.close()
        self._drain(grace_s)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(grace_s)

    def _drain(self, grace_s: float) -> None:
        self._listener.join(grace_s)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# --------------------------------------------------------------------------- the dealer

def _used_up(store: Path) -> bool:
    try:
        meta = json.loads((store / "store.json").read_text())
        return int((store / "consumed").read_text()) >= len(meta["items"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # DiskStore says what is wrong


class MaterialPool:
    """Dealer material preprocessed ahead of time, by request, each item served once.

    The pool holds items that do not depend on a session (FSS keys, fresh
    triples); items tied to a session's reusable weight masks are always
    generated on demand. Each distinct request ``(kind, params)`` has its own
    pair of on-disk stores (:class:`~veil.sharing.store.DiskStore`, one per
    party half), whose consumed counter is persisted before an item is read:
    a crash loses an item, never replays one.

    Taking an item from disk is durable and therefore slow (two fsyncs and a
    read per half), so a background thread reads ahead: it keeps up to
    ``readahead_bytes`` of items (already consumed on disk) in memory, and a
    request takes those first.
    """

    def __init__(self, path: str | os.PathLike, readahead_bytes: int = 512 << 20) -> None:
        self.path = Path(path)
        manifest = self.path / "pool.json"
        try:
            meta = json.loads(manifest.read_text())
        except FileNotFoundError:
            raise StoreError(f"{self.path} is not a dealer material pool (no pool.json); "
                             "create one with `veil dealer preprocess`") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"corrupt pool manifest {manifest}: {exc}") from None
        if meta.get("format") != _POOL_FORMAT:
            raise StoreError(f"{manifest}: unknown pool format {meta.get('format')!r}")
        self._stores: dict[str, tuple[DiskStore, DiskStore]] = {}
        self._ready: dict[str, deque] = {}
        self._kinds: dict[str, tuple[str, dict]] = {}
        self._disk = threading.Lock()  # DiskStore takes, one at a time
        self._cond = threading.Condition()
        self._ready_bytes = 0
        self.readahead_bytes = int(readahead_bytes)
        self._closed = False
        try:
            for entry in meta["entries"]:
                d = self.path / entry["dir"]
                if _used_up(d / "party0"):
                    continue  # the ledger refuses to reopen a store consumed entirely
                key = entry["key"]
                self._stores[key] = (DiskStore(d / "party0"), DiskStore(d / "party1"))
                self._ready[key] = deque()
                self._kinds[key] = tuple(json.loads(key))
        except BaseException:
            self.close()
            raise
        self._exhausted: set[str] = set()
        self._reader = threading.Thread(target=self._read_ahead, daemon=True,
                                        name="veil-pool-readahead")
        self._reader.start()

    def _take_disk(self, key: str) -> tuple[Any, Any] | None:
        kind, params = self._kinds[key]
        s0, s1 = self._stores[key]
        with self._disk:
            if s0.remaining == 0 or self._closed:
                return None
            try:
                return s0.take(kind, params), s1.take(kind, params)
            except MaterialExhaustedError:
                return None

    def _read_ahead(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._ready_bytes >= self.readahead_bytes or all(
                        s[0].remaining == 0 for s in self._stores.values())):
                    self._cond.wait(1.0)
                if self._closed:
                    return
                # the request with the fewest items in memory next (round robin by need)
                key = min((k for k, s in self._stores.items() if s[0].remaining),
                          key=lambda k: len(self._ready[k]))
            try:
                item = self._take_disk(key)
            except Exception as exc:  # noqa: BLE001 - requests then read from disk themselves
                log.warning("dealer: pool read-ahead stopped: %s", exc)
                return
            if item is None:
                continue
            with self._cond:
                self._ready[key].append(item)
                self._ready_bytes += _nbytes(item)

    def take(self, kind: str, params: dict) -> tuple[Any, Any] | None:
        """Both halves of the next pooled item for this request, or ``None`` when none is left."""
        key = request_key(kind, params)
        if key not in self._stores:
            return None
        with self._cond:
            if self._ready[key]:
                item = self._ready[key].popleft()
                self._ready_bytes -= _nbytes(item)
                self._cond.notify_all()
                return item
        item = self._take_disk(key)
        if item is None and key not in self._exhausted:
            self._exhausted.add(key)
            log.warning("dealer: the preprocessed pool has no %s left; generating on demand",
                        kind)
        return item

    def remaining(self) -> dict[str, int]:
        """Items left per request, in memory and on disk (public: kinds and shapes only)."""
        with self._cond:
            return {key: s[0].remaining + len(self._ready[key])
                    for key, s in self._stores.items()}

    def close(self) -> None:
        """Stop reading ahead; items read ahead and not served are lost, never replayed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for ready in self._ready.values():
                ready.clear()
        with self._disk:
            for s0, s1 in self._stores.values():
                s0.close()
                s1.close()


def preprocess_pool(graph: SecureGraph, batch: int, queries: int, path: str | os.PathLike,
                    *, argmax: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Preprocess the session-independent material of ``queries`` queries of ``batch`` inputs.

    Writes a :class:`MaterialPool` at ``path`` for a :class:`DealerService`
    (``store=path``). Pools for several models or batch sizes may be made in
    separate directories; a dealer serves one.

    Example
    -------
    >>> import tempfile
    >>> from veil.models import build
    >>> from veil.nn import convert
    >>> g = convert(build("network1"), (1, 28, 28))
    >>> preprocess_pool(g, 1, 2, tempfile.mkdtemp() + "/pool")["items"]
    4
    """
    from veil.nn.secure import material_plan

    if batch < 1 or queries < 1:
        raise ValueError("batch and queries must be at least 1")
    path = Path(path)
    if (path / "pool.json").exists():
        if not overwrite:
            raise StoreError(f"{path} already holds a pool; refusing to overwrite it")
        import shutil

        shutil.rmtree(path)
    if argmax:
        graph = graph.with_argmax()
    # A placeholder session: items naming a mask id are tied to a real session and skipped.
    plan = [(k, p) for k, p in normalize_plan(material_plan(graph, batch, "pool"))
            if "mask_id" not in p]
    counts: dict[str, list] = {}
    for kind, params in plan:
        counts.setdefault(request_key(kind, params), [kind, params, 0])[2] += queries
    path.mkdir(parents=True, exist_ok=True)
    entries, t0, total_bytes, items = [], time.perf_counter(), 0, 0
    for i, (key, (kind, params, n)) in enumerate(counts.items()):
        halves = generate_items([(kind, params)] * n, CSPRNG(), MaskKeyring())
        store_id = secrets.token_hex(16)
        d = path / f"{i:04d}"
        total_bytes += write_store(d / "party0", 0, halves[0], store_id, overwrite=True)
        total_bytes += write_store(d / "party1", 1, halves[1], store_id, overwrite=True)
        entries.append({"key": key, "dir": d.name, "kind": kind, "count": n})
        items += n
    manifest = {"format": _POOL_FORMAT, "batch": batch, "queries": queries, "entries": entries}
    tmp = path / ".pool.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path / "pool.json")
    return {"items": items, "bytes": total_bytes, "seconds": time.perf_counter() - t0,
            "kinds": len(entries)}


class _PooledDealer(Dealer):
    def __init__(self, links, pool: MaterialPool | None) -> None:
        super().__init__(links, CSPRNG(), MaskKeyring())  # fresh masks for every session
        self.pool = pool
        self.pooled = 0

    def generate(self, kind: str, params: dict, module: str | None = None) -> tuple[Any, Any]:
        if self.pool is not None and "mask_id" not in params:
            got = self.pool.take(kind, params)
            if got is not None:
                self.pooled += 1
                return got
        return super().generate(kind, params, module)


class _Pairing:
    def __init__(self, ticket: bytes, link: Link) -> None:
        self.ticket = ticket
        self.server = link
        self.client: Link | None = None
        self.joined = threading.Event()


class DealerService(_Service):
    """The dealer as a service: it listens, pairs each session's two parties, serves material.

    Parameters
    ----------
    listen: ``host:port`` to listen on (port 0: any free port, see :attr:`address`).
    keys: the keys directory (or :class:`~veil.comm.credentials.Credentials` of role
        ``dealer``); refuses to start without valid ones.
    store: a :class:`MaterialPool` directory (:func:`preprocess_pool`); requests it holds
        are served from it, each item once; the rest is generated on demand.
    idle_timeout: seconds a session may wait between two requests (a client thinking
        between queries) before the dealer ends it.
    pair_timeout: seconds the model owner's join waits for the data owner's.
    """

    def __init__(self, listen: str, keys: Keys, *, store: str | os.PathLike | None = None,
                 idle_timeout: float = 900.0, pair_timeout: float = 30.0) -> None:
        self.creds = _credentials(keys, DEALER_ROLE)
        self.pool = MaterialPool(store) if store is not None else None
        self.idle_timeout = float(idle_timeout)
        self.pair_timeout = float(pair_timeout)
        self._pending: dict[str, _Pairing] = {}
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[Link, Link]] = {}
        #: Finished sessions' statistics (public: counts, sizes, times).
        self.history: list[dict[str, Any]] = []
        self._listener = _Listener(listen, self.creds,
                                   {SERVER_ROLE: "the model owner", CLIENT_ROLE: "the data owner"},
                                   self._handle, "dealer", self.idle_timeout)
        log.info("dealer: listening on %s%s", self.address,
                 f" (preprocessed pool {store})" if store is not None else "")

    def _handle(self, channel: SocketChannel, role: str) -> None:
        peer = _peer_address(channel)
        # The socket's timeout is the idle timeout: parties compute, and think, between
        # requests; pairing is bounded by pair_timeout below.
        link = Link(channel, self.idle_timeout)
        try:
            msg = link.recv()
            if not isinstance(msg, dict) or msg.get("op") != "join" or \
                    not isinstance(msg.get("session"), str) or \
                    not isinstance(msg.get("ticket"), bytes):
                raise ServiceError("expected a join message")
            session, ticket = msg["session"], msg["ticket"]
            if role == SERVER_ROLE:
                pairing = _Pairing(ticket, link)
                with self._lock:
                    if session in self._pending or session in self._sessions:
                        raise ServiceError(f"session {session} already exists")
                    self._pending[session] = pairing
                link.send({"op": "joined"})
                if not pairing.joined.wait(self.pair_timeout):
                    with self._lock:
                        self._pending.pop(session, None)
                    raise ServiceError(f"the data owner of session {session} did not join "
                                       f"within {self.pair_timeout:g} s")
                return  # the data owner's thread runs the session
            with self._lock:
                pairing = self._pending.get(session)
                if pairing is None or not hmac.compare_digest(pairing.ticket, ticket):
                    pairing = None
                else:
                    del self._pending[session]
            if pairing is None:
                raise ServiceError("no session waits for this data owner (unknown session or "
                                   "wrong ticket)")
            link.send({"op": "joined"})
            pairing.client = link
            pairing.joined.set()
            self._run_session(session, pairing.server, link, peer)
        except BaseException as exc:
            link.close(f"refused: {exc}" if isinstance(exc, ServiceError) else
                       f"failed: {type(exc).__name__}: {exc}")
            raise

    def _run_session(self, session: str, server: Link, client: Link, peer: str) -> None:
        dealer = _PooledDealer({0: server, 1: client}, self.pool)
        with self._lock:
            self._sessions[session] = (server, client)
        log.info("dealer: session %s opened (data owner at %s)", session, peer)
        t0 = time.perf_counter()
        exc: BaseException | None = None
        try:
            stats = dealer.serve()
        except BaseException as e:
            exc = e
            stats = dealer.stats()
            log.warning("dealer: session %s ended: %s: %s", session, type(e).__name__, e)
        finally:
            with self._lock:
                self._sessions.pop(session, None)
            for link in (server, client):
                try:
                    link.close(None if exc is None else f"failed: the dealer's session ended "
                                                        f"({type(exc).__name__})")
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
        record = {"session": session, "seconds": time.perf_counter() - t0,
                  "items": stats["items"], "pooled": dealer.pooled,
                  "generate_s": stats["generate_s"],
                  "bytes_sent": stats["bytes_sent_party0"] + stats["bytes_sent_party1"],
                  "ok": exc is None}
        self.history.append(record)
        if exc is None:
            log.info("dealer: session %s closed: %d items (%d preprocessed), %.1f MB sent, "
                     "%.3f s generating", session, record["items"], record["pooled"],
                     record["bytes_sent"] / 1e6, record["generate_s"])

    def _drain(self, grace_s: float) -> None:
        settle = time.monotonic() + min(grace_s, 0.5)  # sessions saying goodbye right now
        while self._sessions and time.monotonic() < settle:
            time.sleep(0.02)
        with self._lock:
            links = [link for pair in self._sessions.values() for link in pair]
        for link in links:
            try:
                link.close("failed: the dealer is shutting down")
            except Exception:  # noqa: BLE001
                pass
        super()._drain(grace_s)
        if self.pool is not None:
            self.pool.close()
        log.info("dealer: shut down")


# --------------------------------------------------------------------------- the parties

def _query_step(party, shared, graph: SecureGraph, batch: int, x: torch.Tensor | None,
                session: str, prefetch: bool) -> tuple[torch.Tensor | None, dict]:
    """One query, SPMD in both parties: fresh material, the data owner's batch, the output
    revealed to the data owner only."""
    from veil.nn.secure import DATA_OWNER, material_plan, secure_forward

    sa = party.stats()
    if prefetch:
        party.prefetch(material_plan(graph, batch, session))
    sb = party.stats()
    xs = party.share(x if party.rank == DATA_OWNER else None, owner=DATA_OWNER,
                     shape=(batch, *graph.input_shape))
    y = secure_forward(party, replace(shared, graph=graph), xs).reveal(to=DATA_OWNER)
    sc = party.stats()
    return y, {
        "offline_s": sc["offline_s"] - sa["offline_s"],
        "offline_bytes": sc["offline_bytes_received"] - sa["offline_bytes_received"],
        "online_s": sc["online_s"] - sb["online_s"],
        "bytes_sent": sc["bytes_sent"] - sb["bytes_sent"],
        "bytes_received": sc["bytes_received"] - sb["bytes_received"],
        "rounds": sc["rounds"] - sb["rounds"],
    }


class _Session:
    def __init__(self, sid: str, peer: Link, dealer: Link | None, addr: str) -> None:
        self.sid = sid
        self.peer = peer
        self.dealer = dealer
        self.addr = addr
        self.busy = False


class InferenceServer(_Service):
    """The model owner's service: answers private queries on its model, any number of clients.

    Parameters
    ----------
    model: the model with its weights (an ``nn.Module``, converted with
        :func:`veil.nn.convert`, or a converted :class:`~veil.nn.graph.SecureGraph`).
    input_shape: per-sample input shape (for an ``nn.Module``), e.g. ``(1, 28, 28)``.
    listen: ``host:port`` for clients.
    dealer: ``host:port`` of the :class:`DealerService`.
    keys: keys directory (or credentials of role ``party0``).
    timeout: seconds to wait for the dealer during a query or a session's set-up.
    idle_timeout: seconds a session may stay idle between queries; also how long a client
        that stops answering mid-query holds its own session (never the others).
    max_sessions: clients served at the same time (more are refused with a clear error).
    max_batch: largest batch a query may send.
    labels_only: answer only argmax labels, never logits.
    """

    def __init__(self, model: nn.Module | SecureGraph, input_shape: Sequence[int] | None,
                 listen: str, dealer: str, keys: Keys, *, timeout: float = 60.0,
                 idle_timeout: float = 600.0, max_sessions: int = 8, max_batch: int = 256,
                 labels_only: bool = False) -> None:
        self.creds = _credentials(keys, SERVER_ROLE)
        if isinstance(model, SecureGraph):
            self.graph = model
        else:
            if input_shape is None:
                raise ValueError("input_shape is needed to convert an nn.Module")
            self.graph = _convert(model, input_shape)
        self.digest = architecture_digest(self.graph)
        self.dealer = dealer
        parse_address(dealer)
        self.timeout = float(timeout)
        self.idle_timeout = float(idle_timeout)
        self.max_sessions = int(max_sessions)
        self.max_batch = int(max_batch)
        self.labels_only = bool(labels_only)
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: One record per answered query (public figures: sizes, times, bytes, rounds).
        self.history: list[dict[str, Any]] = []
        self._listener = _Listener(listen, self.creds, {CLIENT_ROLE: "the data owner"},
                                   self._handle, "server", self.idle_timeout)
        log.info("server: listening on %s, dealer at %s, model %s", self.address, dealer,
                 self.digest[:12])

    def _handle(self, channel: SocketChannel, role: str) -> None:
        addr = _peer_address(channel)
        # The client's socket waits up to idle_timeout (between queries, and for a client
        # that hangs mid-query: only its session waits). The client itself, and the
        # server's link to the dealer, fail after `timeout`.
        peer = Link(channel, self.idle_timeout)
        hello = peer.recv()
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            peer.close("refused: expected a hello")
            return
        if hello.get("version") != _PROTOCOL:
            return self._refuse(peer, f"protocol version {hello.get('version')} is not "
                                      f"supported (this server speaks {_PROTOCOL})")
        if hello.get("arch") != self.digest:
            return self._refuse(peer, "the client's architecture differs from the served model "
                                      "(same model class, input shape and Veil version needed)")
        if self._stopping.is_set():
            return self._refuse(peer, "the server is shutting down")
        sid = secrets.token_hex(8)
        session = _Session(sid, peer, None, addr)
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                session = None
            else:
                self._sessions[sid] = session
        if session is None:
            return self._refuse(peer, f"the server is busy ({self.max_sessions} sessions)")
        try:
            self._run(session)
        finally:
            with self._lock:
                self._sessions.pop(sid, None)

    def _refuse(self, peer: Link, msg: str) -> None:
        log.warning("server: refused a client: %s", msg)
        try:
            peer.send({"op": "error", "msg": msg})
            peer.channel.flush()
        finally:
            peer.close()

    def _run(self, s: _Session) -> None:
        from veil.mpc.party import Party
        from veil.nn.secure import MODEL_OWNER, share_weights

        ticket = os.urandom(16)
        try:
            # a dead dealer must be reported to the waiting client well within its timeout
            channel = _connect(self.dealer, self.creds, DEALER_ROLE, "the dealer",
                               self.timeout, connect_timeout=min(self.timeout, 2.0))
            s.dealer = Link(channel, self.timeout)
            s.dealer.send({"op": "join", "session": s.sid, "ticket": ticket})
            ack = s.dealer.recv()
            if not isinstance(ack, dict) or ack.get("op") != "joined":
                raise ServiceError("the dealer did not accept the session")
        except CommError as exc:
            if s.dealer is not None:
                s.dealer.close()
            return self._refuse(s.peer, f"the server cannot use the dealer at {self.dealer}: "
                                        f"{exc}")
        peer, dealer = s.peer, s.dealer
        exc: BaseException | None = None
        queries = 0
        try:
            peer.send({"op": "welcome", "session": s.sid, "ticket": ticket,
                       "max_batch": self.max_batch, "labels_only": self.labels_only})
            party = Party(MODEL_OWNER, peer, dealer)
            party.setup()
            t0 = time.perf_counter()
            shared = share_weights(party, self.graph, owner=MODEL_OWNER, session=s.sid)
            st = party.stats()
            log.info("server: session %s opened for %s: weights shared in %.3f s "
                     "(%d bytes, %d rounds)", s.sid, s.addr, time.perf_counter() - t0,
                     st["bytes_sent"] + st["bytes_received"], st["rounds"])
            graphs = {False: self.graph, True: None}
            while True:
                msg = peer.recv()
                if not isinstance(msg, dict) or msg.get("op") not in ("query", "close"):
                    raise ServiceError("the client sent a malformed request")
                if msg["op"] == "close":
                    break
                batch, argmax = msg.get("batch"), bool(msg.get("argmax"))
                if not isinstance(batch, int) or not 1 <= batch <= self.max_batch:
                    raise ServiceError(f"batch size must be 1..{self.max_batch}, got {batch!r}")
                if self.labels_only and not argmax:
                    raise ServiceError("this server answers labels only (argmax)")
                if graphs[argmax] is None:
                    graphs[argmax] = self.graph.with_argmax()
                s.busy = True
                t1 = time.perf_counter()
                _, stats = _query_step(party, shared, graphs[argmax], batch, None, s.sid,
                                       bool(msg.get("prefetch", True)))
                seconds = time.perf_counter() - t1
                peer.send({"op": "stats", "offline_s": stats["offline_s"],
                           "offline_bytes": stats["offline_bytes"],
                           "online_s": stats["online_s"]})
                s.busy = False
                queries += 1
                record = {"session": s.sid, "query": queries, "batch": batch, "argmax": argmax,
                          "seconds": seconds, **stats}
                self.history.append(record)
                log.info("server: session %s query %d: batch %d%s in %.3f s (online %.3f s, "
                         "offline %.3f s), %d bytes online, %d rounds, %d bytes of dealer "
                         "material", s.sid, queries, batch, " (labels)" if argmax else "",
                         seconds, stats["online_s"], stats["offline_s"],
                         stats["bytes_sent"] + stats["bytes_received"], stats["rounds"],
                         stats["offline_bytes"])
                if self._stopping.is_set():
                    raise ServiceError("the server is shutting down")
            dealer.send({"op": "done"})
            dealer.channel.flush()
            peer.channel.flush()
            log.info("server: session %s closed after %d queries", s.sid, queries)
        except BaseException as e:
            exc = e
            what = "during a query" if s.busy else "between queries"
            if isinstance(e, PeerDisconnectedError | PeerTimeoutError):
                log.warning("server: session %s ended %s after %d queries: %s", s.sid, what,
                            queries, e)
            else:
                log.warning("server: session %s ended %s after %d queries: %s: %s", s.sid,
                            what, queries, type(e).__name__, e)
        finally:
            reason = None if exc is None else (
                f"failed: {exc}" if isinstance(exc, ServiceError)
                else f"failed: the model owner's session ended ({type(exc).__name__})")
            for link in (peer, dealer):
                try:
                    link.close(reason)
                except Exception:  # noqa: BLE001
                    pass

    def sessions(self) -> int:
        """Client sessions open right now."""
        with self._lock:
            return len(self._sessions)

    def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting clients; idle sessions close now, busy ones after their query."""
        self._stopping.set()
        self._listener.close()
        deadline = time.monotonic() + grace_s
        # a client that just said goodbye may still be in flight: a moment for it to arrive
        settle = time.monotonic() + min(grace_s, 0.5)
        while self.sessions() and time.monotonic() < settle:
            time.sleep(0.02)
        while time.monotonic() < deadline:
            with self._lock:
                busy = [s for s in self._sessions.values() if s.busy]
                idle = [s for s in self._sessions.values() if not s.busy]
            for s in idle:
                try:
                    s.peer.close("failed: the server is shutting down")
                except Exception:  # noqa: BLE001
                    pass
            if not busy:
                break
            time.sleep(0.05)
        with self._lock:
            rest = list(self._sessions.values())
        for s in rest:
            try:
                s.peer.close("failed: the server is shutting down")
            except Exception:  # noqa: BLE001
                pass
        self._listener.join(max(0.0, deadline - time.monotonic()) + 1.0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        log.info("server: shut down")


def _auto_prefetch(graph: SecureGraph, batch: int, session: str) -> bool:
    from veil.nn.inference import estimate_material_bytes, prefetch_limit_bytes
    from veil.nn.secure import material_plan

    return estimate_material_bytes(material_plan(graph, batch, session)) <= \
        prefetch_limit_bytes()


class InferenceClient:
    """The data owner's side of a session with an :class:`InferenceServer`.

    Needs only the public architecture: the same model class (its weights are
    never used) and input shape as the server's model.

    Parameters
    ----------
    server, dealer: ``host:port`` of the model owner's server and of the dealer.
    model: the architecture (an ``nn.Module`` whose weights are ignored) or a
        :class:`~veil.nn.graph.SecureGraph` (made public here).
    input_shape: per-sample input shape, for an ``nn.Module``.
    keys: keys directory (or credentials of role ``party1``).
    timeout: seconds to wait for any message before failing (a dead server or dealer).
    offline: ``"prefetch"`` (fetch a query's material before its online phase),
        ``"stream"`` or ``"auto"`` (prefetch below ``$VEIL_PREFETCH_LIMIT_MB``).

    Example
    -------
    >>> with InferenceClient(srv, dlr, arch, (1, 28, 28), keys) as c:   # doctest: +SKIP
    ...     logits, report = c.query(torch.randn(1, 1, 28, 28))
    """

    def __init__(self, server: str, dealer: str, model: nn.Module | SecureGraph,
                 input_shape: Sequence[int] | None, keys: Keys, *, timeout: float = 60.0,
                 offline: str = "auto") -> None:
        self.creds = _credentials(keys, CLIENT_ROLE)
        if isinstance(model, SecureGraph):
            graph = model
        else:
            if input_shape is None:
                raise ValueError("input_shape is needed to convert an nn.Module")
            graph = _convert(model, input_shape)
        if offline not in ("auto", "prefetch", "stream"):
            raise ValueError(f"offline must be 'auto', 'prefetch' or 'stream', got {offline!r}")
        self.graph = graph.public()
        self.server, self.dealer = server, dealer
        self.timeout = float(timeout)
        self.offline = offline
        self.session: str | None = None
        self._party = None
        self._shared = None
        self._graphs: dict[bool, SecureGraph] = {False: self.graph}
        self.queries = 0

    def open(self) -> InferenceClient:
        """Open the session: authenticate, join the dealer, receive the shared weights."""
        from veil.mpc.party import Party
        from veil.nn.secure import DATA_OWNER, share_weights

        peer = Link(_connect(self.server, self.creds, SERVER_ROLE, "the model owner",
                             self.timeout), self.timeout)
        dealer = None
        try:
            peer.send({"op": "hello", "version": _PROTOCOL,
                       "arch": architecture_digest(self.graph)})
            welcome = peer.recv()
            if not isinstance(welcome, dict) or welcome.get("op") != "welcome":
                msg = welcome.get("msg") if isinstance(welcome, dict) else None
                raise ServiceError(f"the server refused the session: {msg or 'bad reply'}")
            self.session = str(welcome["session"])
            self.max_batch = int(welcome["max_batch"])
            self.labels_only = bool(welcome["labels_only"])
            dealer = Link(_connect(self.dealer, self.creds, DEALER_ROLE, "the dealer",
                                   self.timeout), self.timeout)
            dealer.send({"op": "join", "session": self.session, "ticket": welcome["ticket"]})
            ack = dealer.recv()
            if not isinstance(ack, dict) or ack.get("op") != "joined":
                raise ServiceError("the dealer did not accept the session")
            party = Party(DATA_OWNER, peer, dealer)
            party.setup()
            t0 = time.perf_counter()
            self._shared = share_weights(party, self.graph, owner=0, session=self.session)
            st = party.stats()
            self._setup = {"setup_s": time.perf_counter() - t0,
                           "setup_bytes": int(st["bytes_sent"] + st["bytes_received"]),
                           "setup_rounds": int(st["rounds"])}
            self._party = party
        except BaseException as exc:
            for link in (peer, dealer):
                if link is not None:
                    link.close(f"failed: {type(exc).__name__}")
            raise
        return self

    def query(self, x: torch.Tensor, *, argmax: bool = False
              ) -> tuple[torch.Tensor, InferenceReport]:
        """The model's output on the batch ``x`` (labels as one-hot with ``argmax``)."""
        if self._party is None:
            raise RuntimeError("the session is not open (use open() or a with block)")
        self.graph.check_input(x)
        batch = int(x.shape[0])
        if batch > self.max_batch:
            raise ValueError(f"the server accepts batches of at most {self.max_batch}; split "
                             "the input")
        if self.labels_only and not argmax:
            raise ValueError("this server answers labels only: query with argmax=True")
        if argmax not in self._graphs:
            self._graphs[argmax] = self.graph.with_argmax()
        graph = self._graphs[argmax]
        prefetch = self.offline == "prefetch" or (
            self.offline == "auto" and _auto_prefetch(graph, batch, self.session))
        party = self._party
        t0 = time.perf_counter()
        try:
            party.peer.send({"op": "query", "batch": batch, "argmax": bool(argmax),
                             "prefetch": prefetch})
            y, mine = _query_step(party, self._shared, graph, batch, x.detach().double().cpu(),
                                  self.session, prefetch)
            theirs = party.peer.recv()
        except BaseException:
            self._abandon()
            raise
        latency = time.perf_counter() - t0
        if not isinstance(theirs, dict) or theirs.get("op") != "stats":
            self._abandon()
            raise ServiceError("the server sent a malformed reply")
        self.queries += 1
        report = InferenceReport(
            batch_size=batch, transport="tcp", **self._setup,
            offline_s=max(mine["offline_s"], float(theirs["offline_s"])),
            offline_bytes=int(mine["offline_bytes"] + int(theirs["offline_bytes"])),
            online_s=max(mine["online_s"], float(theirs["online_s"])),
            online_bytes=int(mine["bytes_sent"] + mine["bytes_received"]),
            online_rounds=int(mine["rounds"]),
            extra={"latency_s": latency, "session": self.session, "query": self.queries,
                   "offline_mode": "prefetch" if prefetch else "stream"})
        return y, report

    def _abandon(self) -> None:
        party, self._party = self._party, None
        if party is not None:
            for link in (party.peer, party.dealer):
                try:
                    link.close("failed: the data owner abandoned the session")
                except Exception:  # noqa: BLE001
                    pass

    def close(self) -> None:
        """End the session (the server and the dealer free it)."""
        party, self._party = self._party, None
        if party is None:
            return
        try:
            party.peer.send({"op": "close"})
            party.dealer.send({"op": "done"})
            party.peer.channel.flush()
            party.dealer.channel.flush()
        except CommError:
            pass
        finally:
            party.peer.close()
            party.dealer.close()

    def __enter__(self) -> InferenceClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def query(server: str, dealer: str, model: nn.Module | SecureGraph,
          input_shape: Sequence[int] | None, images: torch.Tensor, keys: Keys, *,
          argmax: bool = False, batch_size: int | None = None, timeout: float = 60.0,
          offline: str = "auto") -> tuple[torch.Tensor, list[InferenceReport]]:
    """Run ``images`` through the server's model privately, in one session.

    Parameters
    ----------
    server, dealer: ``host:port`` of the :class:`InferenceServer` and the :class:`DealerService`.
    model, input_shape: the public architecture (see :class:`InferenceClient`).
    images: float tensor ``(n, *input_shape)``.
    keys: keys directory (or credentials of role ``party1``).
    argmax: one-hot labels instead of logits.
    batch_size: images per query (default: all at once, up to the server's limit).

    Returns
    -------
    outputs: ``(n, classes)`` float64 (logits, or one-hot labels with ``argmax``).
    reports: one :class:`~veil.nn.report.InferenceReport` per query.
    """
    with InferenceClient(server, dealer, model, input_shape, keys, timeout=timeout,
                         offline=offline) as client:
        step = min(batch_size or len(images), client.max_batch)
        if step < 1:
            raise ValueError("no images to query")
        outs, reports = [], []
        for i in range(0, len(images), step):
            y, report = client.query(images[i:i + step], argmax=argmax)
            outs.append(y)
            reports.append(report)
    return torch.cat(outs), reports
