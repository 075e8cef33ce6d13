"""Fallback for any layer without a registered rule: ``torch.func`` (vmap over vjp).

For a leaf layer with its own parameters and one tensor input and output, the
per-sample gradient of ``⟨layer(a_i), g_i⟩`` with respect to the parameters is
computed for all samples at once with ``vmap(grad(...))``. This covers Embedding,
Conv3d, InstanceNorm, custom layers... at the cost of materialising per-sample
gradients.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from veil.dp.grad_sample.registry import Rule, trainable


class FunctorchRule(Rule):
    tap = "hook"

    def per_sample(self, module, a, g):
        params = {k: v.detach() for k, v in trainable(module).items()}
        buffers = dict(module.named_buffers(recurse=False))

        def inner(p: dict[str, torch.Tensor], x: torch.Tensor, gy: torch.Tensor):
            out = functional_call(module, {**p, **buffers}, (x.unsqueeze(0),))
            return (out * gy.unsqueeze(0)).sum()

        return vmap(grad(inner), in_dims=(None, 0, 0))(params, a, g)


FALLBACK = FunctorchRule()


def check_fallback(module: nn.Module, name: str) -> None:
    """Refuse layers the fallback cannot handle (own params *and* parametrised children)."""
    if any(True for c in module.children() for p in c.parameters() if p.requires_grad):
        raise NotImplementedError(
            f"module {name or type(module).__name__} ({type(module).__name__}) has its own "
            "trainable parameters and trainable sub-modules; per-sample gradients need its "
            "own parameters in a leaf module (move them into a child nn.Module)."
        )
