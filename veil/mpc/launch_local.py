"""The in-memory launcher: the three participants are threads of this process.

Frames go through queues with the same wire format and byte counts as TCP. A
participant that stalls (never returns, never talks) cannot be stopped, but it
cannot hang the run either: once another participant has failed, the launcher
waits a grace period, reports the stalled one, and leaves its daemon thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from veil.comm.link import Link
from veil.comm.local import channel_pair
from veil.mpc.launch import (
    DEALER,
    NAMES,
    Failure,
    Job,
    Options,
    Progress,
    blame,
    dealer_main,
    party_main,
)


def launch_local(job: Job, args: Mapping[int, tuple], kwargs: Mapping, options: Options,
                 progress: Progress | None = None) -> list:
    """Run the job in two party threads with a dealer thread; ``[result0, result1]``.

    ``args[rank]`` are the positional arguments of party ``rank``'s job.
    """
    p01, p10 = channel_pair(NAMES[0], NAMES[1])
    p0d, dp0 = channel_pair(NAMES[0], NAMES[2])
    p1d, dp1 = channel_pair(NAMES[1], NAMES[2])
    t, td = options.timeout, options.dealer_timeout
    links = {0: (Link(p01, t), Link(p0d, t)), 1: (Link(p10, t), Link(p1d, t)),
             DEALER: {0: Link(dp0, td), 1: Link(dp1, td)}}
    results: dict[int, Any] = {}
    failures: dict[int, Failure] = {}
    order: list[int] = []
    lock = threading.Lock()

    def target(rank: int) -> None:
        try:
            if rank == DEALER:
                results[rank] = dealer_main(links[DEALER])
            else:
                peer, dealer = links[rank]
                results[rank] = party_main(rank, peer, dealer, job, args[rank], kwargs,
                                           options, progress)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            with lock:
                failures[rank] = Failure.of(rank, exc)
                order.append(rank)

    threads = {r: threading.Thread(target=target, args=(r,), daemon=True,
                                   name=f"veil-{NAMES[r].replace(' ', '-')}")
               for r in (0, 1, DEALER)}
    for th in threads.values():
        th.start()
    first_failure: float | None = None
    while any(threads[r].is_alive() for r in (0, 1)):
        threads[0].join(0.02)
        if failures and first_failure is None:
            first_failure = time.monotonic()
        if first_failure is not None and time.monotonic() - first_failure > options.grace_s:
            break
    if not failures:
        threads[DEALER].join(options.timeout)
    if failures:
        running = [r for r, th in threads.items() if th.is_alive() and r not in failures]
        err = blame(failures, order, running, options.timeout)
        cause = failures[err.rank].exception if err.rank in failures else None
        raise err from cause
    return [results[0], results[1]]
