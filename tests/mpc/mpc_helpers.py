"""Helpers for the MPC tests: run a job locally and check both parties agree."""

import torch

import veil


def run_both(job, **kwargs):
    """Run ``job`` on the in-memory transport; both parties' results must be identical."""
    r0, r1 = veil.run(job, timeout=20, **kwargs)
    _assert_same(r0, r1)
    return r0


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            if k != "rank" and not k.startswith(("online", "offline")):
                _assert_same(a[k], b[k])
    else:
        assert a == b


def assert_close(got, want, atol):
    want = torch.as_tensor(want).to(torch.float64)
    got = got.to(torch.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= atol, f"max error {err} > {atol}"


def bit_frequencies(x: torch.Tensor) -> torch.Tensor:
    """How often each of the 64 bits is set over the elements of an int64 tensor."""
    return ((x.unsqueeze(-1) >> torch.arange(64)) & 1).reshape(-1, 64).double().mean(0)


def record_received(party) -> list:
    """Record everything ``party`` receives from its peer in exchanges (its view)."""
    received = []
    orig = party.peer.exchange

    def recording(obj):
        got = orig(obj)
        received.append(got)
        return got

    party.peer.exchange = recording
    return received
