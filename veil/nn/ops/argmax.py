"""``argmax``: one-hot argmax of the output by a tournament (``m - 1`` comparisons in
``ceil(log2 m)`` rounds); added by :meth:`~veil.nn.graph.SecureGraph.with_argmax`."""

from __future__ import annotations

import torch.nn.functional as F

from veil.nn.ops.base import Op, register
from veil.nn.ops.common import gate_plan


@register
class Argmax(Op):
    name = "argmax"

    def float_forward(self, layer, args):
        x = args[0]
        return F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)

    def twin(self, layer, args, frac_bits):
        x = args[0]
        return F.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype) << frac_bits

    def forward(self, party, layer, params, args):
        return args[0].argmax(dim=-1)

    def plan(self, layer, in_shapes, batch, session=None):
        return gate_plan("argmax", (batch, *in_shapes[0]), dim=-1)
