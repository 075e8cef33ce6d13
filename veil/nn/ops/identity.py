"""Identities in eval mode: Dropout, Identity, ``contiguous`` (lowered to nothing)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from veil.nn.ops.base import Op, register


@register
class Identity(Op):
    name = "identity"
    modules = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
    functions = (F.dropout, F.dropout2d)
    methods = ("contiguous",)

    def lower(self, low):
        return None
