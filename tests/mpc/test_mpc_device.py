"""Shares on a CUDA device (runs only where one is present): same results as on CPU."""

import pytest
import torch
import torch.nn.functional as F

import veil

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

X = torch.linspace(-2, 2, 2 * 3 * 6 * 6).reshape(2, 3, 6, 6)
W = torch.linspace(1, -1, 4 * 3 * 3 * 3).reshape(4, 3, 3, 3)


def _job(party):
    x = party.share(X if party.rank == 0 else None, owner=0, shape=X.shape)
    w = party.share(W if party.rank == 1 else None, owner=1, shape=W.shape)
    y = x.conv2d(w, padding=1)
    flat = y.flatten(1)
    z = flat @ flat.t() * 0.5 + x.square().sum()
    assert y.share.device.type == party.device.type
    return y.reveal().cpu(), z.reveal().cpu()


def test_cuda_shares_match_plaintext_and_cpu():
    gy, gz = veil.run(_job, device="cuda")[0]
    cy, cz = veil.run(_job)[0]
    want_y = F.conv2d(X, W, padding=1)
    flat = want_y.flatten(1)
    want_z = flat @ flat.t() * 0.5 + (X * X).sum()
    assert (gy - want_y).abs().max() < 1e-3 and (cy - want_y).abs().max() < 1e-3
    assert (gz - want_z).abs().max() < 0.5 and (cz - want_z).abs().max() < 0.5
