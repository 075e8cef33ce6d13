import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.fl.twoserver import (
    SEALED_SEED_BYTES,
    Aggregator,
    TwoServerConfig,
    client_share,
    error_bound,
    reveal,
)


def run_round(updates, weights, cfg, drop_a=(), drop_b=()):
    a, b = Aggregator("A", cfg), Aggregator("B", cfg)
    for cid, (u, w) in enumerate(zip(updates, weights, strict=True)):
        share, sealed = client_share(u, w, cfg, b.public_key)
        if cid not in drop_a:
            a.receive(cid, share)
        if cid not in drop_b:
            b.receive(cid, sealed)
    return reveal(a, b, len(updates[0]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 9), d=st.integers(1, 40),
       bits=st.sampled_from([32, 64]), drops=st.sets(st.integers(0, 8), max_size=3),
       side=st.booleans())
def test_equals_plain_fedavg_within_quantisation_bound(seed, k, d, bits, drops, side):
    rng = np.random.default_rng(seed)  # not-secret: test data
    frac = 16 if bits == 32 else 30
    cfg = TwoServerConfig(ring_bits=bits, frac_bits=frac, max_weight=1000, max_clients=16)
    scale = 10.0 ** rng.integers(-3, 2)
    updates = [rng.normal(size=d) * scale for _ in range(k)]
    weights = rng.integers(1, 1001, size=k).tolist()
    drops = {c for c in drops if c < k}
    if len(drops) == k:
        drops.pop()
    mean, weight, included = run_round(updates, weights, cfg,
                                       drop_a=drops if side else (), drop_b=() if side else drops)
    keep = [c for c in range(k) if c not in drops]
    assert included == set(keep)
    w = np.array([weights[c] for c in keep], dtype=float)
    exact = (w[:, None] * np.array([updates[c] for c in keep])).sum(0) / w.sum()
    bound = error_bound(cfg, len(keep), weight, max(np.abs(u).max() for u in updates))
    assert np.abs(mean - exact).max() <= bound
    assert abs(weight * cfg.max_weight - w.sum()) <= len(keep) * 2.0 ** -frac * cfg.max_weight


def test_aggregator_a_view_is_uniform_and_independent_of_the_update():
    cfg = TwoServerConfig(ring_bits=32, frac_bits=16, max_weight=1, max_clients=4)
    b = Aggregator("B", cfg)
    n = 20000
    views = {}
    for name, u in {"zeros": np.zeros(n), "ones": np.ones(n), "big": np.full(n, 1000.0)}.items():
        share, sealed = client_share(u, 1, cfg, b.public_key)
        views[name] = share[:n].astype(np.uint64)
        assert len(sealed) == SEALED_SEED_BYTES
    for name, v in views.items():
        # every bit of A's share is a fair coin (binomial, 6 sigma)
        bits = (v[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
        freq = bits.mean(0)
        assert np.abs(freq - 0.5).max() < 6 * 0.5 / np.sqrt(n), name
    # the share of a constant update is not constant: no trace of the value survives
    assert len(np.unique(views["zeros"])) > 0.99 * n
    # and its distribution does not depend on the update: two-sample KS on the top 16 bits
    from scipy.stats import ks_2samp
    top = {k: (v >> np.uint64(16)).astype(float) for k, v in views.items()}
    assert ks_2samp(top["zeros"], top["big"]).pvalue > 1e-4


def test_aggregator_b_sees_only_a_sealed_seed():
    cfg = TwoServerConfig()
    a, b = Aggregator("A", cfg), Aggregator("B", cfg)
    u = np.arange(10, dtype=float)
    s1, sealed1 = client_share(u, 1, cfg, b.public_key)
    s2, sealed2 = client_share(u, 1, cfg, b.public_key)
    # the same update gives unrelated uploads each time; B's payload has a fixed size
    assert not (s1 == s2).any() and sealed1 != sealed2 and len(sealed1) == SEALED_SEED_BYTES
    with pytest.raises(ValueError, match="no sealing key"):
        _ = a.public_key


def test_refusals_and_single_use():
    cfg = TwoServerConfig(ring_bits=32, frac_bits=16, max_weight=10, max_clients=8)
    b = Aggregator("B", cfg)
    with pytest.raises(ValueError, match="refusing rather than clipping"):
        client_share(np.array([cfg.value_bound * 2]), 10, cfg, b.public_key)
    with pytest.raises(ValueError, match="NaN"):
        client_share(np.array([np.nan]), 1, cfg, b.public_key)
    with pytest.raises(ValueError, match="max_weight"):
        client_share(np.zeros(3), 11, cfg, b.public_key)
    a = Aggregator("A", cfg)
    share, sealed = client_share(np.zeros(3), 1, cfg, b.public_key)
    a.receive(0, share)
    with pytest.raises(ValueError, match="already uploaded"):
        a.receive(0, share)
    with pytest.raises(ValueError, match="expected 1-D"):
        a.receive(1, share.astype(np.int64))
    with pytest.raises(ValueError, match="sealed seed"):
        b.receive(0, b"short")
    with pytest.raises(ValueError, match="no client reached both"):
        reveal(a, b, 3)
    b.receive(0, sealed)
    reveal(a, b, 3)
    assert not a.received() and not b.received()  # shares are spent by one sum


def test_distributed_noise_neither_aggregator_can_remove():
    sigma = 0.5
    cfg = TwoServerConfig(ring_bits=64, frac_bits=30, max_weight=1, max_clients=4, noise_std=sigma)
    d = 20000
    mean, weight, _ = run_round([np.zeros(d)], [1], cfg)
    # the revealed sum carries both aggregators' noise: variance 2σ²
    assert abs(mean.std() - sigma * np.sqrt(2)) < 0.03
    assert abs(mean.mean()) < 0.03 and weight == 1.0
