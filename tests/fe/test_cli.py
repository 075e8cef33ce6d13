"""``veil fe encrypt`` / ``decrypt`` on a key folder (the authority's output), end to end."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from veil import fe
from veil.cli.fe import app
from veil.fe.pipeline import authority_keys


def test_encrypt_then_decrypt_files(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("VEIL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VEIL_FE_TABLE_BITS", "16")
    _, net = trained
    keys = tmp_path / "keys"
    keys.mkdir()
    mpk, msk, key = authority_keys(net)
    fe.dump(mpk, keys / "mpk.fe")
    fe.dump(key, keys / "network.fe")
    (keys / "network.json").write_text(json.dumps(net.to_dict()))
    (keys / "client.json").write_text(json.dumps({"pixel_bits": net.pixel_bits, "inputs": 784}))
    runner = CliRunner()
    cts = tmp_path / "cts"
    res = runner.invoke(app, ["encrypt", "--keys", str(keys), "--out", str(cts),
                              "--start", "3", "--count", "2"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in cts.glob("*.fe")) == ["00003.fe", "00004.fe"]
    # The folder that goes to the server holds ciphertexts only: the labels stay with the client.
    assert sorted(p.name for p in cts.iterdir()) == ["00003.fe", "00004.fe"]
    client_labels = tmp_path / "cts.labels.json"
    assert set(json.loads(client_labels.read_text())) == {"00003.fe", "00004.fe"}
    res = runner.invoke(app, ["encrypt", "--keys", str(keys), "--out", str(cts),
                              "--labels", str(cts / "labels.json"), "--count", "1"])
    assert res.exit_code == 1 and "sent to the server" in res.output
    assert not (cts / "labels.json").exists()
    res = runner.invoke(app, ["decrypt", str(cts), "--keys", str(keys), "--json",
                              "--labels", str(client_labels)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    from veil.data import load_mnist

    x, _ = load_mnist("test")
    expected = net.quadratic(net.encode(x[3:5])).tolist()
    assert [r["outputs"] for r in report["results"]] == expected
    assert report["images"] == 2 and report["accuracy"] is not None
    assert all(r["true"] is not None for r in report["results"])


def test_missing_keys_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["decrypt", str(tmp_path), "--keys", str(tmp_path / "none")])
    assert res.exit_code == 1
    assert "veil fe keygen" in res.output
