"""``relu``: one FSS sign gate per element (one online round, BCG+21 exact)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.nn.ops.base import Op, register
from veil.nn.ops.common import gate_plan


@register
class ReLU(Op):
    name = "relu"
    modules = (nn.ReLU,)
    functions = (F.relu, torch.relu)
    methods = ("relu",)

    def float_forward(self, layer, args):
        return torch.relu(args[0])

    def twin(self, layer, args, frac_bits):
        return args[0].clamp_min(0)

    def forward(self, party, layer, params, args):
        return args[0].relu()

    def plan(self, layer, in_shapes, batch, session=None):
        return gate_plan("relu", (batch, *in_shapes[0]))
