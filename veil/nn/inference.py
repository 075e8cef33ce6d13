"""Private inference: a model owner and a data owner run a PyTorch model together.

The model owner (party 0) secret-shares the weights once; the data owner
(party 1) secret-shares each batch; a dealer supplies the correlated randomness
(triples, FSS keys) in an offline phase; by default only the data owner learns
the output. Neither party ever holds the other's plaintext: with
``transport="tcp"`` the three roles are separate processes and each computing
process loads only its own private input (the weights or the images) from a
private file, so the images never even enter the model owner's memory.

- :func:`secure_inference`: one call, one batch -> ``(output, report)``.
- :func:`serve`: inference as a service: share the weights once, answer many
  batches, each with fresh dealer material; one report per batch.

The weights are opened once, at sharing time, under masks that the dealer
keeps for this session (:mod:`veil.sharing.masks`); every query then opens
only its own activations under fresh masks, so the online traffic does not
grow with the size of the model.

Example
-------
>>> import torch, veil
>>> from veil.models import build
>>> model = build("network1")
>>> x = torch.randn(4, 1, 28, 28)
>>> out, report = veil.secure_inference(model, x, transport="local")   # doctest: +SKIP
>>> (out - model(x)).abs().max() < 1e-2                                # doctest: +SKIP
tensor(True)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from veil import config
from veil.mpc.runtime import Transport, run
from veil.nn.graph import SecureGraph, convert
from veil.nn.report import InferenceReport
from veil.nn.secure import (
    DATA_OWNER,
    MODEL_OWNER,
    SharedWeights,
    load_shares,
    material_plan,
    secure_forward,
    share_weights,
)
from veil.sharing.material import get_kind, plan_bytes

Progress = Callable[[int, int], None]


def _is_fss_key(kind: str) -> bool:
    """Whether dealer material of ``kind`` is FSS keys (the kind says so)."""
    return get_kind(kind).family == "fss_key"


# --------------------------------------------------------------------------- party-local job

def _delta(a: dict, b: dict, key: str) -> float:
    return b[key] - a[key]


def _chunks(plan: list) -> list[tuple[bool, list]]:
    """Consecutive runs of the plan that are FSS keys or not (order preserved)."""
    out: list[tuple[bool, list]] = []
    for item in plan:
        fss = _is_fss_key(item[0])
        if out and out[-1][0] == fss:
            out[-1][1].append(item)
        else:
            out.append((fss, [item]))
    return out


def estimate_material_bytes(plan: list) -> int:
    """Bytes of dealer material one party holds for ``plan`` (to bound memory), as each
    material kind describes itself (:func:`veil.sharing.material.plan_bytes`)."""
    return plan_bytes(plan)


class _KindMeter:
    """Wraps ``party.material`` to sort streamed dealer bytes into FSS keys and the rest."""

    def __init__(self, party) -> None:
        self.party = party
        self.key_bytes = 0
        self._material = party.material
        party.material = self

    def __call__(self, kind: str, **params):
        before = self.party.stats()["offline_bytes_received"]
        m = self._material(kind, **params)
        if _is_fss_key(kind):
            self.key_bytes += self.party.stats()["offline_bytes_received"] - before
        return m


def _prefetch(party, plan: list) -> int:
    """Fetch the whole plan now (in runs of FSS / non-FSS items); returns FSS key bytes."""
    keys = 0
    for fss, items in _chunks(plan):
        before = party.stats()["offline_bytes_received"]
        party.prefetch(items)
        if fss:
            keys += party.stats()["offline_bytes_received"] - before
    return keys


def _warm_up() -> None:
    """Load the FSS kernels (numba JIT cache) in this process before anything is timed.

    Runs a throwaway local sign gate on zeros with its own fresh keys: nothing is sent and
    no protocol material is used.
    """
    import numpy as np

    from veil.fss import gates

    for extra, relu in ((0, True), (1, False), (0, False)):
        m0, m1 = gates.sign_keygen(2, extra=extra, relu=relu)
        x = np.zeros(2, dtype=np.uint64)
        w = np.zeros((2, extra), dtype=np.uint64) if extra else None
        masked = [gates.sign_mask(m, x, w) for m in (m0, m1)]
        xh = masked[0][0] + masked[1][0]
        wh = masked[0][1] + masked[1][1] if extra else None
        gates.sign_finish(m0, 0, xh, wh)
        gates.sign_finish(m1, 1, xh, wh)


def _service_job(party, mine: Any, public: SecureGraph, kept: SharedWeights | None,
                 session: str, batch_sizes: Sequence[int], plans: Sequence[list],
                 reveal_to: int | None, prefetch: Sequence[bool],
                 progress: Progress | None = None) -> dict:
    """SPMD program of both computing parties (see :func:`serve`).

    ``mine`` is this party's private input from the runtime: the weights' state (model
    owner; ``None`` with ``kept`` shared weights) or the batches (data owner).
    """
    rank = party.rank
    graph = public
    if rank == MODEL_OWNER and kept is None:
        graph = public.with_weights(mine)
    inputs = mine if rank == DATA_OWNER else None
    meter = _KindMeter(party)
    _warm_up()

    s0, t0 = party.stats(), time.perf_counter()
    if kept is not None:  # weights nobody knows: each party loads its own shares
        shared = load_shares(party, public, kept.files[rank], kept.frac_bits, session)
    else:
        shared = share_weights(party, graph, owner=MODEL_OWNER, session=session)
    s1, t1 = party.stats(), time.perf_counter()
    out: dict[str, Any] = {"setup_s": t1 - t0, "setup_bytes": _delta(s0, s1, "bytes_sent"),
                           "setup_rounds": _delta(s0, s1, "rounds"), "batches": []}
    for i, batch in enumerate(batch_sizes):
        party.barrier()  # time the dealer, not the peer's lag
        sa = party.stats()
        keys0 = meter.key_bytes
        prefetched = _prefetch(party, list(plans[i])) if prefetch[i] else 0
        party.barrier()  # both parties start the online phase together
        sb = party.stats()
        x = party.share(inputs[i] if rank == DATA_OWNER else None, owner=DATA_OWNER,
                        shape=(batch, *graph.input_shape))
        cb = _progress_callback(progress, i, len(batch_sizes)) if rank == DATA_OWNER else None
        y = secure_forward(party, shared, x, cb).reveal(to=reveal_to)
        sc = party.stats()
        out["batches"].append({
            "prefetched": bool(prefetch[i]),
            # streamed material (when not prefetched) is fetched during the online phase;
            # the party's clock counts that time as offline, not online
            "offline_s": _delta(sa, sc, "offline_s"),
            "offline_bytes": _delta(sa, sc, "offline_bytes_received"),
            "key_bytes": prefetched + meter.key_bytes - keys0,
            "online_s": _delta(sb, sc, "online_s"),
            "online_bytes": _delta(sb, sc, "bytes_sent"),
            "online_rounds": _delta(sb, sc, "rounds"),
            "output": y,
        })
    return out


def _progress_callback(progress: Any, batch_index: int, batches: int) -> Progress | None:
    if progress is None:
        return None

    def cb(done: int, total: int) -> None:
        progress(batch_index * total + done, batches * total)

    return cb


def prefetch_limit_bytes() -> int:
    """Most dealer material (bytes per party) that ``offline="auto"`` fetches up front."""
    return config.prefetch_limit_bytes()  # $VEIL_PREFETCH_LIMIT_MB


def new_session() -> str:
    """A fresh public session id: the dealer's reusable weight masks are per session."""
    return secrets.token_hex(8)


