"""The three inference roles as services: dealer, model-owner server, data-owner clients.

Each role listens on its own loopback address (127.0.0.2 dealer, 127.0.0.3
server); the clients connect from 127.0.0.1. ``test_service_netns.py`` runs the
same roles as CLI processes in separate network namespaces.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from veil.comm.credentials import Credentials, CredentialsError, init_keys
from veil.comm.errors import CommError, PeerDisconnectedError, PeerTimeoutError
from veil.comm.link import Link
from veil.comm.tcp import tls_connect
from veil.models import build
from veil.nn import convert
from veil.nn.service import (
    DealerService,
    InferenceClient,
    InferenceServer,
    MaterialPool,
    ServiceError,
    preprocess_pool,
    query,
)
from veil.nn.twin import twin_forward

SHAPE = (1, 28, 28)
TWIN_ATOL = 2e-3  # as in test_nn_secure: a few ulps of probabilistic truncation
DEALER_HOST, SERVER_HOST = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    init_keys(d)
    return d


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> Path:
    """Credentials of another deployment (another CA)."""
    d = tmp_path_factory.mktemp("other-keys")
    init_keys(d)
    return d


def _model(name: str = "lenet", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # not-secret: random test weights
    return build(name)


def _inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lenet():
    model = _model("lenet")
    return model, convert(model, SHAPE)


@pytest.fixture(scope="module")
def services(keys, lenet):
    with DealerService(f"{DEALER_HOST}:0", keys) as dealer, \
            InferenceServer(lenet[0], SHAPE, f"{SERVER_HOST}:0", dealer.address, keys,
                            timeout=30) as server:
        yield dealer, server


def _check_twin(graph, x, out) -> None:
    twin = twin_forward(graph, x)
    assert out.shape == twin.shape
    assert (out - twin).abs().max() < TWIN_ATOL


def test_two_concurrent_clients_many_queries_match_twin(services, keys, lenet, caplog):
    dealer, server = services
    graph = lenet[1]
    done_before = len(server.history)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(idx: int) -> None:
        try:
            arch = build("lenet")  # the public architecture only: its own random weights
            with InferenceClient(server.address, dealer.address, arch, SHAPE, keys,
                                 timeout=30) as c:
                out = []
                for q, batch in enumerate((1, 3, 2)):
                    x = _inputs(batch, seed=10 * idx + q)
                    y, report = c.query(x)
                    out.append((x, y, report))
                results[idx] = out
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="veil.service"):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors
    sessions = set()
    for idx in (0, 1):
        for x, y, report in results[idx]:
            _check_twin(graph, x, y)
            assert report.online_rounds > 0 and report.online_bytes > 0
            assert report.offline_bytes > 0 and report.setup_bytes > 0
            sessions.add(report.extra["session"])
    assert len(sessions) == 2  # one 2PC session (and dealer session) per client
    records = server.history[done_before:]
    assert len(records) == 6 and {r["session"] for r in records} == sessions
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count(" rounds") >= 6 and "bytes online" in logged
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            sum(1 for h in dealer.history if h["session"] in sessions) < 2:
        time.sleep(0.05)
    assert all(h["ok"] for h in dealer.history if h["session"] in sessions)


def test_labels_and_query_helper(services, keys, lenet):
    dealer, server = services
    x = _inputs(4, seed=99)
    labels, reports = query(server.address, dealer.address, build("lenet"), SHAPE, x, keys,
                            argmax=True, batch_size=3, timeout=30)
    assert [r.batch_size for r in reports] == [3, 1]
    twin = twin_forward(lenet[1].with_argmax(), x)
    assert torch.equal(labels, twin)


def _client_script(server: str, dealer: str, keys: Path, marker: Path) -> str:
    return f"""
import torch
from veil.models import build
from veil.nn.service import InferenceClient
with InferenceClient({server!r}, {dealer!r}, build("lenet"), (1, 28, 28), {str(keys)!r},
                     timeout=30) as c:
    open({str(marker)!r}, "w").close()
    while True:
        c.query(torch.randn(4, 1, 28, 28))
