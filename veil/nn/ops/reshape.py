"""``reshape``: Flatten, ``torch.flatten``, ``view``/``reshape`` keeping the batch
dimension (local)."""

from __future__ import annotations

import torch
from torch import nn

from veil.nn.ops.base import Op, register


def _flatten_args(low) -> tuple[int, int]:
    args, kw = low.node.args, low.node.kwargs
    start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
    end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
    return start, end


@register
class Reshape(Op):
    name = "reshape"
    modules = (nn.Flatten,)
    functions = (torch.flatten, torch.reshape)
    methods = ("reshape", "view", "flatten")
    trainable = True

    def lower(self, low):
        if low.module is not None:
            mod = low.module
            if mod.start_dim not in (1, -len(low.out_shape) - 1) or mod.end_dim != -1:
                raise low.refuse(f"Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim})")
        elif low.kind == "call_function" and low.node.target is torch.flatten:
            start, end = _flatten_args(low)
            if start != 1 or end != -1:
                raise low.refuse(f"torch.flatten(start_dim={start}, end_dim={end})")
        elif low.kind == "call_method" and low.node.target == "flatten":
            start, _ = _flatten_args(low)
            if start != 1:
                raise low.refuse(f"Tensor.flatten(start_dim={start})")
        return low.layer(self.name, (low.first_input(),))

    def float_forward(self, layer, args):
        return args[0].reshape(args[0].shape[0], *layer.out_shape)

    def twin(self, layer, args, frac_bits):
        return args[0].reshape(args[0].shape[0], *layer.out_shape)

    def forward(self, party, layer, params, args):
        return args[0].reshape(args[0].shape[0], *layer.out_shape)

    def train_forward(self, party, layer, params, args):
        return self.forward(party, layer, params, args), tuple(args[0].shape)

    def backward(self, party, layer, params, in_shape, grad, needs):
        return [grad.reshape(*in_shape)], {}

    def twin_train_forward(self, layer, params, args, frac_bits):
        return self.twin(layer, args, frac_bits), tuple(args[0].shape)

    def twin_backward(self, layer, params, in_shape, grad, needs, frac_bits):
        return [grad.reshape(*in_shape)], {}
