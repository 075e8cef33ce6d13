import math

import numpy as np
import pytest
import torch
from scipy import stats

from veil.csprng import CSPRNG, default_generator


def test_seeded_streams_agree_and_fresh_ones_differ():
    a, b = CSPRNG(seed=b"k" * 16), CSPRNG(seed=b"k" * 16)
    assert torch.equal(a.integers((100,)), b.integers((100,)))
    assert not torch.equal(CSPRNG().integers((100,)), CSPRNG().integers((100,)))


def test_bad_seed_rejected():
    with pytest.raises(ValueError, match="16 bytes"):
        CSPRNG(seed=b"short")


def test_integers_every_bit_is_fair():
    x = CSPRNG().integers((200_000,)).numpy().view(np.uint64)
    bits = (x[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    freq = bits.mean(axis=0)
    # 64 two-sided tests at 5 sigma: a broken bit (e.g. sign or low bit stuck) fails loudly
    assert np.all(np.abs(freq - 0.5) < 5 * 0.5 / math.sqrt(len(x)))


def test_below_is_uniform_without_bias():
    draws = CSPRNG().below(7, (70_000,)).numpy()
    assert draws.min() == 0 and draws.max() == 6
    counts = np.bincount(draws, minlength=7)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_bits_and_uniform_ranges():
    g = CSPRNG()
    b = g.bits((1001,))
    assert set(b.unique().tolist()) <= {0, 1} and b.shape == (1001,)
    u = g.uniform((10_000,))
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-4


def test_normal_matches_standard_gaussian():
    z = CSPRNG().normal((50_001,), mean=2.0, std=3.0)
    assert z.shape == (50_001,) and z.dtype == torch.float64
    assert stats.kstest(((z - 2.0) / 3.0).numpy(), "norm").pvalue > 1e-4


def test_default_generator_is_per_thread_singleton():
    assert default_generator() is default_generator()
