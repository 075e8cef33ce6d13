"""``relu``: one FSS sign gate per element (one online round, BCG+21 exact).

Training keeps the gate's DReLU bit ``d = 1{x >= 0}`` as an integer sharing (the
same round gives it with ``d·x``), and the backward is ``dx = d·dy``: one Beaver
product with the bit, no second comparison and no truncation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.mpc import exact
from veil.nn.ops.base import Op, register
from veil.nn.ops.common import gate_plan


@register
class ReLU(Op):
    name = "relu"
    modules = (nn.ReLU,)
    functions = (F.relu, torch.relu)
    methods = ("relu",)
    trainable = True

    def float_forward(self, layer, args):
        return torch.relu(args[0])

    def twin(self, layer, args, frac_bits):
        return args[0].clamp_min(0)

    def forward(self, party, layer, params, args):
        from veil.nn import calibration  # bits=k from the calibrated bound (if any)

        calibration.guard(args[0], layer)
        return args[0].relu(**calibration.gate_options(layer))

    def plan(self, layer, in_shapes, batch, session=None):
        from veil.nn import calibration

        shape = (batch, *in_shapes[0])
        return (calibration.guard_plan(layer, shape)
                + gate_plan("relu", shape, **calibration.gate_options(layer)))

    # -- training ------------------------------------------------------------------------
    def train_forward(self, party, layer, params, args):
        from veil.mpc.nonlinear import _sign_round  # the gate's raw outputs: d at scale 1

        x = args[0]
        out = _sign_round(party, x.share.reshape(-1), relu=True)
        y = x._wrap(out["dx"].reshape(x.shape))
        return y, x._wrap(out["d"].reshape(x.shape), 0)

    def backward(self, party, layer, params, d, grad, needs):
        return [exact.product(grad, d)], {}

    def backward_plan(self, layer, in_shapes, batch, needs, frac_bits):
        shape = (batch, *in_shapes[0])
        return exact.product_plan("beaver", shape, shape, 0)

    def twin_train_forward(self, layer, params, args, frac_bits):
        x = args[0]
        return x.clamp_min(0), (x >= 0).to(torch.int64)

    def twin_backward(self, layer, params, d, grad, needs, frac_bits):
        return [grad * d], {}
