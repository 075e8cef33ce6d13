"""Three processes (party 0, party 1, dealer) over TCP on loopback. Few tests: start-up is slow."""

import os
import time

import pytest
import torch
import torch.nn.functional as F

import veil
from veil.mpc import PartyFailedError

pytestmark = pytest.mark.tcp

X = torch.linspace(-2, 2, 2 * 3 * 5 * 5).reshape(2, 3, 5, 5)
W = torch.linspace(1, -1, 4 * 3 * 3 * 3).reshape(4, 3, 3, 3)


def _job(party):
    x = party.share(X if party.rank == 0 else None, owner=0, shape=X.shape)
    w = party.share(W if party.rank == 1 else None, owner=1, shape=W.shape)
    y = x.conv2d(w, stride=1, padding=1)
    flat = y.flatten(1)
    z = flat @ flat[:1].t() + (x * x).sum() / 10
    return y.reveal(), z.reveal(), party.stats(), os.getpid()


def _dying_job(party):
    if party.rank == 1:
        os._exit(3)  # a crash: no exception, no goodbye
    return party.exchange(torch.ones(3))


def test_three_process_tcp_run_matches_plaintext():
    (y0, z0, s0, pid0), (y1, z1, s1, pid1) = veil.run(_job, transport="tcp", timeout=60,
                                                       threads=1)
    assert len({pid0, pid1, os.getpid()}) == 3
    want_y = F.conv2d(X, W, padding=1)
    flat = want_y.flatten(1)
    want_z = flat @ flat[:1].t() + (X * X).sum() / 10
    assert torch.equal(y0, y1) and torch.equal(z0, z1)
    assert (y0 - want_y).abs().max() < 1e-3
    assert (z0 - want_z).abs().max() < 5e-2
    assert s0["rounds"] == s1["rounds"] == 5  # conv, matmul, square, two reveals
    assert s0["bytes_sent"] == s1["bytes_received"] > 0
    assert s0["offline_bytes_received"] > 0 and s1["offline_bytes_received"] > 0


def test_killed_peer_fails_fast_with_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(PartyFailedError, match="party 1 failed: ProcessDied") as info:
        veil.run(_dying_job, transport="tcp", timeout=120, threads=1)
    assert info.value.rank == 1
    assert time.perf_counter() - t0 < 60  # far below the 120 s timeout, start-up included


def _small_job(party):
    x = party.share(torch.tensor([1.5, -2.0]) if party.rank == 0 else None, owner=0, shape=(2,))
    return (x * x).reveal()


def test_spawn_start_method_runs_a_module_level_job():
    r0, r1 = veil.run(_small_job, transport="tcp", start_method="spawn", timeout=60, threads=1)
    assert torch.equal(r0, r1)
    assert (r0 - torch.tensor([2.25, 4.0])).abs().max() < 1e-4
