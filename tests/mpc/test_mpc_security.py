"""Statistical and exact checks that shares and views leak nothing about the inputs."""

import hashlib
import threading

import torch
from mpc_helpers import bit_frequencies, record_received

import veil
import veil.mpc.launch as launch_mod
import veil.mpc.party as party_mod
from veil.csprng import CSPRNG

N = 8192


def test_single_share_of_constant_is_uniform_per_bit():
    # A share of a constant (here 0 and 1.0) must look uniform: every bit set with
    # frequency 1/2 (5 sigma = 5 * 0.5 / sqrt(N) ~ 0.028).
    def job(party, value):
        x = party.share(torch.full((N,), value) if party.rank == 0 else None, owner=0,
                        shape=(N,))
        y = x * 3 + 1.0  # a derived share must be uniform too
        return x.share, y.share

    for value in (0.0, 1.0):
        (s0, d0), (s1, d1) = veil.run(job, args=(value,))
        for share in (s0, s1, d0, d1):
            freq = bit_frequencies(share)
            assert (freq - 0.5).abs().max().item() < 0.028, freq
        # The shares do reconstruct the constant (the test can fail).
        assert torch.equal(s0 + s1, torch.full((N,), int(value * 65536)))


def test_product_output_share_is_uniform():
    def job(party):
        x = party.share(torch.ones(N) if party.rank == 0 else None, owner=0, shape=(N,))
        y = party.share(torch.ones(N) if party.rank == 1 else None, owner=1, shape=(N,))
        return (x * y).share

    z0, z1 = veil.run(job)
    for share in (z0, z1):
        assert (bit_frequencies(share) - 0.5).abs().max().item() < 0.028


class _DeterministicCSPRNG(CSPRNG):
    """CSPRNG whose unseeded instances are keyed by (thread name, counter): replayable runs."""

    counters: dict = {}
    lock = threading.Lock()

    def __init__(self, seed=None):
        if seed is None:
            name = threading.current_thread().name
            with self.lock:
                i = self.counters.get(name, 0)
                self.counters[name] = i + 1
            seed = hashlib.sha256(f"{name}/{i}".encode()).digest()[:16]
        super().__init__(seed)


def _view_of_party1(value):
    def job(party):
        # record everything party 1 receives from party 0
        received = record_received(party) if party.rank == 1 else []
        x = party.share(value if party.rank == 0 else None, owner=0, shape=(N,))
        w = party.share(torch.full((N, 4), 0.5) if party.rank == 1 else None, owner=1,
                        shape=(N, 4))
        y = (x * x).sum() + (x.unsqueeze(0) @ w).sum()
        return x.share, y.share, received

    return veil.run(job)


def test_non_owner_share_is_independent_of_owner_value(monkeypatch):
    # Same randomness, different inputs: party 1's share is bit-identical, party 0's is not.
    monkeypatch.setattr(party_mod, "CSPRNG", _DeterministicCSPRNG)
    monkeypatch.setattr(launch_mod, "CSPRNG", _DeterministicCSPRNG)

    def job(party, value):
        x = party.share(value if party.rank == 0 else None, owner=0, shape=(16,))
        return x.share

    shares = []
    for value in (torch.zeros(16), torch.linspace(-1000, 1000, 16)):
        _DeterministicCSPRNG.counters = {}
        shares.append(veil.run(job, args=(value,)))
    (a0, a1), (b0, b1) = shares
    assert torch.equal(a1, b1)
    assert not torch.equal(a0, b0)


def test_non_owner_view_is_uniform_whatever_the_owner_value():
    # Everything party 1 receives during products (masked openings x - a) is uniform per bit,
    # for a zero input and for a large constant input alike.
    for value in (torch.zeros(N), torch.full((N,), 1000.0)):
        _, (_, _, view) = _view_of_party1(value)
        assert len(view) == 2  # one opening per product
        for msg in view:
            for t in msg:
                freq = bit_frequencies(t.flatten())
                assert (freq - 0.5).abs().max().item() < 0.028, freq


def test_a_used_fss_key_does_not_come_back_through_serialisation():
    """Packing a consumed key refuses: unpacking the bytes would give a fresh key."""
    import numpy as np
    import pytest

    from veil.fss import KeyReuseError, TreeKey, dcf_eval, dcf_gen

    k0, _ = dcf_gen(np.array([3, 9], np.uint64), 1, 8, 1)
    packed, parts = k0.pack(), k0.to_parts()  # fine before use
    dcf_eval(k0, np.array([1, 2], np.uint64))
    for serialise in (k0.pack, k0.to_parts):
        with pytest.raises(KeyReuseError, match="never serialised again"):
            serialise()
    assert TreeKey.unpack(packed, "dcf", 0, 8, 1).count == 2  # (bytes taken before use)
    assert parts["seeds"].shape[1] == 2


def test_a_gate_mask_hides_one_value_only_and_is_dropped_once_used():
    """Two openings ``x + r`` and ``x' + r`` would reveal ``x - x'``: refused."""
    import numpy as np
    import pytest

    from veil.fss import KeyReuseError, gates

    for keygen, mask, finish in ((gates.sign_keygen, gates.sign_mask, gates.sign_finish),
                                 (gates.eq_keygen, gates.eq_mask, gates.eq_finish)):
        m0, m1 = keygen(2)
        x = np.array([5, 7], np.uint64)
        xh = mask(m0, x)
        with pytest.raises(KeyReuseError, match="already masked"):
            mask(m0, x + np.uint64(1))
        finish(m0, 0, xh[0] if isinstance(xh, tuple) else xh)
        assert not {"r", "rw", "c"} & set(m0)  # the mask shares are gone
        with pytest.raises(KeyReuseError):
            mask(m0, x)
        with pytest.raises(KeyReuseError):
            finish(m0, 0, x)
        # the untouched half still works, once
        out = mask(m1, x)
        assert out is not None


def test_out_of_range_inputs_and_weights_fail_locally_before_any_party_starts(monkeypatch):
    """A value outside the fixed-point range is refused up front, never mid-protocol."""
    import pytest
    from torch import nn

    import veil.nn.inference as inference
    from veil.nn.inference import secure_inference

    started = []
    monkeypatch.setattr(inference, "run", lambda *a, **k: started.append(1))
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="input has a value outside the fixed-point range"):
        secure_inference(net, torch.tensor([[1.0, 2.0**50, 3.0]]))
    with torch.no_grad():
        net[0].weight[0, 0] = 1e15
    with pytest.raises(ValueError, match=r"parameter .*weight has a value outside"):
        secure_inference(net, torch.ones(1, 3))
    assert started == []
