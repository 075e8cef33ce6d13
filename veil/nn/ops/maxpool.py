"""``maxpool2d``: max pooling as comparison trees (``k - 1`` sign gates per window,
``ceil(log2 k)`` rounds for a ``k``-element window)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.nn.lowering import pair
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import gate_plan


@register
class MaxPool2d(Op):
    name = "maxpool2d"
    modules = (nn.MaxPool2d,)
    functions = (F.max_pool2d, torch.max_pool2d)

    def lower(self, low):
        if low.module is not None:
            m = low.module
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "dilation": m.dilation, "ceil_mode": m.ceil_mode,
                 "return_indices": m.return_indices}
            x = low.first_input()
        else:
            a = low.args(("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                          "return_indices"))
            x = low.src(a["input"])
        if pair(a.get("dilation", 1)) != (1, 1) or a.get("ceil_mode", False) \
                or a.get("return_indices", False):
            raise low.refuse("MaxPool2d with dilation, ceil_mode or return_indices")
        k = pair(a["kernel_size"])
        stride = a.get("stride")
        s = k if stride is None or stride == [] else pair(stride)
        return low.layer(self.name, (x,), params={"kernel_size": k, "stride": s,
                                                  "padding": pair(a.get("padding", 0))})

    def float_forward(self, layer, args):
        p = layer.params
        return F.max_pool2d(args[0], p["kernel_size"], p["stride"], p["padding"])

    def twin(self, layer, args, frac_bits):
        p = layer.params
        x, pad = args[0], p["padding"]
        if pad != (0, 0):
            x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=torch.iinfo(torch.int64).min)
        win = x.unfold(2, p["kernel_size"][0], p["stride"][0]).unfold(
            3, p["kernel_size"][1], p["stride"][1])
        return win.flatten(-2).max(-1).values

    def forward(self, party, layer, params, args):
        p = layer.params
        return args[0].max_pool2d(p["kernel_size"], stride=p["stride"], padding=p["padding"])

    def plan(self, layer, in_shapes, batch, session=None):
        p = layer.params
        return gate_plan("max_pool2d", (batch, *in_shapes[0]), kernel_size=p["kernel_size"],
                         stride=p["stride"], padding=p["padding"])
