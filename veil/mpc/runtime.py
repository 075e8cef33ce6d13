"""``veil.run``: run an SPMD job in two computing parties plus a dealer.

Three ways to run the same job:

- ``transport="local"`` (default): the two parties and the dealer are threads
  of this process, talking through in-memory queues (same wire format and
  byte counts as TCP).
- ``transport="tcp"`` (launcher): this process starts three local processes
  (party 0, party 1, dealer) that talk TCP on loopback, and collects the
  parties' results. The job must be picklable (a module-level function).
- ``transport="tcp", rank=r, addresses=[a0, a1, a2], credentials=KEYS``: this
  process *is* participant ``r`` (2 is the dealer) of a run spread over
  machines; start the same program on each machine with its rank and its
  role's credentials (``veil keys init``; every link is mutual TLS 1.3, see
  docs/security.md). Or use the entry point:
  ``python -m veil.mpc.runtime dealer --keys DIR --addresses h0:p0,h1:p1,h2:p2`` and
  ``python -m veil.mpc.runtime party --rank 0 --keys DIR --job pkg.mod:job --addresses ...``.
  Parties 0 and 1 listen on their addresses; the dealer only connects (its
  address is unused).

A party that fails closes its connections with the reason, so the others fail
at once with a clear :class:`PartyFailedError`; a peer that stops answering
is caught by ``timeout`` (seconds without a message). Never a hang.

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.ones(2, 2) if party.rank == 0 else None, owner=0, shape=(2, 2))
...     return (x * 3).reveal()
>>> veil.run(job)                           # doctest: +SKIP
[tensor([[3., 3.], [3., 3.]]), tensor([[3., 3.], [3., 3.]])]
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from veil import ring
from veil.comm.credentials import ROLES, Credentials, CredentialsError, ephemeral
from veil.comm.errors import PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Link
from veil.comm.local import channel_pair
from veil.csprng import CSPRNG
from veil.mpc.party import Party
from veil.sharing.dealer import Dealer
from veil.sharing.material import registered_modules
from veil.sharing.store import open_store

NAMES = ("party 0", "party 1", "the dealer")
DEALER = 2

Job = Callable[..., Any]


class PartyFailedError(RuntimeError):
    """A participant of a run failed; ``rank`` says which, the message says why."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"{NAMES[rank]} failed: {message}")
        self.rank = rank


def _is_secondary(exc: BaseException) -> bool:
    # Errors caused by another participant's failure (it closed the connection).
    return isinstance(exc, PeerDisconnectedError)


