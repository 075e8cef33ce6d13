"""Deployment credentials and mutual TLS: who may join a run, and what the wire shows."""

import datetime as dt
import os
import socket
import stat
import threading
import time

import pytest
import torch

import veil
from veil.comm.credentials import (
    ROLES,
    Credentials,
    CredentialsError,
    ephemeral,
    init_keys,
)
from veil.comm.errors import CommError, PeerTimeoutError
from veil.comm.tcp import _hello, connect_mesh, listen, tls_connect
from veil.comm.wire import to_bytes
from veil.mpc import PartyFailedError

NAMES = ("party 0", "party 1", "the dealer")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    init_keys(d)
    return d


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory):
    """Another deployment (another CA): must never be accepted by the first."""
    d = tmp_path_factory.mktemp("other")
    init_keys(d)
    return d


def _creds(d):
    return {r: Credentials.load(d, r) for r in ROLES}


# ------------------------------------------------------------------------------ files

def test_init_writes_ca_and_role_keys_private(keys):
    for role in ROLES:
        assert Credentials.load(keys, role).role == role
        mode = stat.S_IMODE(os.stat(keys / f"{role}.key").st_mode)
        assert mode == 0o600
    assert stat.S_IMODE(os.stat(keys / "ca.key").st_mode) == 0o600
    with pytest.raises(CredentialsError, match="already holds credentials"):
        init_keys(keys)


def test_load_errors_name_the_problem(tmp_path, keys, other_keys):
    with pytest.raises(CredentialsError, match="does not exist"):
        Credentials.load(tmp_path / "nope", "dealer")
    with pytest.raises(CredentialsError, match="unknown role"):
        Credentials.load(keys, "admin")
    d = tmp_path / "d"
    d.mkdir()
    (d / "ca.pem").write_bytes((keys / "ca.pem").read_bytes())
    with pytest.raises(CredentialsError, match="dealer.pem is missing"):
        Credentials.load(d, "dealer")
    # a party's certificate renamed as the dealer's: refused (the role is in the certificate)
    (d / "dealer.pem").write_bytes((keys / "party1.pem").read_bytes())
    (d / "dealer.key").write_bytes((keys / "party1.key").read_bytes())
    with pytest.raises(CredentialsError, match="for role 'party1', not 'dealer'"):
        Credentials.load(d, "dealer")
    (d / "dealer.pem").write_bytes((keys / "dealer.pem").read_bytes())
    with pytest.raises(CredentialsError, match="does not match"):
        Credentials.load(d, "dealer")
    (d / "dealer.key").write_bytes(b"garbage")
    with pytest.raises(CredentialsError, match="not an unencrypted PEM private key"):
        Credentials.load(d, "dealer")
    (d / "dealer.key").write_bytes((keys / "dealer.key").read_bytes())
    (d / "ca.pem").write_bytes((other_keys / "ca.pem").read_bytes())
    with pytest.raises(CredentialsError, match="not issued by this ca.pem"):
        Credentials.load(d, "dealer")


