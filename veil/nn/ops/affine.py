"""``affine``: a per-channel ``x * scale + shift``: BatchNorm1d/2d with eval statistics when
it cannot be folded into the preceding Linear/Conv2d; one elementwise Beaver triple."""

from __future__ import annotations

import torch
from torch import nn

from veil.nn.fixedpoint import encode
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import bilinear_plan, channel_shape


@register
class Affine(Op):
    name = "affine"
    modules = (nn.BatchNorm1d, nn.BatchNorm2d)
    parameters = ("weight", "bias")
    bilinear = True

    def lower(self, low):
        mod = low.module
        if mod.running_mean is None or mod.running_var is None:
            raise low.refuse("BatchNorm without running statistics")
        if isinstance(mod, nn.BatchNorm1d) and len(low.out_shape) != 1:
            raise low.refuse("BatchNorm1d on a (N, C, L) input")
        scale = torch.rsqrt(mod.running_var.detach().double() + mod.eps)
        shift = -mod.running_mean.detach().double() * scale
        if mod.affine:
            scale = scale * mod.weight.detach().double()
            shift = shift * mod.weight.detach().double() + mod.bias.detach().double()
        return low.layer(self.name, (low.first_input(),), weight=scale, bias=shift)

    def float_forward(self, layer, args):
        x = args[0]
        shape = channel_shape(x.dim())
        return x * layer.weight.double().reshape(shape) + layer.bias.double().reshape(shape)

    def twin(self, layer, args, frac_bits):
        x = args[0]
        shape = channel_shape(x.dim())
        y = (x * encode(layer.weight, frac_bits).reshape(shape)) >> frac_bits
        return y + encode(layer.bias, frac_bits).reshape(shape)

    def param_view(self, layer, kind, t):
        return t.reshape((1, -1) + (1,) * (len(layer.out_shape) - 1))

    def forward(self, party, layer, params, args):
        return args[0] * params["weight"] + params["bias"]

    def plan(self, layer, in_shapes, batch, session=None):
        return bilinear_plan(self, layer, "beaver", in_shapes[0], batch, session)
