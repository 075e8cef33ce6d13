"""nn.Conv1d / nn.Conv2d with zero padding: per-sample gradient norms and clipped sums.

Two strategies, picked per layer by cost:

- Materialise: ``∇_i W`` for all samples at once with ONE grouped weight-gradient
  convolution, the batch folded into the groups (close to the cost of the batch
  weight gradient it replaces; 3-5x faster than convolving the inputs with each
  sample's backprops as filters on ResNet-20's layers, as fast on the MNIST CNN's
  first layer). Cost ~ T·d·o per sample.
- Ghost norm (Li et al. 2021): ``‖∇_i W‖² = Σ_{t,s} (u_t·u_s)(g_t·g_s)`` from the
  ``T×T`` Gram matrices of unfolded inputs and backprops, cost ~ T²·(d+o); the
  clipped sum is then one ordinary weight-gradient convolution on the backprops
  rescaled by ``c``. Wins on deep layers with few positions T (3x on the second
  layer of the MNIST CNN).

The forward tap skips the batch weight gradient that autograd would otherwise compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.registry import Rule, Summer, materialised_norm_and_sum, register


class _ConvTap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, module, tap):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.module, ctx.tap, ctx.capture = module, tap, tap.active
        return module._conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        m = ctx.module
        need = list(ctx.needs_input_grad[:3])
        if ctx.capture:  # DP-SGD: per-sample rules take over; skip the batch weight grad
            ctx.tap(x, g)
            need[1] = need[2] = False
        gx = gw = gb = None
        if any(need):
            gx, gw, gb = torch.ops.aten.convolution_backward(
                g, x, weight, [weight.shape[0]] if need[2] else None, list(m.stride),
                list(m.padding), list(m.dilation), False, [0] * len(m.stride), m.groups, need,
            )
        return gx, gw, gb, None, None


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
        if not record.active:  # plain op: ordinary gradients, usable under torch.func
            return module._conv_forward(x, module.weight, module.bias)
        return _ConvTap.apply(x, module.weight, module.bias, module, record)

    def per_sample(self, module, a, g):
        a2, g2, k, s, p, d = _as_2d(module, a, g)
        b, groups = a2.shape[0], module.groups
        out = {}
        if module.weight.requires_grad:
            c, o = a2.shape[1], g2.shape[1]
            # Fold the batch into the channel groups: one grouped weight-gradient
            # convolution gives every sample's gradient (3-5x faster on CPU than
            # convolving the inputs with the backprops as filters, ResNet-20 shapes).
            w_shape = (b * o, c // groups, *k)
            ws = torch.ops.aten.convolution_backward(
                g2.reshape(1, b * o, *g2.shape[2:]), a2.reshape(1, b * c, *a2.shape[2:]),
                a2.new_empty(()).expand(w_shape), None, list(s), list(p), list(d), False,
                [0] * len(s), b * groups, [False, True, False],
            )[1]
            out["weight"] = ws.reshape(b, *module.weight.shape)
        if module.bias is not None and module.bias.requires_grad:
            out["bias"] = g.reshape(b, g.shape[1], -1).sum(-1)
        return out

    def norm_and_sum(self, module, a, g) -> tuple[torch.Tensor, Summer]:
        a2, g2, k, s, p, d = _as_2d(module, a, g)
        b, groups = a2.shape[0], module.groups
        t = g2.shape[-1] * g2.shape[-2]
        fan_in = a2.shape[1] // groups * k[0] * k[1]
        fan_out = g2.shape[1] // groups
        # Ghost norm (Gram matrices T×T) when cheaper than materialising (T·d·o).
        if not module.weight.requires_grad or t * (fan_in + fan_out) >= fan_in * fan_out:
            return materialised_norm_and_sum(self.per_sample(module, a, g))
        u = F.unfold(a2, k, dilation=d, padding=p, stride=s).view(b, groups, fan_in, t)
        gg = g2.reshape(b, groups, fan_out, t)
        gram_a = torch.matmul(u.transpose(-1, -2), u)
        gram_g = torch.matmul(gg.transpose(-1, -2), gg)
        norm_sq = (gram_a * gram_g).sum((1, 2, 3))
        has_bias = module.bias is not None and module.bias.requires_grad
        if has_bias:
            norm_sq = norm_sq + g2.reshape(b, g2.shape[1], -1).sum(-1).pow(2).sum(1)

        def summer(c: torch.Tensor) -> dict[str, torch.Tensor]:
            gc = g * c.to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
            w = torch.ops.aten.convolution_backward(
                gc, a, module.weight, None, list(module.stride), list(module.padding),
                list(module.dilation), False, [0] * len(module.stride), groups,
                [False, True, False],
            )[1]
            out = {"weight": w}
            if has_bias:
                out["bias"] = gc.reshape(b, gc.shape[1], -1).sum((0, 2))
            return out

        return norm_sq, summer
