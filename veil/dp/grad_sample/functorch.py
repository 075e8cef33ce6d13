"""Fallback for any layer without a registered rule: ``torch.func`` (vmap over grad).

The layer's call (its tensor arguments, keyword arguments and the backprops of its tensor
outputs) is recorded; the per-sample gradient of ``Σ_outputs ⟨out_i, g_i⟩`` with respect
to the layer's *own* parameters is then computed for all samples at once with
``vmap(grad(...))`` over the batch dimension (dimension 0, or 1 with
``batch_first=False``, of every argument and output that has it). Sub-modules with
parameters of their own keep their own rules: a custom layer that owns a parameter and
wraps a Linear works as it is.
This covers Embedding, Conv3d, InstanceNorm, custom layers... at the cost of
materialising per-sample gradients.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from veil.dp.grad_sample.registry import Rule, trainable
from veil.dp.validators import UnsupportedModuleError


class _Call:
    """One call of a layer: its arguments and, filled in during backward, the backprops."""

    def __init__(self, args: tuple, kwargs: dict, n_out: int, dim: int) -> None:
        self.dim = dim  # the batch dimension
        flat, self.spec = tree_flatten((args, kwargs))
        self.flat = [t.detach() if isinstance(t, torch.Tensor) else t for t in flat]
        self.grads: list[torch.Tensor | None] = [None] * n_out
        self.recorded = False

    def on_grad(self, j: int, record, g: torch.Tensor) -> None:
        self.grads[j] = g.detach()
        if not self.recorded:  # once per call, in the backward pass that reaches it
            self.recorded = True
            record(self)

    @property
    def batch(self) -> int:
        return next(g for g in self.grads if g is not None).shape[self.dim]


class FunctorchRule(Rule):
    tap = "hook"
    knows_batch_dim = True  # a call's batch dimension is recorded with it

    def attach(self, module: nn.Module, record):
        def hook(_mod, args, kwargs, output):
            if not record.active:
                return
            outs = [o for o in tree_flatten(output)[0] if isinstance(o, torch.Tensor)]
            if not outs:
                return
            dim = 0 if record.gsm.batch_first or outs[0].dim() < 3 else 1
            call = _Call(args, kwargs, len(outs), dim)
            for j, o in enumerate(outs):
                if o.requires_grad:
                    o.register_hook(functools.partial(_grad_hook, call, j, record))

        return module.register_forward_hook(hook, with_kwargs=True)

    def batch_size(self, record: tuple) -> int:
        return record[0].batch

    def per_sample(self, module, call: _Call):  # type: ignore[override]
        params = {k: v.detach() for k, v in trainable(module).items()}
        b, dim = call.batch, call.dim
        batched = [isinstance(t, torch.Tensor) and t.dim() > dim and t.shape[dim] == b
                   for t in call.flat]
        xs = [t if bt else None for t, bt in zip(call.flat, batched, strict=True)]
        gs = [g for g in call.grads if g is not None]
        used = [g is not None for g in call.grads]

        def inner(p: dict[str, torch.Tensor], xs_i: list, gs_i: list):
            flat = [x.unsqueeze(dim) if bt else t
                    for x, t, bt in zip(xs_i, call.flat, batched, strict=True)]
            args, kwargs = tree_unflatten(flat, call.spec)
            out = functional_call(module, p, tuple(args), kwargs, strict=False)
            outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
            picked = [o for o, u in zip(outs, used, strict=True) if u]
            return sum((o * g.unsqueeze(dim)).sum() for o, g in zip(picked, gs_i, strict=True))

        in_dims = (None, [dim if bt else None for bt in batched], [dim] * len(gs))
        return vmap(grad(inner), in_dims=in_dims)(params, xs, gs)


def _grad_hook(call: _Call, j: int, record, g: torch.Tensor) -> None:
    call.on_grad(j, record, g)


FALLBACK = FunctorchRule()


def fallback_for(module: nn.Module, name: str) -> Rule:
    """The fallback rule for a layer with its own trainable parameters and no rule.

    Layers whose native kernels cannot run per sample under ``vmap`` are refused here,
    when the model is wrapped (``make_private``), naming the layer.
    """
    if isinstance(module, nn.RNNBase):
        raise UnsupportedModuleError(
            f"layer {name or '<root>'} ({module!r}) is not supported under DP-SGD: "
            "LSTM projections (proj_size > 0) have no per-sample gradient rule; use "
            "proj_size=0 followed by an nn.Linear")
    return FALLBACK
