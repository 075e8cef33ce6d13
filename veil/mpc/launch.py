"""What one participant of a run does, whichever launcher started it.

A run has three participants: party 0, party 1 and the dealer (ranks 0, 1, 2).
The launchers (:mod:`veil.mpc.launch_local`: threads; :mod:`veil.mpc.launch_tcp`:
processes) and the multi-host entry point all run the same pieces:

- :func:`party_main` / :func:`dealer_main`: one participant on its links; on
  failure it closes every link with a *generic* abort reason (who, which phase,
  the error class) so that peers fail at once; the detail (which may hold a
  private value, e.g. an input outside the fixed-point range) stays in the local
  exception and log;
- :func:`tcp_participant`: connect the TLS mesh, then run the participant;
- :func:`blame`: which participant a failed run is reported against: a real error
  before a timeout before a disconnection, a computing party's error before the
  dealer's refusal of its request, and a participant that stalled (still running
  while the others timed out waiting) before those that waited for it.
"""

from __future__ import annotations

import enum
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from veil import ring
from veil.comm.credentials import Credentials
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Link
from veil.comm.tcp import MAX_FRAME_BYTES
from veil.csprng import CSPRNG
from veil.mpc.party import Party
from veil.sharing.dealer import Dealer
from veil.sharing.store import open_store

NAMES = ("party 0", "party 1", "the dealer")
DEALER = 2

Job = Callable[..., Any]
Progress = Callable[[int, int], None]

log = logging.getLogger(__name__)


