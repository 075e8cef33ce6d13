"""Encrypted inference against the plaintext twin, key separation, serialisation, misuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from veil.he import (
    Client,
    EncryptedBatch,
    Polynomial,
    PublicKeys,
    Server,
    Square,
    convert,
    encrypted_inference,
    plan,
)
from veil.he.ckks import dump, unpack


def random_model(seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A random HE-friendly model: conv or linear front, square/poly activations."""
    g = torch.Generator().manual_seed(seed)
    rnd = np.random.default_rng(seed)  # not-secret: test model shapes
    layers: list[nn.Module] = []
    if rnd.random() < 0.5:
        shape = (1, 8, 8)
        ch = int(rnd.integers(1, 4))
        layers += [nn.Conv2d(1, ch, 3, stride=int(rnd.integers(1, 3))), nn.Flatten()]
        width = ch * (6 if layers[0].stride[0] == 1 else 3) ** 2
        if rnd.random() < 0.5:
            layers.insert(1, nn.AvgPool2d(1))
    else:
        shape = (int(rnd.integers(5, 40)),)
        width = int(rnd.integers(3, 30))
        layers.append(nn.Linear(shape[0], width))
    for _ in range(int(rnd.integers(1, 3))):
        layers.append(Square() if rnd.random() < 0.6 else
                      Polynomial(tuple(rnd.uniform(-0.5, 0.5, 3))))
        nxt = int(rnd.integers(2, 20))
        layers.append(nn.Linear(width, nxt))
        width = nxt
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return net, shape


@pytest.mark.parametrize("layout", ["vector", "batch"])
@pytest.mark.parametrize("seed", range(3))
def test_outputs_match_plaintext_within_the_stated_error(seed, layout):
    net, shape = random_model(seed)
    x = torch.rand(3, *shape) * 2 - 1
    out, report = encrypted_inference(net, x, layout=layout)
    want = net.double()(x.double()).detach()
    err = (out.double() - want).abs().max().item()
    assert err <= report.error_bound, (err, report.error_bound)
    assert err == pytest.approx(report.max_abs_error, rel=1e-3, abs=1e-6)
    assert report.error_bound < 1e-2 * max(1.0, want.abs().max().item())  # the bound says something
    assert report.n_images == 3 and report.bytes_to_server > 0 and report.bytes_to_client > 0
    assert report.ciphertexts_in == (3 if layout == "vector" else int(np.prod(shape)))


def test_many_images_share_ciphertexts_in_the_batch_layout():
    net = nn.Sequential(nn.Linear(4, 3), Square(), nn.Linear(3, 2))
    x = torch.rand(50, 4)
    out, report = encrypted_inference(net, x, layout="batch")
    assert report.ciphertexts_in == 4  # one per feature, all 50 images in its slots
    assert torch.allclose(out, net(x), atol=1e-4)


@pytest.fixture(scope="module")
def small():
    net = nn.Sequential(nn.Linear(6, 4), Square(), nn.Linear(4, 3))
    g = convert(net, (6,))
    client = Client(plan(g, "vector"))
    return net, g, client


def test_ciphertexts_do_not_decrypt_under_another_key(small):
    net, g, client = small
    x = np.random.default_rng(1).uniform(-1, 1, (2, 6))  # not-secret: test data
    enc = client.encrypt(x)
    other = Client(client.spec)
    assert np.allclose(client.decrypt(enc, features=6), x, atol=1e-6)
    wrong = other.decrypt(enc, features=6)
    assert np.abs(wrong - x).min() > 1e-3 and np.abs(wrong).max() > 1e3  # noise, not the data
    out = Server(g, client.public_keys()).evaluate(enc)
    assert np.abs(other.decrypt(out) - g.forward(x)).max() > 1.0


def test_public_keys_carry_no_secret_key(small, tmp_path):
    _, g, client = small
    data = client.public_keys().to_bytes()
    header, blobs = unpack(data)
    assert header["kind"] == "he-public-keys" and len(blobs) == 3
    secret = dump(client._secret_key)
    assert all(secret[100:164] not in b for b in blobs)
    keys = PublicKeys.from_bytes(data)
    assert not hasattr(keys, "secret_key")
    # the saved client round-trips (secret key file, mode 0600)
    path = tmp_path / "client.key"
    client.save(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    again = Client.load(path)
    enc = client.encrypt(np.ones((1, 6)))
    assert np.allclose(again.decrypt(enc, features=6), 1.0, atol=1e-6)


def test_ciphertexts_serialise(small):
    net, g, client = small
    x = np.random.default_rng(2).uniform(-1, 1, (2, 6))  # not-secret: test data
    enc = client.encrypt(x)
    server = Server(g, PublicKeys.from_bytes(client.public_keys().to_bytes()))
    back = EncryptedBatch.from_bytes(server.ctx, enc.to_bytes())
    out = EncryptedBatch.from_bytes(client.ctx, server.evaluate(back).to_bytes())
    assert np.abs(client.decrypt(out) - g.forward(x)).max() < 1e-4


def test_misuse_is_refused(small):
    net, g, client = small
    other = convert(nn.Sequential(nn.Linear(7, 4), Square(), nn.Linear(4, 3)), (7,))
    with pytest.raises(ValueError, match="another model"):
        Server(other, client.public_keys())
    deeper = convert(nn.Sequential(nn.Linear(6, 4), Square(), nn.Linear(4, 3), Square(),
                                   nn.Linear(3, 3)), (6,))
    with pytest.raises(ValueError, match="needs 5 multiplicative levels"):
        Server(deeper, client.public_keys())
    with pytest.raises(ValueError, match="features"):
        client.encrypt(np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        client.encrypt(np.full((1, 6), np.nan))
    with pytest.raises(ValueError, match="bad magic"):
        EncryptedBatch.from_bytes(client.ctx, b"garbage")
    with pytest.raises(ValueError, match="shape"):
        encrypted_inference(net, torch.zeros(2, 7))
