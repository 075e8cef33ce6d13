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


def _hanging_job(party):
    if party.rank == 1:
        time.sleep(60)  # hangs without a word
    return party.exchange(torch.ones(2))


def test_hung_process_is_reported_as_the_one_that_stalled():
    t0 = time.perf_counter()
    with pytest.raises(PartyFailedError, match="party 1 stalled") as info:
        veil.run(_hanging_job, transport="tcp", timeout=1, threads=1)
    assert info.value.rank == 1 and "party 0 waited" in str(info.value)
    assert time.perf_counter() - t0 < 30


def test_script_without_main_guard_is_detected_with_what_to_do(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import torch, veil\n"
        "def job(party):\n"
        "    return party.rank\n"
        "print(veil.run(job, transport='tcp', timeout=20))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr
    assert "unguarded.py, line 4" in proc.stderr
    assert "EOFError" not in proc.stderr and len(proc.stderr.splitlines()) < 20
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        "import veil\n"
        "def job(party):\n"
        "    return party.rank\n"
        "if __name__ == '__main__':\n"
        "    print(veil.run(job, transport='tcp', timeout=20))\n")
    ok = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True,
                        timeout=120, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "[0, 1]"


def _private_job(party, mine, scale):
    return mine * scale


def test_private_inputs_over_tcp_and_fork_refused():
    r0, r1 = veil.run(_private_job, transport="tcp", inputs=(torch.ones(2), torch.zeros(3)),
                      args=(2,), threads=1)
    assert torch.equal(r0, 2 * torch.ones(2)) and torch.equal(r1, torch.zeros(3))
    with pytest.raises(ValueError, match="fork"):
        veil.run(_private_job, transport="tcp", inputs=(1, 2), args=(2,), start_method="fork")


def _progress_job(party, progress):
    if party.rank == 1:
        for i in range(3):
            progress(i + 1, 3)
    return party.rank


def test_progress_travels_to_the_launcher():
    seen = []
    assert veil.run(_progress_job, transport="tcp", progress=lambda d, t: seen.append((d, t)),
                    threads=1) == [0, 1]
    assert seen == [(1, 3), (2, 3), (3, 3)]