def _failure_reason(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# One participant, given its links (shared by every transport)
# ---------------------------------------------------------------------------------------------
def _party_main(rank: int, peer: Link, dealer: Link | None, job: Job, args: tuple,
                kwargs: dict, options: dict) -> Any:
    store = open_store(options["store"], rank) if options.get("store") else None
    party = Party(rank, peer, dealer, device=options.get("device"),
                  frac_bits=options.get("frac_bits", ring.DEFAULT_FRAC_BITS), store=store)
    try:
        party.setup()
        if options.get("plan") is not None:
            party.preload(options["plan"])
        party.start_online()
        result = job(party, *args, **kwargs)
        if dealer is not None:
            dealer.send({"op": "done"})
            dealer.channel.flush()
        peer.channel.flush()
        return result
    finally:
        if store is not None:
            store.close()


def _dealer_main(links: dict[int, Link]) -> dict[str, float]:
    return Dealer(links, CSPRNG()).serve()


def _close_all(links: Iterable[Link], exc: BaseException | None) -> None:
    reason = None if exc is None else _failure_reason(exc)
    for link in links:
        try:
            link.close(reason)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


# ---------------------------------------------------------------------------------------------
# Local transport: threads
# ---------------------------------------------------------------------------------------------
def _run_local(job: Job, args: dict[int, tuple], kwargs: dict, options: dict,
               timeout: float) -> list:
    p01, p10 = channel_pair(NAMES[0], NAMES[1])
    p0d, dp0 = channel_pair(NAMES[0], NAMES[2])
    p1d, dp1 = channel_pair(NAMES[1], NAMES[2])
    dealer_timeout = options["dealer_timeout"]
    links = {
        0: [Link(p01, timeout), Link(p0d, timeout)],
        1: [Link(p10, timeout), Link(p1d, timeout)],
        2: [Link(dp0, dealer_timeout), Link(dp1, dealer_timeout)],
    }
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}
    order: list[int] = []
    lock = threading.Lock()

    def target(rank: int) -> None:
        exc: BaseException | None = None
        try:
            if rank == DEALER:
                results[rank] = _dealer_main({0: links[2][0], 1: links[2][1]})
            else:
                results[rank] = _party_main(rank, links[rank][0], links[rank][1], job,
                                            args[rank], kwargs, options)
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            exc = e
            with lock:
                errors[rank] = e
                order.append(rank)
        finally:
            _close_all(links[rank], exc)

    threads = [threading.Thread(target=target, args=(r,), daemon=True, name=f"veil-{NAMES[r]}")
               for r in (0, 1, 2)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join()
    threads[2].join(timeout=timeout)
    if errors:
        _raise_first(errors, order)
    return [results[0], results[1]]


def _raise_first(errors: dict[int, BaseException], order: list[int]) -> None:
    primary = [r for r in order if not _is_secondary(errors[r])]
    rank = primary[0] if primary else order[0]
    exc = errors[rank]
    raise PartyFailedError(rank, f"{type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# TCP transport
# ---------------------------------------------------------------------------------------------
def _tcp_participant(rank: int, addresses: Sequence[str], job: Job | None, args: tuple,
                     kwargs: dict, options: dict, timeout: float, session: bytes,
                     credentials: Credentials, listener=None) -> Any:
    from veil.comm.tcp import connect_mesh

    for module in options.get("modules", ()):
        importlib.import_module(module)
    peer_timeout = options["dealer_timeout"] if rank == DEALER else timeout
    channels = connect_mesh(rank, addresses, peer_timeout, NAMES, credentials, session=session,
                            listener=listener, connect_timeout=options.get("connect_timeout"))
    links = {r: Link(ch, peer_timeout) for r, ch in channels.items()}
    exc: BaseException | None = None
    try:
        if rank == DEALER:
            return _dealer_main(links)
        if job is None:
            raise ValueError("a computing party needs a job")
        return _party_main(rank, links[1 - rank], links[DEALER], job, args, kwargs, options)
    except BaseException as e:
        exc = e
        raise
    finally:
        _close_all(links.values(), exc)


def _child(rank: int, conn, job: Job | None, args: tuple, kwargs: dict, options: dict,
           timeout: float, session: bytes, credentials: Credentials) -> None:
    from veil.comm.tcp import listen

    try:
        torch.set_num_threads(options.get("threads") or 1)
        listener = listen(("127.0.0.1", 0)) if rank < DEALER else None
        conn.send(("port", listener.getsockname()[1] if listener else 0))
        if not conn.poll(options.get("connect_timeout") or timeout):
            raise PeerTimeoutError("the launcher never sent the addresses")
        addresses = conn.recv()
        result = _tcp_participant(rank, addresses, job, args, kwargs, options, timeout, session,
                                  credentials, listener)
        # Plain pickle between the launcher and its own children (never between parties):
        # torch's multiprocessing reducer would share tensors by file descriptor, which dies
        # with this process.
        conn.send_bytes(pickle.dumps(("ok", result)))
    except BaseException as exc:  # noqa: BLE001 - reported to the launcher
        try:
            conn.send_bytes(pickle.dumps(("error", type(exc).__name__, str(exc),
                                          traceback.format_exc(), _is_secondary(exc))))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


_GRACE_S = 5.0


def _default_start_method() -> str:
    # "fork" is fast but unsafe once this process has used OpenMP/BLAS thread pools: a forked
    # child that enters one spins forever (libgomp is not fork-safe). A fork server is a clean
    # process started once, which then forks the participants quickly.
    if "forkserver" in mp.get_all_start_methods():
        return "forkserver"
    return "spawn"


def _context(start_method: str | None):
    method = start_method or _default_start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        # Preloading also hands this process's sys.path to the server (so jobs defined in
        # scripts and test modules can be unpickled there).
        ctx.set_forkserver_preload(["veil.mpc.runtime"])
    return ctx


def _run_tcp_launcher(job: Job, args: dict[int, tuple], kwargs: dict, options: dict,
                      timeout: float,
                      start_method: str | None) -> list:
    ctx = _context(start_method)
    session = os.urandom(16)
    # A fresh deployment per run: each process gets only its own role's key.
    creds = ephemeral()
    options = dict(options, modules=registered_modules())
    pipes, procs = [], []
    for rank in (0, 1, 2):
        parent, child = ctx.Pipe()
        # Each child receives only its own arguments (a party's input never reaches the other).
        p = ctx.Process(target=_child, args=(rank, child, job if rank < DEALER else None,
                                              args.get(rank, ()), kwargs, options, timeout,
                                              session, creds[ROLES[rank]]),
                        name=f"veil-{NAMES[rank].replace(' ', '-')}", daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    try:
        return _supervise(pipes, procs, timeout, options)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        for c in pipes:
            c.close()


def _supervise(pipes, procs, timeout: float, options: dict) -> list:
    start_deadline = time.monotonic() + (options.get("connect_timeout") or timeout) + 60
    ports: list[int] = []
    for rank, conn in enumerate(pipes):
        while not conn.poll(0.05):
            if not procs[rank].is_alive():
                raise PartyFailedError(rank, f"process exited with code {procs[rank].exitcode} "
                                             "during start-up")
            if time.monotonic() > start_deadline:
                raise PartyFailedError(rank, "process did not start in time")
        msg = conn.recv()
        if msg[0] != "port":
            raise PartyFailedError(rank, f"{msg[1]}: {msg[2]}\n{msg[3]}")
        ports.append(msg[1])
    addresses = [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", "127.0.0.1:0"]
    for conn in pipes:
        conn.send(addresses)
    results: dict[int, Any] = {}
    errors: dict[int, tuple] = {}
    order: list[int] = []
    pending = {0, 1, 2}
    first_failure: float | None = None
    while pending:
        for rank in sorted(pending):
            conn, proc = pipes[rank], procs[rank]
            if conn.poll(0.02):
                try:
                    msg = pickle.loads(conn.recv_bytes())
                except EOFError:
                    msg = ("error", "ProcessDied", f"exited with code {proc.exitcode}", "",
                           False)
                pending.discard(rank)
                if msg[0] == "ok":
                    results[rank] = msg[1]
                else:
                    errors[rank] = msg
                    order.append(rank)
            elif not proc.is_alive() and not conn.poll(0):
                pending.discard(rank)
                errors[rank] = ("error", "ProcessDied",
                                f"process exited with code {proc.exitcode} without a result",
                                "", False)
                order.append(rank)
        if errors and first_failure is None:
            first_failure = time.monotonic()
        if first_failure is not None and time.monotonic() - first_failure > _GRACE_S:
            # The others fail fast when a peer dies; one still running is stuck in local
            # computation and is terminated below.
            break
    if errors:
        primary = [r for r in order if not errors[r][4]]
        rank = primary[0] if primary else order[0]
        _, name, msg, tb, _ = errors[rank]
        raise PartyFailedError(rank, f"{name}: {msg}" + (f"\n--- remote traceback ---\n{tb}"
                                                         if tb else ""))
    return [results[0], results[1]]


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------
def run(
    job: Job | None,
    transport: str = "local",
    *,
    args: Sequence = (),
    kwargs: dict | None = None,
    inputs: Sequence | dict | None = None,
    timeout: float = 60.0,
    plan: Iterable | None = None,
    store: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    frac_bits: int = ring.DEFAULT_FRAC_BITS,
    rank: int | None = None,
    addresses: Sequence[str] | None = None,
    credentials: Credentials | str | os.PathLike | None = None,
    session: str | bytes = b"",
    start_method: str | None = None,
    threads: int | None = None,
    dealer_timeout: float | None = None,
    connect_timeout: float | None = None,
) -> Any:
    """Run ``job(party, *args, **kwargs)`` in two computing parties with a dealer.

    Parameters
    ----------
    job:
        The SPMD program, called once in each computing party with its
        :class:`~veil.mpc.party.Party`.
    transport:
        ``"local"`` (threads, in-memory) or ``"tcp"``.
    args, kwargs:
        Extra arguments given to the job in both parties.
    inputs:
        Private inputs: ``(input_of_party0, input_of_party1)`` or ``{rank: input}``;
        the job is then called as ``job(party, my_input, *args, **kwargs)`` and, over
        TCP, each process receives only its own input.
    timeout:
        Seconds a party waits for any single message before failing with a clear
        error (a dead or hung peer).
    plan:
        Optional list of ``(kind, params)``: all this material is fetched from the
        dealer before the job starts (the offline phase); the job must then ask
        for exactly this material, in order.
    store:
        Directory written by :func:`veil.sharing.preprocess`: each party reads its
        material from ``store/party<rank>`` instead of the dealer.
    device:
        Device of the shares (``"cpu"``, ``"cuda"``).
    frac_bits:
        Default fixed-point precision (16).
    rank, addresses:
        Multi-machine TCP: run only participant ``rank`` (0, 1, or 2 for the
        dealer) with the ``"host:port"`` of all three participants.
    credentials:
        Multi-machine TCP (required there): this participant's credentials, or the
        keys directory holding them (``veil keys init``; see
        :mod:`veil.comm.credentials` and docs/security.md). Every link is mutual
        TLS 1.3 and each peer must prove its role. The single-host launcher makes
        a fresh in-memory deployment per run.
    session:
        An optional run id (not a secret) shared by the three participants of a
        multi-machine run, to keep concurrent runs of one deployment apart.
    start_method:
        Multiprocessing start method of the TCP launcher. Default ``"forkserver"``
        (a clean server process started once per session, then fast forks), else
        ``"spawn"``; the job and its arguments must then be picklable (a module-level
        function). ``"fork"`` starts fastest and accepts closures, but hangs if this
        process already used multi-threaded BLAS/OpenMP (libgomp is not fork-safe).
    threads:
        torch threads per launched process (TCP launcher; default 1).
    dealer_timeout:
        How long the dealer waits between requests (default ``max(600, 10 * timeout)``):
        parties may compute for a long time between requests.

    Returns
    -------
    list
        ``[result of party 0, result of party 1]``; with ``rank`` given, this
        participant's result (the dealer's statistics for rank 2).

    Raises
    ------
    PartyFailedError
        When a participant fails (its error, not the others' follow-up errors).
    """
    if transport not in ("local", "tcp"):
        raise ValueError(f"transport must be 'local' or 'tcp', got {transport!r}")
    if job is None and rank != DEALER:
        raise ValueError("job is required")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if plan is not None and store is not None:
        raise ValueError("give either a plan (streamed before the job) or a store, not both")
    if store is not None and not Path(store).exists():
        raise FileNotFoundError(f"preprocessing store {store} does not exist")
    options = {
        "plan": list(plan) if plan is not None else None,
        "store": os.fspath(store) if store is not None else None,
        "device": str(device) if device is not None else None,
        "frac_bits": ring.check_frac_bits(frac_bits),
        "threads": threads,
        "dealer_timeout": dealer_timeout or max(600.0, 10 * timeout),
        "connect_timeout": connect_timeout,
    }
    kwargs = kwargs or {}
    if inputs is None:
        per_rank = {0: tuple(args), 1: tuple(args)}
    else:
        given = dict(inputs) if isinstance(inputs, dict) else dict(enumerate(inputs))
        if rank is None and sorted(given) != [0, 1]:
            raise ValueError("inputs must give one input for each of party 0 and party 1")
        per_rank = {r: (v,) + tuple(args) for r, v in given.items() if r in (0, 1)}
    if rank is not None:
        if transport != "tcp" or addresses is None or len(addresses) != 3:
            raise ValueError("rank=... needs transport='tcp' and three addresses "
                             "(party 0, party 1, dealer)")
        if rank not in (0, 1, 2):
            raise ValueError(f"rank must be 0, 1 or 2 (dealer), got {rank}")
        token = session.encode() if isinstance(session, str) else bytes(session)
        if credentials is None:
            raise CredentialsError(
                "a multi-machine run needs credentials: pass credentials=KEYS_DIR (created "
                "with `veil keys init KEYS_DIR`, holding ca.pem and this role's "
                f"{ROLES[rank]}.pem / {ROLES[rank]}.key)")
        if not isinstance(credentials, Credentials):
            credentials = Credentials.load(credentials, ROLES[rank])
        try:
            if rank < DEALER and rank not in per_rank:
                raise ValueError(f"inputs has no entry for rank {rank}")
            return _tcp_participant(rank, list(addresses), job, per_rank.get(rank, ()), kwargs,
                                    options, timeout, token, credentials)
        except Exception as exc:
            raise PartyFailedError(rank, f"{type(exc).__name__}: {exc}") from exc
    if transport == "local":
        return _run_local(job, per_rank, kwargs, options, timeout)
    return _run_tcp_launcher(job, per_rank, kwargs, options, timeout, start_method)


def _load_job(spec: str) -> Job:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--job must look like package.module:function, got {spec!r}")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"{spec} is not a callable")
    return fn


def _main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(
        prog="python -m veil.mpc.runtime",
        description="Run one participant of a multi-machine Veil TCP run: the dealer, or a "
                    "computing party executing --job.")
    parser.add_argument("role", choices=["dealer", "party"])
    parser.add_argument("--addresses", required=True,
                        help="host:port of party 0, party 1 and the dealer, comma-separated")
    parser.add_argument("--rank", type=int, choices=[0, 1], help="rank of a computing party")
    parser.add_argument("--job", help="the SPMD job of a party, as package.module:function")
    parser.add_argument("--keys", required=True,
                        help="keys directory (veil keys init) with ca.pem and this role's "
                             "certificate and key")
    parser.add_argument("--session", default="", help="optional run id (not a secret)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--import", dest="modules", action="append", default=[],
                        help="module registering extra material kinds (repeatable)")
    ns = parser.parse_args(argv)
    for module in ns.modules:
        importlib.import_module(module)
    addresses = ns.addresses.split(",")
    if ns.role == "dealer":
        result = run(None, "tcp", rank=DEALER, addresses=addresses, session=ns.session,
                     timeout=ns.timeout, credentials=ns.keys)
    else:
        if ns.rank is None or ns.job is None:
            parser.error("a party needs --rank and --job")
        result = run(_load_job(ns.job), "tcp", rank=ns.rank, addresses=addresses,
                     session=ns.session, timeout=ns.timeout, credentials=ns.keys)
    print(result)
    return result


if __name__ == "__main__":
    _main()
