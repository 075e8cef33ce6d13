"""nn.Conv1d / nn.Conv2d with zero padding: per-sample gradients by unfolding.

``∇_i W = g_i U(a_i)ᵀ`` where ``U`` unfolds the input patches (``(C·k·k, T)`` per
sample). We materialise the per-sample gradients with one batched matmul when that is
cheaper than the ghost norm (``T²`` Gram matrices), which is the case for the early,
high-resolution layers of CNNs; the clipped sum is then a cheap contraction with ``c``.
The forward tap skips the batch weight gradient that autograd would otherwise compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.registry import Rule, Summer, materialised_norm_and_sum, register


class _ConvTap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, module, record):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.module, ctx.record = module, record
        return module._conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        m = ctx.module
        ctx.record(x, g)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                g, x, weight, None, list(m.stride), list(m.padding), list(m.dilation),
                False, [0] * len(m.stride), m.groups, [True, False, False],
            )[0]
        return gx, None, None, None, None


def _as_2d(module: nn.Module, a: torch.Tensor, g: torch.Tensor):
    if isinstance(module, nn.Conv1d):
        return (
            a.unsqueeze(-2), g.unsqueeze(-2), (1, module.kernel_size[0]),
            (1, module.stride[0]), (0, module.padding[0]), (1, module.dilation[0]),
        )
    return a, g, module.kernel_size, module.stride, module.padding, module.dilation


@register(nn.Conv1d, nn.Conv2d)
class ConvRule(Rule):
    tap = "function"

    def supports(self, module: nn.Module) -> bool:
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)

    @staticmethod
    def forward(module: nn.Module, record, x: torch.Tensor) -> torch.Tensor:
        return _ConvTap.apply(x, module.weight, module.bias, module, record)

    def per_sample(self, module, a, g):
        a2, g2, k, s, p, d = _as_2d(module, a, g)
        b, groups = a2.shape[0], module.groups
        out = {}
        if module.weight.requires_grad:
            u = F.unfold(a2, k, dilation=d, padding=p, stride=s)  # (B, C·kk, T)
            t = u.shape[-1]
            u = u.view(b, groups, -1, t)
            gg = g2.reshape(b, groups, -1, t)
            gs = torch.matmul(gg, u.transpose(-1, -2))  # (B, G, O/G, C/G·kk)
            out["weight"] = gs.reshape(b, *module.weight.shape)
        if module.bias is not None and module.bias.requires_grad:
            out["bias"] = g.reshape(b, g.shape[1], -1).sum(-1)
        return out

    def norm_and_sum(self, module, a, g) -> tuple[torch.Tensor, Summer]:
        return materialised_norm_and_sum(self.per_sample(module, a, g))
