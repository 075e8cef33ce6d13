"""Conversion: HE-friendly ops match PyTorch exactly; anything else is refused by name and line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from veil.he import Polynomial, Square, convert
from veil.nn import UnsupportedModelError


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 2 * 2, 5)

    def forward(self, x):
        h = self.bn(self.conv(x))
        h = F.avg_pool2d(h, 2)
        h = h.pow(2) * 0.5 + 1.0
        h = h.view(h.size(0), -1)
        return self.fc(h) ** 2 - 3


def test_supported_ops_match_pytorch():
    torch.manual_seed(0)
    net = Custom()
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    g = convert(net, (2, 8, 8))
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    want = net.double().eval()(x).detach().numpy()
    np.testing.assert_allclose(g.forward(x), want, rtol=1e-10, atol=1e-10)
    # conv+bn+pool fuse into one affine map; the scalar ops into the next one
    assert [op.kind for op in g.ops] == ["affine", "square", "affine", "square", "affine"]


def test_polynomial_and_square_modules():
    net = nn.Sequential(nn.Linear(5, 4), Polynomial((0.1, 0.5, 0.25)), nn.Linear(4, 3), Square(),
                        nn.Linear(3, 2), Polynomial((1.0, 2.0)))
    g = convert(net, (5,))
    assert [op.kind for op in g.ops] == ["affine", "poly", "affine", "square", "affine"]
    assert g.depth == 6
    x = torch.randn(3, 5, dtype=torch.float64)
    np.testing.assert_allclose(g.forward(x), net.double()(x).detach().numpy(), atol=1e-12)


def test_conversion_leaves_the_model_alone():
    net = nn.Sequential(nn.Linear(3, 2))
    convert(net, (3,))
    assert net[0].weight.dtype == torch.float32


class WithRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + x


class Cube(nn.Module):
    def forward(self, x):
        return x ** 3


@pytest.mark.parametrize("model,what", [
    (WithRelu(), "the function relu"),
    (nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "the layer ReLU"),
    (nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), "the layer Sigmoid"),
    (Residual(), "residual"),
    (Cube(), "the power 3"),
])
def test_unsupported_ops_are_refused_naming_op_and_line(model, what):
    with pytest.raises(UnsupportedModelError, match=what) as info:
        convert(model, (4,))
    msg = str(info.value)
    assert "HE inference" in msg
    if not isinstance(model, nn.Sequential):
        assert "test_he_convert.py" in msg  # the user's source line


def test_max_pool_is_refused():
    with pytest.raises(UnsupportedModelError, match="MaxPool2d"):
        convert(nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 6, 6))


def test_bad_input_is_reported():
    g = convert(nn.Linear(3, 2), (3,))
    with pytest.raises(ValueError, match="shape"):
        g.forward(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        g.forward(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(TypeError, match="floating"):
        g.forward(torch.zeros(2, 3, dtype=torch.int64))
