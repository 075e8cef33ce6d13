"""QuadNet integerisation: the integer twin equals the quantisation-aware float model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veil.fe.quadnet import IntQuadNet, QuadNet, accuracy, quantise_pixels


def test_training_learns_mnist(trained, mnist_small):
    model, net = trained
    _, _, xt, yt = mnist_small
    assert accuracy(model, xt, yt) > 0.85
    assert (net.predict(xt) == yt.numpy()).mean() > 0.85


def test_integer_twin_equals_quantised_float_model(trained, mnist_small):
    model, net = trained
    _, _, xt, _ = mnist_small
    levels = quantise_pixels(xt, model.pixel_bits)
    model.quant_aware = True
    with torch.no_grad():
        float_logits = model.double()(levels.double()).numpy()
    model.float()
    model.quant_aware = False
    int_logits = net.logits(net.quadratic(net.encode(xt)))
    np.testing.assert_allclose(int_logits, float_logits, rtol=1e-9, atol=1e-6)


def test_bit_widths_and_bounds(trained, mnist_small):
    _, net = trained
    x, _, xt, _ = mnist_small
    w = net.widths
    assert w["pixel_bits"] == 3 and w["weight_bits"] <= 5 and w["head_bits"] <= 6
    assert np.abs(net.P[:-1]).max() <= 15 and np.abs(net.D).max() <= 31
    assert set(np.unique(net.encode(xt)[:, :-1])) <= set(range(8))
    y = net.quadratic(net.encode(x))
    assert np.abs(y).max() * 2 <= net.bound <= net.worst_case_bound()
    assert w["output_bits"] <= 32   # within reach of the discrete-log table


def test_serialised_network_round_trip(trained, mnist_small):
    _, net = trained
    _, _, xt, _ = mnist_small
    again = IntQuadNet.from_dict(net.to_dict())
    assert np.array_equal(again.predict(xt[:50]), net.predict(xt[:50]))
    assert again.bound == net.bound


def test_bad_inputs():
    with pytest.raises(ValueError, match="0..255"):
        quantise_pixels(torch.tensor([[300.0]]), 3)
    with pytest.raises(ValueError, match="NaN"):
        quantise_pixels(torch.tensor([[float("nan")]]), 3)
    with pytest.raises(ValueError, match="pixel_bits"):
        QuadNet(pixel_bits=1)
    net = QuadNet(n=4, k=2, outputs=3).integerise()
    with pytest.raises(ValueError, match="expects 4"):
        net.encode(np.zeros((1, 5)))
