"""nn.Linear: per-sample gradients from activations and backprops.

For a batch without extra dimensions, ``∇_i W = g_i a_iᵀ`` so ``‖∇_i W‖² = ‖g_i‖²‖a_i‖²``
(ghost norm) and the clipped sum is one matmul ``(c ⊙ g)ᵀ a``. With extra dimensions
(sequences), the ghost norm costs ``B·T²·(d+p)`` against ``B·T·d·p`` for materialising;
the cheaper one is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.registry import Rule, Summer, materialised_norm_and_sum, register


class _LinearTap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, tap):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.tap, ctx.capture = tap, tap.active
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        gx = g.matmul(weight) if ctx.needs_input_grad[0] else None
        if ctx.capture:  # DP-SGD: per-sample rules take over; skip the batch weight grad
            ctx.tap(x, g)
            return gx, None, None, None
        gw = gb = None
        if ctx.needs_input_grad[1]:
            gw = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[2]:
            gb = g.reshape(-1, g.shape[-1]).sum(0)
        return gx, gw, gb, None


@register(nn.Linear)
class LinearRule(Rule):
    tap = "function"

    @staticmethod
    def forward(module: nn.Linear, record, x: torch.Tensor) -> torch.Tensor:
        if not record.active:  # plain op: ordinary gradients, usable under torch.func
            return F.linear(x, module.weight, module.bias)
        return _LinearTap.apply(x, module.weight, module.bias, record)

    def per_sample(self, module, a, g):
        w, b = linear_per_sample(a, g, module.weight.requires_grad,
                                 module.bias is not None and module.bias.requires_grad)
        return {k: v for k, v in (("weight", w), ("bias", b)) if v is not None}

    def norm_and_sum(self, module, a, g) -> tuple[torch.Tensor, Summer]:
        norm_sq, parts = linear_norm_and_sum(
            a, g, module.weight.requires_grad,
            module.bias is not None and module.bias.requires_grad)

        def summer(c: torch.Tensor) -> dict[str, torch.Tensor]:
            w, b = parts(c)
            return {k: v for k, v in (("weight", w), ("bias", b)) if v is not None}

        return norm_sq, summer


def linear_per_sample(a: torch.Tensor, g: torch.Tensor, w_grad: bool, b_grad: bool):
    """Per-sample ``(∇W, ∇b)`` of ``y = a Wᵀ + b`` (``a``: (B, ..., d), ``g``: (B, ..., o))."""
    w = torch.einsum("b...o,b...i->boi", g, a) if w_grad else None
    b = torch.einsum("b...o->bo", g) if b_grad else None
    return w, b


def linear_norm_and_sum(a: torch.Tensor, g: torch.Tensor, w_grad: bool, b_grad: bool):
    """Per-sample squared norms of ``(∇W, ∇b)`` and ``c -> (Σ c_i ∇_i W, Σ c_i ∇_i b)``.

    Ghost norm (Gram matrices over the sequence) or materialised, whichever is cheaper.
    """
    b = a.shape[0]
    a3, g3 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
    t, d, p = a3.shape[1], a3.shape[2], g3.shape[2]
    if t > 1 and t * t * (d + p) > t * d * p:
        w, bias = linear_per_sample(a3, g3, w_grad, b_grad)
        grads = {k: v for k, v in (("w", w), ("b", bias)) if v is not None}
        norm_sq, summer = materialised_norm_and_sum(grads)
        return norm_sq, lambda c: (lambda o: (o.get("w"), o.get("b")))(summer(c))
    norm_sq = torch.zeros(b, dtype=g.dtype, device=g.device)
    if w_grad:
        if t == 1:
            norm_sq = norm_sq + a3[:, 0].pow(2).sum(1) * g3[:, 0].pow(2).sum(1)
        else:  # ‖Σ_t g_t a_tᵀ‖² = Σ_{t,s} (a_t·a_s)(g_t·g_s)
            norm_sq = norm_sq + (a3 @ a3.transpose(1, 2) * (g3 @ g3.transpose(1, 2))).sum((1, 2))
    if b_grad:
        norm_sq = norm_sq + g3.sum(1).pow(2).sum(1)

    def summer(c: torch.Tensor):
        gc = g3 * c.to(g.dtype).view(b, 1, 1)
        w = gc.reshape(-1, p).t() @ a3.reshape(-1, d) if w_grad else None
        bias = gc.sum((0, 1)) if b_grad else None
        return w, bias

    return norm_sq, summer