class Transport(str, enum.Enum):
    """How the participants of a run talk: in-memory queues or TCP (mutual TLS)."""

    LOCAL = "local"
    TCP = "tcp"

    @classmethod
    def parse(cls, value: Transport | str) -> Transport:
        """``"local"``/``"tcp"`` (or a member) to a member; ``ValueError`` otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"transport must be 'local' or 'tcp', got {value!r}") from None


@dataclass(frozen=True)
class Options:
    """Settings of a run shared by all its participants (checked once by ``veil.run``)."""

    timeout: float = 60.0
    dealer_timeout: float = 600.0
    connect_timeout: float | None = None
    plan: list | None = None
    store: str | None = None
    device: str | None = None
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    threads: int | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES
    modules: tuple[str, ...] = ()

    def link_timeout(self, rank: int) -> float:
        """The dealer waits longer: parties may compute for a long time between requests."""
        return self.dealer_timeout if rank == DEALER else self.timeout

    @property
    def grace_s(self) -> float:
        """After a first failure, how long the others get to notice it and stop."""
        return min(5.0, max(1.0, 2 * self.timeout))


class PartyFailedError(RuntimeError):
    """A participant of a run failed; ``rank`` says which, the message says why.

    ``stalled`` is true when that participant stopped answering (the others
    timed out waiting for it) rather than raising an error.
    """

    def __init__(self, rank: int, message: str, stalled: bool = False) -> None:
        super().__init__(f"{NAMES[rank]} {'stalled' if stalled else 'failed'}: {message}")
        self.rank = rank
        self.stalled = stalled


# ---------------------------------------------------------------------------------- failures
#: Blame priorities (lower is blamed first).
PRIMARY, DEALER_REFUSAL, TIMEOUT, DISCONNECTED = 0, 1, 2, 3


def failure_priority(rank: int, exc: BaseException) -> int:
    """How strongly ``exc`` in participant ``rank`` points at that participant as the cause."""
    if isinstance(exc, PeerDisconnectedError):
        return DISCONNECTED  # another participant failed first and told us
    if isinstance(exc, PeerTimeoutError):
        return TIMEOUT  # someone else stopped answering
    return DEALER_REFUSAL if rank == DEALER else PRIMARY


def abort_reason(phase: str, exc: BaseException) -> str:
    """What peers learn about a failure: the phase and the error class, never its text.

    Transport errors keep their text (it names participants and timeouts, never
    data); every other error is reduced to its class, because its message may
    quote a private value.
    """
    if isinstance(exc, CommError):
        return f"failed in its {phase} ({type(exc).__name__}: {exc})"
    return f"failed in its {phase} ({type(exc).__name__}; details in its own log)"


def _close_all(links: Iterable[Link], reason: str | None) -> None:
    for link in links:
        try:
            link.close(reason)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


class _Tracker:
    """The phase a participant is in, and closing its links with a generic reason."""

    def __init__(self, rank: int, links: Iterable[Link], phase: str) -> None:
        self.rank, self.links, self.phase = rank, list(links), phase

    def __enter__(self) -> _Tracker:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        reason = None
        if exc is not None:
            reason = abort_reason(self.phase, exc)
            log.info("%s failed in its %s", NAMES[self.rank], self.phase, exc_info=exc)
        _close_all(self.links, reason)


# ---------------------------------------------------------------------------------- participants
def party_main(rank: int, peer: Link, dealer: Link | None, job: Job, args: tuple,
               kwargs: Mapping, options: Options, progress: Progress | None = None) -> Any:
    """Run computing party ``rank`` on its links; closes them (with a reason on failure).

    The job is called as ``job(party, *args, **kwargs)``, plus ``progress=`` when a
    progress callback is given.
    """
    links = [peer] + ([dealer] if dealer is not None else [])
    with _Tracker(rank, links, "start-up") as state:
        store = open_store(options.store, rank) if options.store else None
        try:
            party = Party(rank, peer, dealer, device=options.device,
                          frac_bits=options.frac_bits, store=store)
            party.setup()
            if options.plan is not None:
                state.phase = "offline phase"
                party.preload(options.plan)
            party.start_online()
            state.phase = "job"
            extra = {"progress": progress} if progress is not None else {}
            result = job(party, *args, **kwargs, **extra)
            if dealer is not None:
                dealer.send({"op": "done"})
                dealer.channel.flush()
            peer.channel.flush()
            return result
        finally:
            if store is not None:
                store.close()


def dealer_main(links: Mapping[int, Link]) -> dict[str, float]:
    """Serve dealer material to both parties until they are done; returns dealer statistics."""
    with _Tracker(DEALER, links.values(), "service of material"):
        return Dealer(links, CSPRNG()).serve()


def tcp_participant(rank: int, addresses: Sequence[str], job: Job | None, args: tuple,
                    kwargs: Mapping, options: Options, session: bytes,
                    credentials: Credentials, listener=None,
                    progress: Progress | None = None) -> Any:
    """Connect participant ``rank`` to the others (mutual TLS), then run it."""
    from veil.comm.tcp import connect_mesh

    for module in options.modules:
        importlib.import_module(module)
    timeout = options.link_timeout(rank)
    channels = connect_mesh(rank, addresses, timeout, NAMES, credentials, session=session,
                            listener=listener, connect_timeout=options.connect_timeout,
                            max_frame_bytes=options.max_frame_bytes)
    links = {r: Link(ch, timeout) for r, ch in channels.items()}
    if rank == DEALER:
        return dealer_main(links)
    if job is None:
        _close_all(links.values(), "failed in its start-up (no job)")
        raise ValueError("a computing party needs a job")
    return party_main(rank, links[1 - rank], links[DEALER], job, args, kwargs, options,
                      progress)


# ---------------------------------------------------------------------------------- blame
@dataclass
class Failure:
    """One participant's failure as a launcher saw it."""

    priority: int
    name: str
    message: str
    traceback: str = ""
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, rank: int, exc: BaseException, traceback: str = "") -> Failure:
        return cls(failure_priority(rank, exc), type(exc).__name__, str(exc), traceback, exc)


def blame(failures: Mapping[int, Failure], order: Sequence[int], running: Iterable[int],
          timeout: float) -> PartyFailedError:
    """The error to report for a failed run.

    ``order``: ranks in the order they failed; ``running``: ranks that neither
    returned nor failed (stuck) when the launcher gave up waiting.
    """
    best = min(f.priority for f in failures.values())
    running = sorted(running)
    if best >= TIMEOUT and running:
        # Nobody raised a real error and someone is still busy: it is the one that stalled
        # (a computing party before the dealer, which mostly waits for the parties).
        stalled = next((r for r in running if r != DEALER), running[0])
        waited = [r for r in order if failures[r].priority == TIMEOUT] or list(order)
        first = failures[waited[0]]
        return PartyFailedError(
            stalled, f"it sent nothing for {timeout:g} s while {NAMES[waited[0]]} waited "
                     f"({first.name}: {first.message})", stalled=True)
    rank = next(r for r in order if failures[r].priority == best)
    f = failures[rank]
    tb = f"\n--- remote traceback ---\n{f.traceback}" if f.traceback else ""
    return PartyFailedError(rank, f"{f.name}: {f.message}{tb}")