def test_expired_certificate_is_refused(tmp_path, keys):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_key = serialization.load_pem_private_key((keys / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((keys / "ca.pem").read_bytes())
    old = x509.load_pem_x509_certificate((keys / "dealer.pem").read_bytes())
    now = dt.datetime.now(dt.timezone.utc)
    expired = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca.subject)
               .public_key(old.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=10))
               .not_valid_after(now - dt.timedelta(days=1))
               .sign(ca_key, hashes.SHA256()))
    for name in ("ca.pem", "dealer.key"):
        (tmp_path / name).write_bytes((keys / name).read_bytes())
    (tmp_path / "dealer.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CredentialsError, match="dealer.pem expired on"):
        Credentials.load(tmp_path, "dealer")


def test_repr_never_shows_the_key(keys):
    creds = Credentials.load(keys, "party0")
    assert "PRIVATE" not in repr(creds) and creds.key_pem.decode() not in repr(creds)


# ------------------------------------------------------------------------------ the mesh

def _mesh_in_threads(creds, ranks, connect_timeout=2.0, addresses=None, listeners=None):
    """connect_mesh for each of ``ranks`` in a thread; returns {rank: channels or exception}."""
    listeners = listeners or {r: listen(("127.0.0.1", 0)) for r in (0, 1)}
    addrs = addresses or [f"127.0.0.1:{listeners[r].getsockname()[1]}" for r in (0, 1)] + [
        "127.0.0.1:0"]
    out = {}

    def go(rank):
        try:
            out[rank] = connect_mesh(rank, addrs, 5.0, NAMES, creds[rank], session=b"s",
                                     listener=listeners.get(rank),
                                     connect_timeout=connect_timeout)
        except Exception as exc:  # noqa: BLE001 - inspected by the test
            out[rank] = exc

    threads = [threading.Thread(target=go, args=(r,)) for r in ranks]
    for t in threads:
        t.start()
    return out, threads, addrs, listeners


def _finish(out, threads, listeners):
    for t in threads:
        t.join(20)
    for s in listeners.values():
        s.close()
    for v in out.values():
        if isinstance(v, dict):
            for ch in v.values():
                ch.close()


def test_impostor_without_credentials_cannot_join_as_the_dealer(keys):
    honest = _creds(keys)
    out, threads, addrs, listeners = _mesh_in_threads(
        {0: honest["party0"], 1: honest["party1"]}, (0, 1), connect_timeout=1.5)
    time.sleep(0.2)
    # knows the addresses, speaks the old plaintext hello claiming rank 2, has no certificate
    for addr in addrs[:2]:
        host, port = addr.split(":")
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(b"VEILHELO" + (2).to_bytes(4, "little") + (4).to_bytes(4, "little")
                      + b"veil")
            try:
                reply = s.recv(100)
            except OSError:  # reset by the listener
                reply = b""
            assert b"VEILOK" not in reply
    t0 = time.perf_counter()
    _finish(out, threads, listeners)
    assert time.perf_counter() - t0 < 10  # no hang
    for rank in (0, 1):
        err = out[rank]
        assert isinstance(err, PeerTimeoutError), err
        assert "the dealer never connected" in str(err)
        if rank == 1:  # party 1 saw the impostor's attempt (party 0 may see only party 1's)
            assert "failed authentication" in str(err)


def test_wrong_ca_refused_both_ways(keys, other_keys):
    honest, foreign = _creds(keys), _creds(other_keys)
    # a dealer of another deployment connects to honest parties: refused
    out, threads, addrs, listeners = _mesh_in_threads(
        {0: honest["party0"], 1: honest["party1"], 2: foreign["dealer"]}, (0, 1, 2),
        connect_timeout=1.5)
    _finish(out, threads, listeners)
    assert isinstance(out[2], CredentialsError)
    assert "party 0" in str(out[2]) and "authentication" in str(out[2])
    assert isinstance(out[0], PeerTimeoutError) and "the dealer never connected" in str(out[0])
    # an honest dealer reaching a foreign process at party 0's address: refused at once
    out, threads, addrs, listeners = _mesh_in_threads(
        {0: foreign["party0"], 1: honest["party1"], 2: honest["dealer"]}, (0, 1, 2),
        connect_timeout=1.5)
    _finish(out, threads, listeners)
    assert isinstance(out[2], CredentialsError), out[2]
    assert "party 0 at 127.0.0.1" in str(out[2]) and "failed authentication" in str(out[2])


def test_a_party_key_cannot_pose_as_the_dealer(keys):
    honest = _creds(keys)
    out, threads, addrs, listeners = _mesh_in_threads({0: honest["party0"]}, (0,),
                                                      connect_timeout=1.5)
    time.sleep(0.1)
    # party 1's (valid) key, but claiming rank 2 in the hello: refused with the reason
    ch = tls_connect(addrs[0], honest["party1"], "party0", timeout=2)
    ch._stream.sendall(_hello(2, b"s"))
    answer = ch._stream.recv_exact(8)
    assert answer == b"VEILNO\0\0"
    ch.close()
    _finish(out, threads, listeners)
    assert isinstance(out[0], PeerTimeoutError)
    assert "rank 2 does not match the party1 certificate" in str(out[0])
    with pytest.raises(CredentialsError, match="needs the dealer credentials"):
        connect_mesh(2, addrs, 1, NAMES, honest["party1"])


def test_mismatched_session_is_named_on_both_sides():
    creds = ephemeral()
    listeners = {r: listen(("127.0.0.1", 0)) for r in (0, 1)}
    addrs = [f"127.0.0.1:{listeners[r].getsockname()[1]}" for r in (0, 1)] + ["127.0.0.1:0"]
    out = {}

    def go(rank, session):
        try:
            out[rank] = connect_mesh(rank, addrs, 5.0, NAMES, creds[ROLES[rank]],
                                     session=session, listener=listeners.get(rank),
                                     connect_timeout=1.5)
        except Exception as exc:  # noqa: BLE001
            out[rank] = exc

    ts = [threading.Thread(target=go, args=(0, b"run-a")),
          threading.Thread(target=go, args=(1, b"run-b"))]
    for t in ts:
        t.start()
    _finish(out, ts, listeners)
    assert isinstance(out[1], CommError)
    assert "party 0 refused the connection" in str(out[1]) and "session" in str(out[1])
    assert "another session" in str(out[0])


# ------------------------------------------------------------------------------ veil.run

def _send_marker_job(party):
    if party.rank == 0:
        party.send(MARKER)
        return None
    return party.recv()


MARKER = torch.arange(4096, dtype=torch.int64) * 7919 + 0x5EC12E7


class _Relay:
    """A TCP relay in front of ``target`` that records every byte it forwards."""

    def __init__(self, target):
        self.target = target
        self.sock = listen(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.captured = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            host, port = self.target.split(":")
            while True:
                try:
                    upstream = socket.create_connection((host, int(port)))
                    break
                except OSError:
                    time.sleep(0.05)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            with self.lock:
                self.captured += data
            dst.sendall(data)

    def close(self):
        self.sock.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ranks(start):
    results = {}

    def go(r):
        try:
            results[r] = start(r)
        except Exception as exc:  # noqa: BLE001
            results[r] = exc

    ts = [threading.Thread(target=go, args=(r,)) for r in (0, 1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


def test_traffic_on_the_wire_is_not_plaintext(keys):
    real = f"127.0.0.1:{_free_port()}"
    relay = _Relay(real)
    p1 = f"127.0.0.1:{_free_port()}"
    # party 0 listens on its real address; the others reach it through the relay
    own = {0: [real, p1, "127.0.0.1:0"]}
    seen = [relay.address, p1, "127.0.0.1:0"]
    try:
        results = _run_ranks(lambda r: veil.run(
            _send_marker_job if r < 2 else None, transport="tcp", rank=r,
            addresses=own.get(r, seen), credentials=keys, timeout=20))
    finally:
        relay.close()
    assert torch.equal(results[1], MARKER)
    marker = bytes(to_bytes(MARKER))
    captured = bytes(relay.captured)
    assert len(captured) > len(marker)  # the marker did go through the relay, encrypted
    assert MARKER.numpy().tobytes()[:64] not in captured
    assert b"VEIL" not in captured and b"party" not in captured


def test_rank_mode_refuses_to_start_without_credentials():
    with pytest.raises(CredentialsError, match="needs credentials"):
        veil.run(_send_marker_job, transport="tcp", rank=0,
                 addresses=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:0"])


def test_impostor_dealer_run_is_refused_and_honest_parties_fail_clearly(keys, other_keys):
    p0, p1 = _free_port(), _free_port()
    addrs = [f"127.0.0.1:{p0}", f"127.0.0.1:{p1}", "127.0.0.1:0"]
    t0 = time.perf_counter()
    results = _run_ranks(lambda r: veil.run(
        _send_marker_job if r < 2 else None, transport="tcp", rank=r, addresses=addrs,
        credentials=keys if r < 2 else other_keys, timeout=5, connect_timeout=3))
    assert time.perf_counter() - t0 < 30
    assert isinstance(results[2], PartyFailedError) and "authentication" in str(results[2])
    for r in (0, 1):
        assert isinstance(results[r], PartyFailedError)
        assert "the dealer never connected" in str(results[r])
