"""``linear``: ``nn.Linear``; one matrix Beaver triple per batch (x @ W^T + b)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from veil.nn.fixedpoint import encode, exact_gemm
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import bilinear_plan


@register
class Linear(Op):
    name = "linear"
    modules = (nn.Linear,)
    parameters = ("weight", "bias")
    bilinear = True

    def lower(self, low):
        mod = low.module
        return low.layer(self.name, (low.first_input(),), weight=mod.weight.detach().clone(),
                         bias=None if mod.bias is None else mod.bias.detach().clone())

    def float_forward(self, layer, args):
        b = None if layer.bias is None else layer.bias.double()
        return F.linear(args[0], layer.weight.double(), b)

    def twin(self, layer, args, frac_bits):
        y = exact_gemm(F.linear, args[0], encode(layer.weight, frac_bits)) >> frac_bits
        if layer.bias is not None:
            y = y + encode(layer.bias, frac_bits)
        return y

    def param_view(self, layer, kind, t):
        return t.t().contiguous() if kind == "weight" else t  # x @ W^T as one matmul triple

    def forward(self, party, layer, params, args):
        y = args[0] @ params["weight"]
        b = params.get("bias")
        return y + b if b is not None else y

    def plan(self, layer, in_shapes, batch, session=None):
        return bilinear_plan(self, layer, "matmul", in_shapes[0], batch, session)


__all__ = ["Linear"]
