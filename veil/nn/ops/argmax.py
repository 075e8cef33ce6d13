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
        from veil.nn import calibration  # bits=k from the calibrated bound (if any)

        calibration.guard(args[0], layer)
        return args[0].argmax(dim=-1, **calibration.gate_options(layer))

    def plan(self, layer, in_shapes, batch, session=None):
        from veil.nn import calibration

        shape = (batch, *in_shapes[0])
        return (calibration.guard_plan(layer, shape)
                + gate_plan("argmax", shape, dim=-1, **calibration.gate_options(layer)))
