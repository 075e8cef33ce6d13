"""Per-sample gradients: per-layer rules (registered by decorator) and a torch.func fallback.

Example
-------
>>> import torch
>>> from torch import nn
>>> from veil.dp.grad_sample import GradSampleModule
>>> model = GradSampleModule(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
>>> model(torch.randn(8, 4)).pow(2).mean().backward()  # not-secret
>>> sums, stats = model.clipped_sum(max_grad_norm=1.0)
>>> stats["batch"]
8
"""

from veil.dp.grad_sample import (  # noqa: F401  (register rules)
    attention,
    conv,
    linear,
    normalization,
    rnn,
)
from veil.dp.grad_sample.functorch import FunctorchRule
from veil.dp.grad_sample.module import GradSampleModule
from veil.dp.grad_sample.registry import RULES, Rule, register, rule_for

__all__ = ["RULES", "FunctorchRule", "GradSampleModule", "Rule", "register", "rule_for"]
