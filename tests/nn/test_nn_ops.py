"""The op table: every layer kind in one registered op, twin against float, lowering claims."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veil.nn import UnsupportedModelError, convert
from veil.nn.layer import Layer
from veil.nn.ops import Op, get_op, op_for_function, op_for_method, op_for_module, op_names
from veil.nn.twin import decode, encode


def test_every_builtin_op_is_registered() -> None:
    assert set(op_names()) >= {"linear", "conv2d", "affine", "relu", "maxpool2d", "avgpool2d",
                               "add", "reshape", "argmax"}
    assert op_for_module(nn.Linear(2, 3)) is get_op("linear")
    assert op_for_module(nn.AdaptiveAvgPool2d(1)) is get_op("avgpool2d")
    assert op_for_function(torch.relu) is get_op("relu")
    assert op_for_method("view") is get_op("reshape")
    assert op_for_module(nn.Tanh()) is None
    with pytest.raises(KeyError, match="no op 'sigmoid'"):
        get_op("sigmoid")


def _layers(gen: torch.Generator) -> list[tuple[Layer, tuple[int, ...], int]]:
    w = torch.randn(5, 7, generator=gen) * 0.3
    cw = torch.randn(4, 3, 3, 2, generator=gen) * 0.3
    return [
        (Layer("l", "linear", ("x",), (5,), weight=w, bias=torch.randn(5, generator=gen)),
         (7,), 1),
        (Layer("c", "conv2d", ("x",), (4, 3, 5), weight=cw, bias=torch.randn(4, generator=gen),
               params={"stride": (2, 1), "padding": (1, 0), "kernel_size": (3, 2)}),
         (3, 5, 6), 1),
        (Layer("a", "affine", ("x",), (3, 4, 4), weight=torch.rand(3, generator=gen) + 0.5,
               bias=torch.randn(3, generator=gen)), (3, 4, 4), 1),
        (Layer("r", "relu", ("x",), (3, 5)), (3, 5), 1),
        (Layer("m", "maxpool2d", ("x",), (2, 3, 2),
               params={"kernel_size": (3, 2), "stride": (2, 2), "padding": (1, 0)}),
         (2, 5, 5), 1),
        (Layer("p", "avgpool2d", ("x",), (2, 2, 2),
               params={"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}),
         (2, 5, 5), 1),
        (Layer("s", "add", ("x", "y"), (3, 2)), (3, 2), 2),
        (Layer("f", "reshape", ("x",), (12,)), (3, 2, 2), 1),
        (Layer("g", "argmax", ("x",), (7,)), (7,), 1),
    ]


def test_each_op_twin_matches_its_float_forward_on_odd_shapes() -> None:
    gen = torch.Generator().manual_seed(3)
    for layer, in_shape, n in _layers(gen):
        op = get_op(layer.op)
        xs = [torch.randn(3, *in_shape, generator=gen, dtype=torch.float64) for _ in range(n)]
        ref = op.float_forward(layer, xs)
        got = decode(op.twin(layer, [encode(x) for x in xs], 16))
        assert got.shape == ref.shape == (3, *layer.out_shape), layer.op
        assert (got - ref).abs().max() < 1e-3, layer.op


def test_a_new_op_is_one_registered_class() -> None:
    from veil.nn.ops.base import _FUNCTIONS, _OPS, register

    @register
    class Square(Op):
        name = "test_square"
        functions = (torch.square,)

        def float_forward(self, layer, args):
            return args[0] ** 2

    try:
        class Net(nn.Module):
            def forward(self, x):
                return torch.square(x)

        graph = convert(Net(), (3,))
        assert [layer.op for layer in graph.layers] == ["test_square"]
        x = torch.randn(2, 3, dtype=torch.float64)
        assert torch.equal(graph.forward(x), x ** 2)
    finally:
        del _OPS["test_square"], _FUNCTIONS[torch.square]
    with pytest.raises(UnsupportedModelError, match="square"):
        convert(Net(), (3,))
