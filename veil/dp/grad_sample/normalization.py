"""GroupNorm / LayerNorm affine parameters: closed-form per-sample gradients.

With ``x̂`` the normalised input, ``∇_i γ = Σ_{non-channel dims} x̂_i ⊙ g_i`` and
``∇_i β = Σ g_i`` (summing over the dimensions the affine parameter is broadcast over).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.registry import Rule, register


@register(nn.GroupNorm)
class GroupNormRule(Rule):
    def per_sample(self, module, a, g):
        xhat = F.group_norm(a, module.num_groups, None, None, module.eps)
        b, c = a.shape[0], a.shape[1]
        out = {}
        if module.weight is not None and module.weight.requires_grad:
            out["weight"] = (xhat * g).reshape(b, c, -1).sum(-1)
        if module.bias is not None and module.bias.requires_grad:
            out["bias"] = g.reshape(b, c, -1).sum(-1)
        return out


@register(nn.LayerNorm)
class LayerNormRule(Rule):
    def per_sample(self, module, a, g):
        shape = module.normalized_shape
        xhat = F.layer_norm(a, shape, None, None, module.eps)
        b = a.shape[0]
        lead = tuple(range(1, a.dim() - len(shape)))
        out = {}
        if module.weight is not None and module.weight.requires_grad:
            out["weight"] = (xhat * g).sum(lead) if lead else xhat * g
            out["weight"] = out["weight"].reshape(b, *shape)
        if module.bias is not None and module.bias.requires_grad:
            out["bias"] = (g.sum(lead) if lead else g).reshape(b, *shape)
        return out


