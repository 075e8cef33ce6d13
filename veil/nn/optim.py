"""SGD with momentum and weight decay on shared weights (and its plaintext twin).

PyTorch's ``SGD`` (dampening 0, not Nesterov) keeps ``b = μ b + (g + λ W)`` and
steps ``W -= η b``. On shares we keep the velocity already scaled by the learning
rate, ``v = η b``: ``v = μ v + η g + η λ W`` and ``W -= v``, the same iterates
for a constant ``η``, with ONE exact truncation per parameter element and step:
the three products with public constants (held with 24 fractional bits, fewer for
gradients beyond 32 bits: :func:`const_bits`) are summed
at ``2^(g + 24)``, where the gradient ``g`` may come untruncated at ``2f`` bits (a
weight gradient), and truncated together back to ``f`` bits, rounding to nearest
(a floor would move every weight by half an ulp per step, ten times that through
the momentum: a drift that costs accuracy over an epoch). The sum must stay
below ``2^62``: ``|v| < 2^(38 - g)`` (64 for weights at ``f = 16``), far above what
a learning-rate-scaled velocity reaches.

Example
-------
>>> import torch
>>> sgd = SGDConfig(lr=0.5, momentum=0.0)
>>> one = torch.tensor([65536])
>>> w, v = twin_sgd_step(sgd, one, torch.tensor([0]), one, grad_bits=16, frac_bits=16)
>>> w.tolist()                                  # 1 - 0.5 * 1
[32768]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from veil.mpc.exact import CONST_BITS, constant
from veil.mpc.truncation import plan as trunc_plan
from veil.mpc.truncation import truncate

if TYPE_CHECKING:
    from veil.mpc.tensor import SecretTensor


@dataclass(frozen=True)
class SGDConfig:
    """Learning rate ``lr``, ``momentum`` and L2 ``weight_decay`` (public hyper-parameters)."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.lr == 0 or self.momentum >= 1:
            raise ValueError(f"need lr > 0 and momentum < 1, got lr={self.lr}, "
                             f"momentum={self.momentum}")

    def constants(self, bits: int = CONST_BITS) -> tuple[int, int, int]:
        """``(μ, η, ηλ)`` as integers with ``bits`` fractional bits."""
        return (constant(self.momentum, bits), constant(self.lr, bits),
                constant(self.lr * self.weight_decay, bits))


def const_bits(grad_bits: int) -> int:
    """Fractional bits of the SGD constants: 24, fewer when the gradient comes at more than
    32 bits, so that the update's sum stays below ``2^56`` (|velocity| < 64)."""
    return min(CONST_BITS, 56 - grad_bits)


def _shift(grad_bits: int, frac_bits: int) -> int:
    if grad_bits < frac_bits:
        raise ValueError(f"gradient held at {grad_bits} bits, below the weights' {frac_bits}")
    return grad_bits - frac_bits


def sgd_step(cfg: SGDConfig, w: SecretTensor, v: SecretTensor, g: SecretTensor,
             grad_bits: int | None = None) -> tuple[SecretTensor, SecretTensor]:
    """One step on shares; returns the new ``(weight, velocity)`` (one round).

    ``g``'s share is held at ``grad_bits`` fractional bits (default: ``w.frac_bits``).
    """
    gb = w.frac_bits if grad_bits is None else grad_bits
    c = const_bits(gb)
    mu, lr, decay = cfg.constants(c)
    up = _shift(gb, w.frac_bits)
    t = v.share * mu
    if decay:
        t = t + w.share * decay
    t = (t << up) + g.share * lr
    bits = c + up
    if w.party.rank == 0:  # round to nearest: a floor would bias every weight by -1/2 ulp a step
        t = t + (1 << (bits - 1))
    v = v._wrap(truncate(w.party, t, bits))
    return w - v, v


def sgd_plan(count: int, grad_bits: int, frac_bits: int) -> list:
    """The dealer requests of :func:`sgd_step` on a parameter of ``count`` elements."""
    return trunc_plan(count, const_bits(grad_bits) + _shift(grad_bits, frac_bits))


def twin_sgd_step(cfg: SGDConfig, w: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                  grad_bits: int, frac_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plaintext :func:`sgd_step` on int64 fixed-point values."""
    c = const_bits(grad_bits)
    mu, lr, decay = cfg.constants(c)
    up = _shift(grad_bits, frac_bits)
    bits = c + up
    v = (((v * mu + w * decay) << up) + g * lr + (1 << (bits - 1))) >> bits
    return w - v, v
