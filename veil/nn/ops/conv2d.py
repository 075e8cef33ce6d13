"""``conv2d``: ``nn.Conv2d`` (stride, padding, bias; groups=1, dilation=1); one convolution
Beaver triple per batch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from veil.nn.fixedpoint import encode, exact_gemm
from veil.nn.lowering import pair
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import bilinear_plan


@register
class Conv2d(Op):
    name = "conv2d"
    modules = (nn.Conv2d,)
    parameters = ("weight", "bias")
    bilinear = True

    def lower(self, low):
        mod = low.module
        if mod.groups != 1 or pair(mod.dilation) != (1, 1):
            raise low.refuse(f"Conv2d with groups={mod.groups}, dilation={mod.dilation}")
        if mod.padding_mode != "zeros":
            raise low.refuse(f"Conv2d with padding_mode={mod.padding_mode!r}")
        padding = mod.padding
        if isinstance(padding, str):  # 'same'/'valid' with odd kernels
            k = pair(mod.kernel_size)
            if padding == "same" and any(kk % 2 == 0 for kk in k):
                raise low.refuse("Conv2d padding='same' with an even kernel")
            padding = (0, 0) if padding == "valid" else (k[0] // 2, k[1] // 2)
        return low.layer(self.name, (low.first_input(),), weight=mod.weight.detach().clone(),
                         bias=None if mod.bias is None else mod.bias.detach().clone(),
                         params={"stride": pair(mod.stride), "padding": pair(padding),
                                 "kernel_size": pair(mod.kernel_size)})

    def float_forward(self, layer, args):
        p = layer.params
        b = None if layer.bias is None else layer.bias.double()
        return F.conv2d(args[0], layer.weight.double(), b, stride=p["stride"],
                        padding=p["padding"])

    def twin(self, layer, args, frac_bits):
        p = layer.params
        y = exact_gemm(F.conv2d, args[0], encode(layer.weight, frac_bits), p["stride"],
                       p["padding"]) >> frac_bits
        if layer.bias is not None:
            y = y + encode(layer.bias, frac_bits).reshape(1, -1, 1, 1)
        return y

    def forward(self, party, layer, params, args):
        p = layer.params
        return args[0].conv2d(params["weight"], params.get("bias"), stride=p["stride"],
                              padding=p["padding"])

    def plan(self, layer, in_shapes, batch, session=None):
        p = layer.params
        return bilinear_plan(self, layer, "conv2d", in_shapes[0], batch, session,
                             stride=list(p["stride"]), padding=list(p["padding"]))
