"""torch.fx conversion: every zoo model, BatchNorm folding, refusals, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.nn.nn_helpers import PoolNet, ResidualNet, randomize_batchnorm
from veil.models import ZOO, build
from veil.nn import UnsupportedModelError, convert


@pytest.mark.parametrize("name", ["network1", "network2", "lenet", "alexnet", "vgg16"])
def test_zoo_conversion_matches_pytorch(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    model = randomize_batchnorm(build(name), gen)
    graph = convert(model, ZOO[name].input_shape)
    x = torch.randn(3, *ZOO[name].input_shape, generator=gen)
    with torch.no_grad():
        expected = model(x).double()
    assert torch.allclose(graph.forward(x), expected, atol=1e-4, rtol=1e-4)


def test_resnet18_folds_every_batchnorm() -> None:
    graph = convert(build("resnet18"), (3, 224, 224))
    ops = [layer.op for layer in graph.layers]
    assert "affine" not in ops
    assert ops.count("conv2d") == 20 and ops.count("add") == 8 and ops.count("maxpool2d") == 1
    assert graph.output_shape == (1000,)


def test_residual_and_batchnorm_folding() -> None:
    gen = torch.Generator().manual_seed(2)
    model = randomize_batchnorm(ResidualNet(), gen)
    graph = convert(model, (2, 6, 6))
    ops = [layer.op for layer in graph.layers]
    assert "affine" not in ops and "add" in ops
    x = torch.randn(4, 2, 6, 6, generator=gen)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x), model(x).double(), atol=1e-5)
    unfolded = convert(model, (2, 6, 6), fold_batchnorm=False)
    assert [layer.op for layer in unfolded.layers].count("affine") == 2


def test_standalone_batchnorm_and_pools() -> None:
    gen = torch.Generator().manual_seed(3)
    model = randomize_batchnorm(PoolNet(), gen)
    graph = convert(model, (1, 8, 8))
    ops = [layer.op for layer in graph.layers]
    # BatchNorm2d after a pool stays an affine layer; BatchNorm1d after fc is folded; the
    # ReLU runs after the max pool.
    assert ops.count("affine") == 1 and ops[:4] == ["conv2d", "maxpool2d", "relu", "affine"]
    x = torch.randn(5, 1, 8, 8, generator=gen)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x), model(x).double(), atol=1e-5)


def test_sequential_with_flatten_dropout_identity() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Dropout(0.3), nn.Identity(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).eval()
    graph = convert(model, (1, 8, 8))
    assert [layer.op for layer in graph.layers] == ["conv2d", "relu", "avgpool2d", "reshape",
                                                    "linear"]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x), model(x).double(), atol=1e-5)


def test_argmax_layer() -> None:
    graph = convert(build("network1"), (1, 28, 28)).with_argmax()
    out = graph.forward(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.equal(out.sum(1), torch.ones(3, dtype=out.dtype))


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class _Scaled(nn.Module):
    def forward(self, x):
        return x * 2.0


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


@pytest.mark.parametrize("model, shape, needle", [
    (_Sigmoid(), (4,), "sigmoid"),
    (nn.Sequential(nn.Linear(4, 4), nn.Tanh()), (4,), "Tanh"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5), "groups=2"),
    (_Scaled(), (4,), "mul"),
    (nn.Sequential(nn.AdaptiveAvgPool2d(3)), (1, 5, 5), "AdaptiveAvgPool2d"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5), "ceil_mode"),
])
def test_refuses_unsupported_ops_naming_the_line(model, shape, needle) -> None:
    with pytest.raises(UnsupportedModelError, match=needle) as err:
        convert(model, shape)
    assert "used at" in str(err.value)


def test_refusal_points_at_user_source_line() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        convert(_Sigmoid(), (4,))
    assert "test_nn_graph.py" in str(err.value) and "torch.sigmoid" in str(err.value)


def test_refuses_data_dependent_control_flow() -> None:
    with pytest.raises(UnsupportedModelError, match="could not trace"):
        convert(_Branchy(), (4,))


def test_refuses_wrong_input_shape_at_conversion() -> None:
    with pytest.raises(ValueError, match="does not accept inputs"):
        convert(build("lenet"), (1, 32, 32))


@pytest.mark.parametrize("x, err, needle", [
    (torch.zeros(2, 1, 28, 27), ValueError, "shape"),
    (torch.zeros(2, 28, 28), ValueError, "shape"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.int64), TypeError, "floating-point"),
    (torch.full((2, 1, 28, 28), float("nan")), ValueError, "NaN"),
    (torch.zeros(0, 1, 28, 28), ValueError, "empty"),
])
def test_input_checks(x, err, needle) -> None:
    graph = convert(build("lenet"), (1, 28, 28))
    with pytest.raises(err, match=needle):
        graph.forward(x)


def test_functional_relu_maxpool_flatten_variants() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding="same")

        def forward(self, x):
            x = F.relu(self.conv(x)).relu()
            x = F.max_pool2d(x, kernel_size=2, stride=2)
            return torch.flatten(x, 1).reshape(-1, 2 * 3 * 3)

    model = Net().eval()
    graph = convert(model, (1, 6, 6))
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(graph.forward(x), model(x).double(), atol=1e-5)


class _ReluThenPools(nn.Module):
    """A ReLU feeding only a pool (reordered) and one also feeding a residual (kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 3, stride=1, padding=1)
        y = F.relu(self.conv2(x))
        return F.max_pool2d(y, 2) + F.avg_pool2d(y, 2)


def test_relu_runs_after_the_max_pool_when_it_feeds_only_the_pool() -> None:
    torch.manual_seed(4)  # not secret: model init and test data
    model = _ReluThenPools().eval()
    graph = convert(model, (1, 6, 6))
    ops = [layer.op for layer in graph.layers]
    assert ops[:4] == ["conv2d", "maxpool2d", "relu", "conv2d"]
    assert ops.count("relu") == 2 and ops[ops.index("relu", 3) + 1] == "maxpool2d"
    kept = convert(model, (1, 6, 6), pool_before_relu=False)
    assert [layer.op for layer in kept.layers][:3] == ["conv2d", "relu", "maxpool2d"]
    x = torch.randn(4, 1, 6, 6) * 3
    with torch.no_grad():
        want = model(x).double()
    assert torch.allclose(graph.forward(x), want, atol=1e-5)
    assert torch.allclose(kept.forward(x), want, atol=1e-5)


def test_reordering_cuts_the_comparisons_of_the_zoo() -> None:
    from veil.nn.secure import material_plan

    def comparisons(graph) -> int:
        return sum(p.get("count", 0) for k, p in material_plan(graph, 1) if k == "fss_sign")

    for name in ("lenet", "alexnet"):
        before = comparisons(convert(build(name), ZOO[name].input_shape, pool_before_relu=False))
        after = comparisons(convert(build(name), ZOO[name].input_shape))
        assert after < 0.75 * before, (name, before, after)
