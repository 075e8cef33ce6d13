"""``veil.run``: run an SPMD job in two computing parties plus a dealer.

Three ways to run the same job:

- ``transport="local"`` (default): the two parties and the dealer are threads
  of this process, talking through in-memory queues (same wire format and
  byte counts as TCP).
- ``transport="tcp"`` (launcher): this process starts three local processes
  (party 0, party 1, dealer) that talk mutual TLS 1.3 on loopback, and collects
  the parties' results. The job must be picklable (a module-level function),
  and a script must call ``veil.run`` under ``if __name__ == "__main__":``.
- ``transport="tcp", rank=r, addresses=[a0, a1, a2], credentials=KEYS``: this
  process *is* participant ``r`` (2 is the dealer) of a run spread over
  machines; start the same program on each machine with its rank and its
  role's credentials (``veil keys init``; every link is mutual TLS 1.3, see
  docs/security.md). Or use the entry point:
  ``python -m veil.mpc.runtime dealer --keys DIR --addresses h0:p0,h1:p1,h2:p2`` and
  ``python -m veil.mpc.runtime party --rank 0 --keys DIR --job pkg.mod:job --addresses ...``.
  Parties 0 and 1 listen on their addresses; the dealer only connects (its
  address is unused).

What each participant runs lives in :mod:`veil.mpc.launch`; the launchers in
:mod:`veil.mpc.launch_local` (threads) and :mod:`veil.mpc.launch_tcp` (processes).

A participant that fails closes its connections with a generic reason (its
phase and error class, never the error text, which may quote a private value),
so the others fail at once with a clear :class:`PartyFailedError`; a peer that
stops answering is caught by ``timeout`` (seconds without a message) and the
participant that stalled is the one reported. Never a hang.

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
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from veil import ring
from veil.comm.credentials import ROLES, Credentials, CredentialsError
from veil.comm.tcp import MAX_FRAME_BYTES
from veil.mpc.launch import (
    DEALER,
    NAMES,
    Job,
    Options,
    PartyFailedError,
    Progress,
    Transport,
    tcp_participant,
)

__all__ = ["DEALER", "NAMES", "PartyFailedError", "Transport", "run"]


def _per_rank_args(inputs: Sequence | dict | None, args: Sequence,
                   rank: int | None) -> dict[int, tuple]:
    """Each party's positional job arguments: its private input (if any), then ``args``."""
    if inputs is None:
        return {0: tuple(args), 1: tuple(args)}
    given = dict(inputs) if isinstance(inputs, dict) else dict(enumerate(inputs))
    if rank is None and sorted(given) != [0, 1]:
        raise ValueError("inputs must give one input for each of party 0 and party 1")
    if rank is not None and rank < DEALER and rank not in given:
        raise ValueError(f"inputs has no entry for rank {rank}")
    return {r: (v,) + tuple(args) for r, v in given.items() if r in (0, 1)}


def run(
    job: Job | None,
    transport: Transport | str = "local",
    *,
    args: Sequence = (),
    kwargs: dict | None = None,
    inputs: Sequence | dict | None = None,
    progress: Progress | None = None,
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
    max_frame_bytes: int = MAX_FRAME_BYTES,
) -> Any:
    """Run ``job(party, *args, **kwargs)`` in two computing parties with a dealer.

    Parameters
    ----------
    job:
        The SPMD program, called once in each computing party with its
        :class:`~veil.mpc.party.Party`.
    transport:
        ``"local"`` (threads, in-memory) or ``"tcp"`` (a :class:`Transport`).
    args, kwargs:
        Extra arguments given to the job in both parties.
    inputs:
        Private inputs: ``(input_of_party0, input_of_party1)`` or ``{rank: input}``;
        the job is then called as ``job(party, my_input, *args, **kwargs)``. Over
        TCP each process receives only its own input (so the launcher refuses the
        ``"fork"`` start method, whose processes would inherit both).
    progress:
        ``progress(done, total)``, called in this process whenever a party's job
        calls the ``progress`` keyword argument it then receives (over TCP the
        reports travel to the launcher).
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
    connect_timeout:
        TCP: how long to wait for the other participants to connect (default ``timeout``).
    max_frame_bytes:
        TCP: largest message accepted or sent (default 4 GiB).

    Returns
    -------
    list
        ``[result of party 0, result of party 1]``; with ``rank`` given, this
        participant's result (the dealer's statistics for rank 2).

    Raises
    ------
    PartyFailedError
        When a participant fails (its error, not the others' follow-up errors), or
        stalls (``.stalled``: the others timed out waiting for it).
    """
    kind = Transport.parse(transport)
    if job is None and rank != DEALER:
        raise ValueError("job is required")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if plan is not None and store is not None:
        raise ValueError("give either a plan (streamed before the job) or a store, not both")
    if store is not None and not Path(store).exists():
        raise FileNotFoundError(f"preprocessing store {store} does not exist")
    if max_frame_bytes <= 0:
        raise ValueError("max_frame_bytes must be positive")
    options = Options(
        timeout=float(timeout),
        dealer_timeout=dealer_timeout or max(600.0, 10 * timeout),
        connect_timeout=connect_timeout,
        plan=list(plan) if plan is not None else None,
        store=os.fspath(store) if store is not None else None,
        device=str(device) if device is not None else None,
        frac_bits=ring.check_frac_bits(frac_bits),
        threads=threads,
        max_frame_bytes=int(max_frame_bytes),
    )
    kwargs = kwargs or {}
    per_rank = _per_rank_args(inputs, args, rank)
    if rank is not None:
        if kind is not Transport.TCP or addresses is None or len(addresses) != 3:
            raise ValueError("rank=... needs transport='tcp' and three addresses "
                             "(party 0, party 1, dealer)")
        if rank not in (0, 1, 2):
            raise ValueError(f"rank must be 0, 1 or 2 (dealer), got {rank}")
        return _run_participant(rank, list(addresses), job, per_rank.get(rank, ()), kwargs,
                                options, session, credentials, progress)
    if kind is Transport.LOCAL:
        from veil.mpc.launch_local import launch_local

        return launch_local(job, per_rank, kwargs, options, progress)
    from veil.mpc.launch_tcp import launch_tcp

    return launch_tcp(job, per_rank, kwargs, options, start_method, progress,
                      private_inputs=inputs is not None)


def _run_participant(rank: int, addresses: list[str], job: Job | None, args: tuple,
                     kwargs: dict, options: Options, session: str | bytes,
                     credentials: Credentials | str | os.PathLike | None,
                     progress: Progress | None) -> Any:
    """One participant of a multi-host run (this process)."""
    if credentials is None:
        raise CredentialsError(
            "a multi-machine run needs credentials: pass credentials=KEYS_DIR (created "
            "with `veil keys init KEYS_DIR`, holding ca.pem and this role's "
            f"{ROLES[rank]}.pem / {ROLES[rank]}.key)")
    if not isinstance(credentials, Credentials):
        credentials = Credentials.load(credentials, ROLES[rank])
    token = session.encode() if isinstance(session, str) else bytes(session)
    try:
        return tcp_participant(rank, addresses, job, args, kwargs, options, token,
                               credentials, progress=progress)
    except Exception as exc:
        # The full detail is for this participant's user; peers got only a generic reason.
        raise PartyFailedError(rank, f"{type(exc).__name__}: {exc}") from exc


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
