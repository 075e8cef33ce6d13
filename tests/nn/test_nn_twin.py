"""The fixed-point twin against float PyTorch, and its encoding checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.nn.nn_helpers import PoolNet, ResidualNet, randomize_batchnorm
from veil.models import build
from veil.nn import convert
from veil.nn.twin import decode, encode, twin_forward, window_sum


@pytest.mark.parametrize("model, shape", [
    (build("lenet"), (1, 28, 28)),
    (build("network2"), (1, 28, 28)),
    (ResidualNet(), (2, 6, 6)),
    (PoolNet(), (1, 8, 8)),
])
def test_twin_close_to_float(model, shape) -> None:
    gen = torch.Generator().manual_seed(0)
    model = randomize_batchnorm(model, gen)
    graph = convert(model, shape)
    x = torch.randn(4, *shape, generator=gen)
    with torch.no_grad():
        ref = model(x).double()
    # a few ulp (2^-16) per layer, amplified by the weights
    assert (twin_forward(graph, x) - ref).abs().max() < 5e-3


@given(st.integers(8, 20), st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=16))
def test_encode_decode_roundtrip(frac_bits, values) -> None:
    x = torch.tensor(values, dtype=torch.float64)
    assert (decode(encode(x, frac_bits), frac_bits) - x).abs().max() <= 2.0 ** -(frac_bits + 1)


def test_encode_refuses_nan_and_overflow() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode(torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="range"):
        encode(torch.tensor([2.0 ** 50]))


def test_window_sum_matches_avg_pool() -> None:
    x = torch.randint(-100, 100, (2, 3, 7, 9))  # plaintext test data
    s = window_sum(x, (3, 2), (2, 1), (1, 0))
    ref = torch.nn.functional.avg_pool2d(x.double(), (3, 2), (2, 1), (1, 0)) * 6
    assert torch.equal(s.double(), ref.round())
