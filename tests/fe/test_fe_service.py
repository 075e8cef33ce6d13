"""TCP service: answers, refuses foreign ciphertexts, never hangs on a silent peer."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from veil import fe
from veil.fe.pipeline import EncryptedClassifier, authority_keys
from veil.fe.quadnet import IntQuadNet
from veil.fe.service import ServiceError, query, start_server


@pytest.fixture(scope="module")
def tiny():
    net = IntQuadNet(P=np.array([[1, 0], [2, -1], [0, 1], [1, 1], [1, 0]]),
                     D=np.array([[1, 0, 2], [-1, 3, 0]]), scale=1.0, bias=np.zeros(3),
                     pixel_bits=2, weight_bits=3, head_bits=3, bound=10_000)
    return net, authority_keys(net)


def test_round_trip_and_errors(tiny, solver):
    net, (mpk, _, key) = tiny
    server = start_server(EncryptedClassifier(mpk, key, net, solver), timeout=1.0)
    address = ("127.0.0.1", server.port)
    try:
        x = np.array([1, 2, 3, 0, 1])
        reply = query(address, fe.encrypt(mpk, x))
        assert reply["outputs"] == net.quadratic(x[None])[0].tolist()
        assert reply["label"] == int(np.argmax(reply["outputs"]))
        other, _ = fe.setup(5)
        with pytest.raises(ServiceError, match="another master public key"):
            query(address, fe.encrypt(other, x))
        # A silent peer is dropped after the timeout; the server keeps serving.
        with socket.create_connection(address) as silent:
            time.sleep(1.3)
            silent.settimeout(2)
            assert silent.recv(1) == b""
        assert query(address, fe.encrypt(mpk, x))["outputs"] == reply["outputs"]
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ServiceError, match="cannot reach"):
        query(address, fe.encrypt(mpk, np.zeros(5, np.int64)), timeout=1.0)