"""


def test_client_killed_mid_query_another_continues(services, keys, lenet, tmp_path):
    dealer, server = services
    marker = tmp_path / "session-open"
    proc = subprocess.Popen([sys.executable, "-c",
                             _client_script(server.address, dealer.address, keys, marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with InferenceClient(server.address, dealer.address, build("lenet"), SHAPE, keys,
                             timeout=30) as survivor:
            deadline = time.monotonic() + 60
            victim = None
            while victim is None and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read().decode()
                with server._lock:
                    victim = next((s for s in server._sessions.values()
                                   if s.sid != survivor.session and s.busy), None)
                time.sleep(0.005)
            assert victim is not None, "the victim's session never started a query"
            proc.send_signal(signal.SIGKILL)  # mid-query
            proc.wait(10)
            for q in range(2):
                x = _inputs(2, seed=300 + q)
                y, _ = survivor.query(x)
                _check_twin(lenet[1], x, y)
            deadline = time.monotonic() + 15
            while victim.sid in server._sessions and time.monotonic() < deadline:
                time.sleep(0.05)
            assert victim.sid not in server._sessions
            assert survivor.session in server._sessions
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    # the killed session's dealer session ended as well, the service goes on
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and \
            not any(h["session"] == victim.sid for h in dealer.history):
        time.sleep(0.05)
    assert any(h["session"] == victim.sid and not h["ok"] for h in dealer.history)


def test_wrong_credentials_are_refused_without_disturbing(services, keys, other_keys, lenet):
    dealer, server = services
    before = len(server.history)
    # another deployment's data-owner credentials: refused by the server's TLS
    with pytest.raises(CredentialsError):
        query(server.address, dealer.address, build("lenet"), SHAPE, _inputs(1, 0),
              other_keys, timeout=10)
    # this deployment's *dealer* certificate posing as a data owner: refused after TLS
    ch = tls_connect(server.address, Credentials.load(keys, "dealer"), "party0", timeout=5)
    link = Link(ch, 5)
    with pytest.raises((PeerDisconnectedError, PeerTimeoutError)):
        link.send({"op": "hello", "version": 1, "arch": "x"})
        link.recv()
    ch.close()
    # a client that expects the dealer at the server's address is refused by its own check
    with pytest.raises(CredentialsError):
        InferenceClient(dealer.address, server.address, build("lenet"), SHAPE, keys,
                        timeout=10).open()
    # the services go on serving a well-behaved client
    x = _inputs(1, seed=5)
    y, _ = query(server.address, dealer.address, build("lenet"), SHAPE, x, keys, timeout=30)
    _check_twin(lenet[1], x, y)
    assert len(server.history) == before + 1


def test_refuse_to_start_without_valid_credentials(tmp_path, keys, other_keys, lenet):
    with pytest.raises(CredentialsError, match="does not exist"):
        DealerService("127.0.0.2:0", tmp_path / "missing")
    # a certificate from another CA next to this deployment's ca.pem
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "ca.pem").write_bytes((keys / "ca.pem").read_bytes())
    for ext in ("pem", "key"):
        (mixed / f"party0.{ext}").write_bytes((other_keys / f"party0.{ext}").read_bytes())
    with pytest.raises(CredentialsError, match="not issued by"):
        InferenceServer(lenet[0], SHAPE, "127.0.0.3:0", "127.0.0.2:1", mixed)
    with pytest.raises(CredentialsError):
        InferenceClient("127.0.0.3:1", "127.0.0.2:1", build("lenet"), SHAPE,
                        Credentials.load(keys, "party0"))


def test_architecture_mismatch_is_refused(services, keys):
    dealer, server = services
    with pytest.raises(ServiceError, match="architecture differs"):
        query(server.address, dealer.address, build("network1"), SHAPE, _inputs(1, 0), keys,
              timeout=10)


def test_restarted_dealer_is_picked_up(keys, lenet):
    first = DealerService(f"{DEALER_HOST}:0", keys).start()
    address = first.address
    with InferenceServer(lenet[0], SHAPE, f"{SERVER_HOST}:0", address, keys,
                         timeout=10) as server:
        x = _inputs(1, seed=7)
        y, _ = query(server.address, address, build("lenet"), SHAPE, x, keys, timeout=10)
        _check_twin(lenet[1], x, y)
        open_session = InferenceClient(server.address, address, build("lenet"), SHAPE, keys,
                                       timeout=10).open()
        first.shutdown()
        # a session open when the dealer went away fails with a clear error, never hangs
        with pytest.raises(CommError, match="dealer"):
            open_session.query(x)
        open_session.close()
        t0 = time.monotonic()
        with pytest.raises(ServiceError, match="cannot use the dealer"):
            query(server.address, address, build("lenet"), SHAPE, x, keys, timeout=5)
        assert time.monotonic() - t0 < 30
        with DealerService(address, keys):
            y, _ = query(server.address, address, build("lenet"), SHAPE, x, keys, timeout=10)
            _check_twin(lenet[1], x, y)


def test_dead_server_gives_a_clear_error(keys):
    with pytest.raises(PeerTimeoutError, match="could not connect to the model owner"):
        InferenceClient("127.0.0.3:1", "127.0.0.2:1", build("lenet"), SHAPE, keys,
                        timeout=1).open()


def test_preprocessed_pool_is_served_once(keys, tmp_path):
    model = _model("network1", seed=3)
    graph = convert(model, SHAPE)
    pool = tmp_path / "pool"
    stats = preprocess_pool(graph, 2, 2, pool)
    assert stats["items"] > 0
    with DealerService(f"{DEALER_HOST}:0", keys, store=pool) as dealer, \
            InferenceServer(model, SHAPE, f"{SERVER_HOST}:0", dealer.address, keys,
                            timeout=30) as server:
        with InferenceClient(server.address, dealer.address, build("network1"), SHAPE,
                             keys, timeout=30) as c:
            for q in range(3):  # two from the pool, the third generated on demand
                x = _inputs(2, seed=q)
                y, _ = c.query(x)
                _check_twin(graph, x, y)
        deadline = time.monotonic() + 10
        while not dealer.history and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dealer.history[0]["pooled"] == stats["items"]
        assert dealer.history[0]["items"] > stats["items"]
    # every pooled item was consumed once: nothing is left, and nothing is served again
    again = MaterialPool(pool)
    assert sum(again.remaining().values()) == 0
    again.close()


def test_server_refuses_oversized_batch_on_the_client_side(services, keys):
    dealer, server = services
    with InferenceClient(server.address, dealer.address, build("lenet"), SHAPE, keys,
                         timeout=30) as c:
        with pytest.raises(ValueError, match="at most"):
            c.query(torch.randn(server.max_batch + 1, *SHAPE))
        with pytest.raises(ValueError, match="shape"):
            c.query(torch.randn(1, 2, 28, 28))


def test_cli_query_json(services, keys, lenet, tmp_path):
    from typer.testing import CliRunner

    from veil.cli import app

    dealer, server = services
    images = (np.random.default_rng(0).random((2, 28, 28)) * 255).astype(np.uint8)  # not-secret
    np.save(tmp_path / "x.npy", images)
    res = CliRunner().invoke(app, ["query", "--server", server.address, "--dealer",
                                   dealer.address, "--model", "lenet", "--keys", str(keys),
                                   "--images", str(tmp_path / "x.npy"), "--json"])
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.stdout[res.stdout.index("{"):])
    from veil.data import MNIST_MEAN, MNIST_STD

    x = (torch.from_numpy(images).double() / 255 - MNIST_MEAN) / MNIST_STD
    _check_twin(lenet[1], x.unsqueeze(1), torch.tensor(out["logits"], dtype=torch.float64))
    assert len(out["labels"]) == 2 and out["reports"][0]["online_rounds"] > 0


def test_load_images_formats(tmp_path):
    from PIL import Image

    from veil.cli.service import load_images
    from veil.models import entry

    e = entry("lenet")
    img = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    Image.fromarray(img).save(tmp_path / "one.png")
    x = load_images(tmp_path / "one.png", SHAPE, "none", e)
    assert x.shape == (1, 1, 28, 28)
    assert torch.allclose(x[0, 0], torch.from_numpy(img).double() / 255.0)
    idx = tmp_path / "images-idx3-ubyte"
    stack = np.stack([img, img[::-1]])
    idx.write_bytes(bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big")
                                                       for d in stack.shape) + stack.tobytes())
    x = load_images(idx, SHAPE, "auto", e, limit=1)
    assert x.shape == (1, 1, 28, 28)
    np.save(tmp_path / "f.npy", np.zeros((3, 1, 28, 28), dtype=np.float32))
    assert load_images(tmp_path / "f.npy", SHAPE, "auto", e).abs().sum() == 0


def test_unknown_session_join_is_refused(services, keys):
    dealer, _ = services
    ch = tls_connect(dealer.address, Credentials.load(keys, "party1"), "dealer", timeout=5)
    link = Link(ch, 5)
    link.send({"op": "join", "session": "nope", "ticket": os.urandom(16)})
    with pytest.raises(CommError, match="no session waits"):
        link.recv()
    ch.close()