# --------------------------------------------------------------------------- public API

def serve(
    model: nn.Module | SecureGraph | SharedWeights,
    batches: Sequence[torch.Tensor],
    transport: str = "local",
    *,
    argmax: bool = False,
    reveal_to: int | None = DATA_OWNER,
    timeout: float = 300.0,
    threads: int | None = None,
    progress: Progress | None = None,
    offline: str = "auto",
) -> tuple[list[torch.Tensor | None], list[InferenceReport]]:
    """Inference as a service: share the model once, answer every batch privately.

    Parameters
    ----------
    model: a ``torch.nn.Module`` (converted with :func:`veil.nn.convert`), a converted graph,
        or :class:`~veil.nn.secure.SharedWeights` (weights nobody knows, e.g. from
        ``veil.secure_train(..., reveal_to=None)``: each party loads its own shares).
    batches: float tensors ``(batch, *input_shape)``; each gets fresh dealer material.
    transport: ``"local"`` (threads) or ``"tcp"`` (party 0, party 1 and the dealer as three
        processes on loopback; each computing process reads only its own private file).
    argmax: return the one-hot argmax of the output instead of the logits.
    reveal_to: who learns the output: 1 (the data owner, default), 0, or ``None`` (both).
    timeout: seconds a party waits for a message before failing.
    threads: torch threads per process (tcp).
    progress: ``progress(done, total)`` over all layers of all batches.
    offline: ``"prefetch"``: fetch all of a batch's dealer material before its online
        phase (clean separation; memory grows with the model and batch: FSS keys are about
        2 KB per comparison and party); ``"stream"``: fetch it item by item during the
        online phase (bounded memory; each party's clock still books the time spent
        obtaining material as offline, which then includes waiting for the dealer);
        ``"auto"`` (default): prefetch when the estimate is below
        ``$VEIL_PREFETCH_LIMIT_MB`` (default 1024 MB per party).

    Returns
    -------
    outputs: the revealed outputs (float64), one per batch, as seen by ``reveal_to``.
    reports: one :class:`~veil.nn.report.InferenceReport` per batch; the weight-sharing
        set-up cost is in every report's ``setup_*`` fields (paid once).
    """
    transport = Transport.parse(transport).value
    if reveal_to not in (0, 1, None):
        raise ValueError(f"reveal_to must be 0, 1 or None, got {reveal_to!r}")
    batches = list(batches)
    if not batches:
        raise ValueError("no batch to serve")
    weights: Any = None
    if isinstance(model, SharedWeights):
        graph, weights = model.graph, model
    elif isinstance(model, SecureGraph):
        graph = model
    else:
        if not isinstance(batches[0], torch.Tensor):
            raise TypeError(f"a batch must be a torch.Tensor, got {type(batches[0]).__name__}")
        graph = convert(model, tuple(batches[0].shape[1:]))
    if argmax:
        graph = graph.with_argmax()
    for x in batches:
        graph.check_input(x)
    sizes = [int(x.shape[0]) for x in batches]
    session = new_session()
    plans = [material_plan(graph, b, session) for b in sizes]
    if offline not in ("auto", "prefetch", "stream"):
        raise ValueError(f"offline must be 'auto', 'prefetch' or 'stream', got {offline!r}")
    fetch = [offline == "prefetch" or (offline == "auto" and
                                       estimate_material_bytes(p) <= prefetch_limit_bytes())
             for p in plans]
    inputs = [x.detach().double().cpu() for x in batches]
    public = graph.public()
    kept = weights if isinstance(weights, SharedWeights) else None
    # The runtime hands each party only its own private input (over TCP, only to its process).
    results = run(_service_job, transport, timeout=timeout, threads=threads,
                  inputs=(graph.state() if kept is None else None, inputs),
                  args=(public, kept, session, sizes, plans, reveal_to, fetch),
                  progress=progress)
    return _collect(results, sizes, transport, reveal_to)


