"""``veil he keygen / encrypt / infer / decrypt`` and ``serve`` + ``encrypt --send``, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from veil.cli import he as he_cli
from veil.he.mnist import henet


@pytest.fixture
def small_net(monkeypatch):
    torch.manual_seed(0)
    net = henet(2, hidden=8).eval()
    monkeypatch.setattr(he_cli, "_model", lambda retrain=False: (net, {}))
    return net


def test_keygen_encrypt_infer_decrypt(small_net, tmp_path):
    from veil.data import mnist_tensors

    runner = CliRunner()
    keys = tmp_path / "keys"
    res = runner.invoke(he_cli.app, ["keygen", "--dir", str(keys)])
    assert res.exit_code == 0, res.output
    assert (keys / "secret.key").stat().st_mode & 0o777 == 0o600
    cts, out = tmp_path / "cts.he", tmp_path / "out.he"
    res = runner.invoke(he_cli.app, ["encrypt", "--keys", str(keys), "--count", "3",
                                     "--offset", "5", "--out", str(cts)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(he_cli.app, ["infer", str(cts), "--keys", str(keys / "public.keys"),
                                     "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(he_cli.app, ["decrypt", str(out), "--keys", str(keys), "--json",
                                     "--labels", f"{cts}.labels.json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    x, y = mnist_tensors("test", limit=8)
    with torch.no_grad():
        assert result["predictions"] == small_net(x[5:8]).argmax(1).tolist()
    assert result["accuracy"] == np.mean(np.array(result["predictions"]) == y[5:8].numpy())


def test_errors_are_one_line(small_net, tmp_path):
    runner = CliRunner()
    res = runner.invoke(he_cli.app, ["encrypt", "--keys", str(tmp_path / "none")])
    assert res.exit_code == 1 and "veil he keygen" in res.output
    bad = tmp_path / "bad.he"
    bad.write_bytes(b"not a ciphertext")
    res = runner.invoke(he_cli.app, ["keygen", "--dir", str(tmp_path / "k")])
    res = runner.invoke(he_cli.app, ["infer", str(bad), "--keys",
                                     str(tmp_path / "k" / "public.keys")])
    assert res.exit_code == 1 and "bad magic" in res.output


def test_serve_and_send(small_net, tmp_path):
    from veil.data import mnist_tensors
    from veil.he.service import start_server

    server = start_server(small_net, (1, 28, 28))
    try:
        runner = CliRunner()
        keys = tmp_path / "keys"
        assert runner.invoke(he_cli.app, ["keygen", "--dir", str(keys)]).exit_code == 0
        res = runner.invoke(he_cli.app, ["encrypt", "--keys", str(keys), "--count", "2",
                                         "--send", f"127.0.0.1:{server.port}"])
        assert res.exit_code == 0, res.output
        x, _ = mnist_tensors("test", limit=2)
        with torch.no_grad():
            assert str(small_net(x).argmax(1).tolist()) in res.output
    finally:
        server.shutdown()
