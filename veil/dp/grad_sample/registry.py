"""Registry of per-layer rules for per-sample gradients.

A rule turns what a layer saw in one batch (its input activations ``a`` and the
gradient of the loss with respect to its output, the backprops ``g``) into, per sample:
the squared norm of that sample's gradient, and, given per-sample clip factors ``c``,
the clipped sum ``Σ_i c_i ∇_i``. Rules may do this without materialising per-sample
gradients ("ghost clipping", Li et al. 2021; Bu et al. 2022), which is where the
speed comes from. A rule is registered for layer types with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Summer = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class Rule:
    """Per-sample gradient rule for one layer family.

    ``tap`` says how the engine captures ``(a, g)``: ``"function"`` replaces the layer's
    forward by a custom autograd function that skips the (unneeded) batch weight
    gradient; ``"hook"`` uses forward hooks and works for any layer.
    """

    tap: str = "hook"
    #: the rule handles the parameters of the layer's sub-modules too (e.g. attention's
    #: output projection); they get no rule of their own
    covers_children: bool = False
    #: records are batch-major whatever the model's layout (the layer knows its own)
    knows_batch_dim: bool = False

    def supports(self, module: nn.Module) -> bool:
        return True

    def parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        """The trainable parameters this rule gives per-sample gradients for, by name."""
        if self.covers_children:
            return {n: p for n, p in module.named_parameters() if p.requires_grad}
        return trainable(module)

    def attach(self, module: nn.Module, record):
        """Install a ``"hook"`` tap recording ``(input, backprop)``; returns its handle."""

        def hook(_mod, inputs, output):
            if not record.active:
                return
            if len(inputs) != 1 or not isinstance(output, torch.Tensor):
                raise NotImplementedError(
                    f"{type(module).__name__}: per-sample gradients need one tensor input "
                    "and one tensor output"
                )
            a = inputs[0].detach()
            if output.requires_grad:
                output.register_hook(lambda g: record(a, g))

        return module.register_forward_hook(hook)

    def per_sample(
        self, module: nn.Module, a: torch.Tensor, g: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-sample gradients ``{param name: (B, *param.shape)}`` of trainable params."""
        raise NotImplementedError

    def norm_and_sum(self, module: nn.Module, *record) -> tuple[torch.Tensor, Summer]:
        """Per-sample squared norms ``(B,)`` and a function ``c -> Σ_i c_i ∇_i``."""
        return materialised_norm_and_sum(self.per_sample(module, *record))

    # All records of one backward pass. A rule records one ``(a, g)`` per call of the
    # layer; a layer called several times in one forward (weight sharing) gets the sum
    # of the per-sample gradients. Rules that record several parts per call override.
    def batch_size(self, record: tuple) -> int:
        return record[-1].shape[0]

    def per_sample_all(self, module: nn.Module, records: list[tuple]) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        for rec in records:
            for k, v in self.per_sample(module, *rec).items():
                total[k] = total[k] + v if k in total else v
        return total

    def norm_and_sum_all(
        self, module: nn.Module, records: list[tuple]
    ) -> tuple[torch.Tensor, Summer]:
        if len(records) == 1:
            return self.norm_and_sum(module, *records[0])
        return materialised_norm_and_sum(self.per_sample_all(module, records))


def materialised_norm_and_sum(grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Summer]:
    first = next(iter(grads.values()))
    norm_sq = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)
    for gs in grads.values():
        norm_sq = norm_sq + torch.linalg.vector_norm(gs.reshape(gs.shape[0], -1), dim=1).square()

    def summer(c: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            name: torch.einsum("b,bk->k", c.to(gs.dtype), gs.reshape(gs.shape[0], -1)).view(
                gs.shape[1:]
            )
            for name, gs in grads.items()
        }

    return norm_sq, summer


RULES: dict[type[nn.Module], Rule] = {}


def register(*layer_types: type[nn.Module]) -> Callable[[type[Rule]], type[Rule]]:
    """Class decorator: register a :class:`Rule` for the given layer types."""

    def deco(cls: type[Rule]) -> type[Rule]:
        for t in layer_types:
            RULES[t] = cls()
        return cls

    return deco


def rule_for(module: nn.Module) -> Rule | None:
    """The registered rule for this exact layer type, if it supports this instance."""
    rule = RULES.get(type(module))
    if rule is not None and rule.supports(module):
        return rule
    return None


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's own (non-recursive) parameters that require gradients."""
    return {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
