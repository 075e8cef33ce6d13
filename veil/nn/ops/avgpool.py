"""``avgpool2d``: AvgPool2d and AdaptiveAvgPool2d (output dividing the input); local:
window sums times the public ``round(2^f / window)``.

Training truncates exactly (one round); the backward multiplies ``dy`` by the same
constant (one exact truncation) and adds it back to every position of its window.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from veil.mpc.truncation import plan as trunc_plan
from veil.mpc.truncation import truncate
from veil.nn.fixedpoint import fold_windows, window_constant, window_sum
from veil.nn.lowering import pair
from veil.nn.ops.base import Op, register


@register
class AvgPool2d(Op):
    name = "avgpool2d"
    modules = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    functions = (F.avg_pool2d, F.adaptive_avg_pool2d)
    trainable = True

    def lower(self, low):
        adaptive = isinstance(low.module, nn.AdaptiveAvgPool2d) or (
            low.module is None and low.node.target is F.adaptive_avg_pool2d)
        if adaptive:
            return self._adaptive(low)
        if low.module is not None:
            m = low.module
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad,
                 "divisor_override": m.divisor_override}
            x = low.first_input()
        else:
            a = low.args(("input", "kernel_size", "stride", "padding", "ceil_mode",
                          "count_include_pad", "divisor_override"))
            x = low.src(a["input"])
        k = pair(a["kernel_size"])
        stride = a.get("stride")
        s = k if stride is None or stride == [] else pair(stride)
        p = pair(a.get("padding", 0))
        if a.get("ceil_mode", False) or a.get("divisor_override") is not None or (
                p != (0, 0) and not a.get("count_include_pad", True)):
            raise low.refuse("AvgPool2d with ceil_mode, divisor_override or "
                             "count_include_pad=False")
        return low.layer(self.name, (x,), params={"kernel_size": k, "stride": s, "padding": p})

    def _adaptive(self, low):
        in_hw, out_hw = low.in_shape()[1:], low.out_shape[1:]
        if any(i % o for i, o in zip(in_hw, out_hw, strict=True)):
            raise low.refuse(f"AdaptiveAvgPool2d from {tuple(in_hw)} to {tuple(out_hw)}",
                             "(output size must divide the input size) is not supported")
        k = tuple(i // o for i, o in zip(in_hw, out_hw, strict=True))
        return low.layer(self.name, (low.first_input(),),
                         params={"kernel_size": k, "stride": k, "padding": (0, 0)})

    def float_forward(self, layer, args):
        p = layer.params
        return F.avg_pool2d(args[0], p["kernel_size"], p["stride"], p["padding"])

    def twin(self, layer, args, frac_bits):
        p = layer.params
        s = window_sum(args[0], p["kernel_size"], p["stride"], p["padding"])
        return (s * window_constant(p["kernel_size"], frac_bits)) >> frac_bits

    def forward(self, party, layer, params, args):
        p = layer.params
        return args[0].avg_pool2d(p["kernel_size"], stride=p["stride"], padding=p["padding"])

    # -- training ------------------------------------------------------------------------
    def train_forward(self, party, layer, params, args):
        p = layer.params
        x = args[0]
        c = window_constant(p["kernel_size"], x.frac_bits)
        s = window_sum(x.share, p["kernel_size"], p["stride"], p["padding"])
        return x._wrap(truncate(party, s * c, x.frac_bits)), tuple(x.shape)

    def train_plan(self, layer, in_shapes, batch, frac_bits):
        return trunc_plan(batch * math.prod(layer.out_shape), frac_bits)

    def backward(self, party, layer, params, in_shape, grad, needs):
        c = window_constant(layer.params["kernel_size"], grad.frac_bits)
        g = truncate(party, grad.share * c, grad.frac_bits)
        return [grad._wrap(self._spread(g, in_shape, layer))], {}

    def backward_plan(self, layer, in_shapes, batch, needs, frac_bits):
        return trunc_plan(batch * math.prod(layer.out_shape), frac_bits)

    def twin_train_forward(self, layer, params, args, frac_bits):
        return self.twin(layer, args, frac_bits), tuple(args[0].shape)

    def twin_backward(self, layer, params, in_shape, grad, needs, frac_bits):
        g = (grad * window_constant(layer.params["kernel_size"], frac_bits)) >> frac_bits
        return [self._spread(g, in_shape, layer)], {}

    @staticmethod
    def _spread(g, in_shape, layer):
        p = layer.params
        k = p["kernel_size"][0] * p["kernel_size"][1]
        values = g.unsqueeze(-1).expand(*g.shape, k)
        return fold_windows(values, in_shape[2:], p["kernel_size"], p["stride"], p["padding"])
