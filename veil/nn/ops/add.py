"""``add``: the residual addition of two tensors of the same shape (local)."""

from __future__ import annotations

import operator

import torch

from veil.nn.lowering import meta_shape
from veil.nn.ops.base import Op, register


@register
class Add(Op):
    name = "add"
    functions = (operator.add, operator.iadd, torch.add)
    methods = ("add",)
    trainable = True

    def lower(self, low):
        ts = low.tensor_args()
        if low.kind == "call_method":
            if len(ts) != 2 or meta_shape(ts[0]) != meta_shape(ts[1]):
                raise low.refuse("Tensor.add of a constant or broadcast tensor")
        else:
            if len(ts) != 2 or len(low.node.args) != 2 or low.node.kwargs.get("alpha", 1) != 1:
                raise low.refuse("addition of a constant (only tensor + tensor, the residual "
                                 "addition,)")
            if meta_shape(ts[0]) != meta_shape(ts[1]):
                raise low.refuse("broadcasting addition")
        return low.layer(self.name, (low.src(ts[0]), low.src(ts[1])))

    def float_forward(self, layer, args):
        return args[0] + args[1]

    def twin(self, layer, args, frac_bits):
        return args[0] + args[1]

    def forward(self, party, layer, params, args):
        return args[0] + args[1]

    def backward(self, party, layer, params, saved, grad, needs):
        return [grad if n else None for n in needs], {}

    def twin_backward(self, layer, params, saved, grad, needs, frac_bits):
        return [grad if n else None for n in needs], {}