def _collect(results: list, sizes: list[int], transport: str, reveal_to: int | None
             ) -> tuple[list[torch.Tensor | None], list[InferenceReport]]:
    r0, r1 = results
    outputs, reports = [], []
    who = DATA_OWNER if reveal_to is None else reveal_to
    for i, size in enumerate(sizes):
        b0, b1 = r0["batches"][i], r1["batches"][i]
        outputs.append((r0, r1)[who]["batches"][i]["output"])
        reports.append(InferenceReport(
            batch_size=size, transport=transport,
            setup_s=max(r0["setup_s"], r1["setup_s"]),
            setup_bytes=int(r0["setup_bytes"] + r1["setup_bytes"]),
            setup_rounds=int(max(r0["setup_rounds"], r1["setup_rounds"])),
            offline_s=max(b0["offline_s"], b1["offline_s"]),
            offline_bytes=int(b0["offline_bytes"] + b1["offline_bytes"]),
            dealer_key_bytes=int(b0["key_bytes"] + b1["key_bytes"]),
            online_s=max(b0["online_s"], b1["online_s"]),
            online_bytes=int(b0["online_bytes"] + b1["online_bytes"]),
            online_rounds=int(max(b0["online_rounds"], b1["online_rounds"])),
            extra={"offline_mode": "prefetch" if b0["prefetched"] else "stream"},
        ))
    return outputs, reports


def secure_inference(
    model: nn.Module | SecureGraph,
    x: torch.Tensor,
    transport: str = "local",
    *,
    argmax: bool = False,
    reveal_to: int | None = DATA_OWNER,
    timeout: float = 300.0,
    threads: int | None = None,
    progress: Progress | None = None,
    offline: str = "auto",
) -> tuple[torch.Tensor, InferenceReport]:
    """Run ``model`` on the batch ``x`` with two-party computation; return output and cost.

    The model owner (party 0) shares the weights, the data owner (party 1)
    shares ``x``, a dealer supplies triples and FSS keys offline, and only the
    data owner learns the output (``reveal_to``). The output is what
    ``model(x)`` gives, up to fixed-point error (16 fractional bits).

    Parameters
    ----------
    model: any ``torch.nn.Module`` that :func:`veil.nn.convert` accepts.
    x: float tensor ``(batch, *input_shape)``, finite.
    transport: ``"local"`` (threads, in-memory) or ``"tcp"`` (three processes, loopback).
    argmax: return the one-hot argmax (a secure tournament) instead of the logits.

    Returns
    -------
    output: float64 tensor (``reveal_to``'s view).
    report: :class:`~veil.nn.report.InferenceReport` (offline/online time, bytes, rounds).

    Example
    -------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    >>> out, report = secure_inference(net, torch.ones(1, 3))   # doctest: +SKIP
    >>> report.online_rounds                                   # doctest: +SKIP
    4
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    outputs, reports = serve(model, [x], transport, argmax=argmax, reveal_to=reveal_to,
                             timeout=timeout, threads=threads, progress=progress,
                             offline=offline)
    return outputs[0], reports[0]
