"""DP-SGD training of audit targets through :mod:`veil.dp` (its PrivacyEngine).

The attacks never implement DP themselves: this adapter hands a fresh model, an
optimiser and a data loader to ``veil.dp.PrivacyEngine`` (per-example clipping,
Gaussian noise from :mod:`veil.csprng`, Poisson sampling) and returns the trained
plain model.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Recipe(Protocol):
    """What DP-SGD reads of a training recipe (e.g. :class:`veil.audit.targets.Recipe`, a
    dataclass; this module does not import it, so the two never form a cycle)."""

    epochs: int
    batch_size: int
    dp_noise: float | None
    dp_clip: float


def train_dp_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe,
                 optimizer: torch.optim.Optimizer) -> nn.Module:
    """Train ``model`` on ``(x, y)`` with DP-SGD: ``recipe.dp_noise``, ``recipe.dp_clip``,
    expected batch ``recipe.batch_size`` under Poisson sampling, ``recipe.epochs`` epochs;
    ``optimizer`` is the recipe's optimiser over ``model``'s parameters."""
    from veil.dp import PrivacyEngine

    if recipe.dp_noise is None or recipe.dp_noise < 0:
        raise ValueError("a DP recipe needs dp_noise >= 0")
    loader = DataLoader(TensorDataset(x, y), batch_size=min(recipe.batch_size, len(x)))
    engine = PrivacyEngine()
    private, opt, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=recipe.dp_noise, max_grad_norm=recipe.dp_clip)
    private.train()
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(recipe.epochs):
        for xb, yb in loader:
            # An empty Poisson batch is still a noisy step (skipping it would be unaccounted
            # and would reveal that the batch was empty).
            opt.zero_grad()
            out = private(xb)
            (loss_fn(out, yb) if len(yb) else out.sum() * 0).backward()
            opt.step()
    return private.detach()


def calibrate(recipe: Recipe, n: int, epsilon: float, delta: float = 1e-5) -> Recipe:
    """The recipe with its noise multiplier set so that training on ``n`` examples spends
    ``(epsilon, delta)`` (``veil.dp.noise_multiplier_for``, RDP accountant)."""
    from dataclasses import replace

    from veil.dp import noise_multiplier_for

    q = min(recipe.batch_size, n) / n
    steps = recipe.epochs * max(1, round(n / min(recipe.batch_size, n)))
    return replace(recipe, dp_noise=noise_multiplier_for(epsilon, delta, q, steps))


def epsilon_for(recipe: Recipe, n: int, delta: float = 1e-5) -> dict:
    """The (ε, δ) the recipe spends on ``n`` training examples (RDP accountant of veil.dp)."""
    from veil.dp import epsilon_for as eps

    q = min(recipe.batch_size, n) / n
    steps = recipe.epochs * max(1, round(n / min(recipe.batch_size, n)))
    return {"epsilon": eps(recipe.dp_noise, q, steps, delta), "delta": delta,
            "sample_rate": q, "steps": steps, "noise_multiplier": recipe.dp_noise,
            "clip": recipe.dp_clip}
