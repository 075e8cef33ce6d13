"""The three roles as CLI processes on three hosts: Linux network namespaces joined by veth
pairs on a bridge (10.200.0.0/24: dealer .2, model owner .3, data owners .4).

Follows docs/deployment.md literally: `veil keys init`, each role gets only its own
credentials, `veil dealer`, `veil serve`, two concurrent `veil query --json`, SIGTERM.
Skipped where network namespaces cannot be created (not root, no CAP_NET_ADMIN).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from veil.models import build
from veil.nn import convert
from veil.nn.twin import twin_forward

pytestmark = pytest.mark.slow

VEIL = [sys.executable, "-c", "from veil.cli import main; main()"]
HOSTS = {"dealer": "10.200.0.2", "model": "10.200.0.3", "hospital": "10.200.0.4"}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture()
def hosts():
    """Three namespaces ("hosts") on one bridge; yields {host: namespace}."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2 (ip netns)")
    tag = f"v{os.getpid() % 100000}"
    switch = f"{tag}-sw"
    names = {h: f"{tag}-{h[0]}" for h in HOSTS}
    created: list[str] = []
    try:
        for ns in (switch, *names.values()):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for host, ns in names.items():
            port = f"{tag}{host[0]}"
            _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{HOSTS[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        err = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot create network namespaces here: {err.decode().strip() or exc}")
    yield names
    for ns in created:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _start(ns: str, args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(["ip", "netns", "exec", ns, *VEIL, *args], stdout=fh,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {log}:\n{log.read_text()}")


def test_three_hosts_from_the_walkthrough(hosts, tmp_path):
    # 1. credentials, and each host gets only its own role's
    subprocess.run([*VEIL, "keys", "init", str(tmp_path / "keys")], check=True,
                   capture_output=True, timeout=60)
    per_host = {"dealer": "dealer", "model": "party0", "hospital": "party1"}
    for host, role in per_host.items():
        d = tmp_path / host / "veil-keys"
        d.mkdir(parents=True)
        for name in ("ca.pem", f"{role}.pem", f"{role}.key"):
            shutil.copy(tmp_path / "keys" / name, d / name)
    torch.manual_seed(1)  # not-secret: test weights
    model = build("lenet")
    torch.save(model.state_dict(), tmp_path / "model" / "lenet.pt")
    rng = np.random.default_rng(2)  # not-secret: test images
    images = [rng.standard_normal((n, 1, 28, 28)).astype(np.float32) for n in (3, 2)]
    for i, x in enumerate(images):
        np.save(tmp_path / "hospital" / f"scans{i}.npy", x)

    procs = []
    try:
        dealer_log, server_log = tmp_path / "dealer.log", tmp_path / "server.log"
        dealer = _start(hosts["dealer"], ["dealer", "--listen", f"{HOSTS['dealer']}:7000",
                                          "--keys", str(tmp_path / "dealer" / "veil-keys")],
                        dealer_log)
        procs.append(dealer)
        server = _start(hosts["model"], [
            "serve", "--model", "lenet", "--weights", str(tmp_path / "model" / "lenet.pt"),
            "--listen", f"{HOSTS['model']}:7100", "--dealer", f"{HOSTS['dealer']}:7000",
            "--keys", str(tmp_path / "model" / "veil-keys")], server_log)
        procs.append(server)
        _wait_for(dealer_log, "listening on", dealer)
        _wait_for(server_log, "serving on", server)
        clients = []
        for i in range(2):
            log = tmp_path / f"client{i}.json"
            clients.append((_start(hosts["hospital"], [
                "query", "--server", f"{HOSTS['model']}:7100", "--dealer",
                f"{HOSTS['dealer']}:7000", "--model", "lenet",
                "--keys", str(tmp_path / "hospital" / "veil-keys"),
                "--images", str(tmp_path / "hospital" / f"scans{i}.npy"), "--batch-size", "2",
                "--json"], log), log))
        graph = convert(model, (1, 28, 28))
        for i, (proc, log) in enumerate(clients):
            assert proc.wait(180) == 0, log.read_text()
            text = log.read_text()
            out = json.loads(text[text.index("{"):])
            twin = twin_forward(graph, torch.from_numpy(images[i]).double())
            assert (torch.tensor(out["logits"], dtype=torch.float64) - twin).abs().max() < 2e-3
            assert len(out["reports"]) == (2 if i == 0 else 1)
        # the model owner's log: one line per query, with time, bytes and rounds
        text = server_log.read_text()
        assert text.count(" rounds") >= 3 and "bytes online" in text
        # 2. SIGTERM: a clean shutdown
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server_log.read_text()
        assert "server: shut down" in server_log.read_text()
        dealer.send_signal(signal.SIGTERM)
        assert dealer.wait(30) == 0, dealer_log.read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
