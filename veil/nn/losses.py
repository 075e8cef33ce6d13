"""Training losses on secret shares: the gradient of the loss w.r.t. the logits.

Private training never needs the loss value itself, only its gradient, which
stays shared:

- ``"mse"``: mean squared error against one-hot targets (AriaNN's choice for
  Network1 and LeNet), ``dL/dy = 2 (y - t) / (batch * classes)`` (PyTorch's
  ``MSELoss`` with mean reduction): one exact truncation, local otherwise;
- ``"cross_entropy"``: softmax cross-entropy, ``dL/dy = (softmax(y) - t) / batch``
  with the private softmax of :func:`veil.mpc.exact.softmax` (FSS max subtraction,
  ``exp`` and reciprocal at 26 fractional bits; at most 1e-3 absolute error per
  probability).

Each loss has its dealer plan and a bit-exact plaintext twin.

Example
-------
>>> import torch
>>> y = torch.tensor([[65536, 0]]); t = torch.tensor([[65536, 0]])
>>> twin_loss_grad("mse", y, t, 16).tolist()      # y == t: no gradient
[[0, 0]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from veil.mpc import exact
from veil.mpc.truncation import plan as trunc_plan
from veil.mpc.truncation import truncate

if TYPE_CHECKING:
    from veil.mpc.tensor import SecretTensor

LOSSES = ("cross_entropy", "mse")
#: The softmax runs on logits with at most this many fractional bits (its internals use 26).
SOFTMAX_BITS = 16


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
    return name


def _factor(name: str, batch: int, classes: int) -> float:
    return 2.0 / (batch * classes) if name == "mse" else 1.0 / batch


def _softmax(y: SecretTensor) -> SecretTensor:
    """The private softmax at (at most) :data:`SOFTMAX_BITS`, returned at ``y``'s precision."""
    drop = y.frac_bits - SOFTMAX_BITS
    if drop <= 0:
        return exact.softmax(y)
    p = exact.softmax(y._wrap(truncate(y.party, y.share, drop), SOFTMAX_BITS))
    return p._wrap(p.share << drop, y.frac_bits)


def loss_grad(name: str, y: SecretTensor, t: SecretTensor) -> SecretTensor:
    """Shares of ``dL/dy`` for logits ``y`` and one-hot targets ``t`` (both ``(batch, C)``)."""
    batch, classes = y.shape
    p = _softmax(y) if name == "cross_entropy" else y
    return exact.scale(p - t, _factor(name, batch, classes))


def loss_grad_plan(name: str, batch: int, classes: int, frac_bits: int) -> list:
    """The dealer requests of :func:`loss_grad`."""
    out: list = []
    if name == "cross_entropy":
        if frac_bits > SOFTMAX_BITS:
            out += trunc_plan(batch * classes, frac_bits - SOFTMAX_BITS)
        out += exact.softmax_plan((batch, classes), min(frac_bits, SOFTMAX_BITS))
    return out + exact.scale_plan(batch * classes)


def twin_loss_grad(name: str, y: torch.Tensor, t: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """Plaintext :func:`loss_grad` on int64 fixed-point values."""
    batch, classes = y.shape
    p = y
    if name == "cross_entropy":
        drop = max(0, frac_bits - SOFTMAX_BITS)
        p = exact.twin_softmax(y >> drop, frac_bits - drop) << drop
    return exact.twin_scale(p - t, _factor(name, batch, classes))
