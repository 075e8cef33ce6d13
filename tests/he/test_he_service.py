"""The TCP service: answers ciphertexts, refuses garbage with an error reply, never hangs."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from torch import nn

from veil.he import Square
from veil.he.ckks import pack, unpack
from veil.he.service import HEConnection, ServiceError, recv_message, send_message, start_server


@pytest.fixture(scope="module")
def served():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), Square(), nn.Linear(4, 3)).double()
    server = start_server(net, (6,), timeout=5.0)
    yield net, server
    server.shutdown()


@pytest.mark.parametrize("layout", ["vector", "batch"])
def test_queries_match_plaintext(served, layout):
    net, server = served
    x = np.random.default_rng(0).uniform(-1, 1, (3, 6))  # not-secret: test data
    with HEConnection(("127.0.0.1", server.port), layout) as conn:
        for _ in range(2):  # keys sent once, queried twice
            out = conn.infer(x)
            assert np.abs(out - net(torch.from_numpy(x)).detach().numpy()).max() < 1e-4


def test_bad_requests_get_error_replies(served):
    _, server = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        send_message(s, b"garbage")
        header, _ = unpack(recv_message(s))
        assert header["kind"] == "error" and "bad magic" in header["error"]
        send_message(s, pack({"op": "infer", "key_id": "nope"}, []))
        header, _ = unpack(recv_message(s))
        assert "send the public keys first" in header["error"]


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceError, match="cannot reach"):
        HEConnection(("127.0.0.1", port), timeout=2)
