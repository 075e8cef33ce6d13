"""Rules for layers re-run functionally on their own parameters, recorded in parts.

A recurrent or attention layer is a few matrix products with its parameters plus
parameter-free arithmetic. Re-running the layer's forward with those products done by
:class:`LinearTap` (and a :class:`DirectTap` for parameters used as values, such as
attention's ``bias_k``) records, per product, the inputs ``a`` and the backprops ``g``
for the whole sequence at once; each product's per-sample gradient is then
``Σ_t g_t a_tᵀ`` (ghost norm or materialised, see :func:`linear_norm_and_sum`). The
layer is used as it is: no module is swapped, its own parameters are read at each call.

Records (one per product and call) are tuples:

- ``("linear", weight name, bias name or None, rows or None, a (B, T, d), g (B, T, o))``:
  the product writes the rows ``rows`` of the weight (and bias);
- ``("direct", name, per-sample gradient (B, *shape))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from veil.dp.grad_sample.linear import linear_norm_and_sum, linear_per_sample
from veil.dp.grad_sample.registry import Rule, Summer, materialised_norm_and_sum


class LinearTap(torch.autograd.Function):
    """``x Wᵀ + b`` over (B, T, d) that hands ``(x, ∂L/∂y)`` to ``on_backward`` instead of
    computing the batch gradients of W and b."""

    @staticmethod
    def forward(ctx, x, weight, bias, on_backward):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.on_backward = on_backward
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        ctx.on_backward(x, g)
        gx = g.matmul(weight) if ctx.needs_input_grad[0] else None
        return gx, None, None, None


class DirectTap(torch.autograd.Function):
    """``param`` broadcast over the batch (``expanded``); hands ``∂L/∂out`` (per sample) to
    ``on_backward`` instead of giving ``param`` its batch gradient."""

    @staticmethod
    def forward(ctx, expanded, param, on_backward):  # type: ignore[override]
        ctx.on_backward = on_backward
        return expanded.clone()

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        ctx.on_backward(g)
        return None, None, None


def tapped_linear(record, x: torch.Tensor, module: nn.Module, w_name: str,
                  b_name: str | None, rows: slice | None = None) -> torch.Tensor:
    """``x W[rows]ᵀ + b[rows]`` with W, b the module's parameters of these names."""
    w = _get(module, w_name)
    b = _get(module, b_name) if b_name else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None

    def on_backward(a: torch.Tensor, g: torch.Tensor) -> None:
        record("linear", w_name, b_name, rows, a, g)

    return LinearTap.apply(x, w, b, on_backward)


def _get(module: nn.Module, name: str) -> torch.Tensor:
    for part in name.split("."):
        module = getattr(module, part)
    return module  # type: ignore[return-value]


class PartsRule(Rule):
    """Per-sample gradients from ``("linear", ...)`` and ``("direct", ...)`` records."""

    tap = "function"
    knows_batch_dim = True

    def batch_size(self, record: tuple) -> int:
        return record[-1].shape[0]

    def _trainable(self, module, name: str | None) -> bool:
        return name is not None and _get(module, name).requires_grad

    def per_sample_all(self, module, records):
        total: dict[str, torch.Tensor] = {}

        def add(name: str, rows, v: torch.Tensor) -> None:
            if name not in total:
                total[name] = v.new_zeros(v.shape[0], *_get(module, name).shape)
            if rows is None:
                total[name] += v
            else:
                total[name][:, rows] += v

        for rec in records:
            if rec[0] == "direct":
                if self._trainable(module, rec[1]):
                    add(rec[1], None, rec[2].reshape(rec[2].shape[0], *_get(module, rec[1]).shape))
                continue
            _, w_name, b_name, rows, a, g = rec
            w, b = linear_per_sample(a, g, self._trainable(module, w_name),
                                     self._trainable(module, b_name))
            if w is not None:
                add(w_name, rows, w)
            if b is not None:
                add(b_name, rows, b)
        return total

    def norm_and_sum_all(self, module, records) -> tuple[torch.Tensor, Summer]:
        keys = [(r[1], None) if r[0] == "direct" else (r[1], _key(r[3])) for r in records]
        if len(set(keys)) < len(keys):  # the layer was called twice in one backward pass
            return materialised_norm_and_sum(self.per_sample_all(module, records))
        norm_sq = None
        summers = []
        for rec in records:
            if rec[0] == "direct":
                if not self._trainable(module, rec[1]):
                    continue
                v = rec[2].reshape(rec[2].shape[0], -1)
                ns = v.pow(2).sum(1)
                summers.append((rec[1], None, None, None,
                                lambda c, v=v, n=rec[1]: (c.to(v.dtype) @ v).view(
                                    _get(module, n).shape)))
            else:
                _, w_name, b_name, rows, a, g = rec
                w_grad, b_grad = self._trainable(module, w_name), self._trainable(module, b_name)
                if not (w_grad or b_grad):
                    continue
                ns, s = linear_norm_and_sum(a, g, w_grad, b_grad)
                summers.append((w_name if w_grad else None, b_name if b_grad else None, rows, s,
                                None))
            norm_sq = ns if norm_sq is None else norm_sq + ns
        if norm_sq is None:
            b = records[0][-1].shape[0]
            norm_sq = torch.zeros(b, dtype=records[0][-1].dtype, device=records[0][-1].device)

        def summer(c: torch.Tensor) -> dict[str, torch.Tensor]:
            out: dict[str, torch.Tensor] = {}
            for w_name, b_name, rows, s, direct in summers:
                if direct is not None:
                    out[w_name] = direct(c)
                    continue
                w, b = s(c)
                for name, v in ((w_name, w), (b_name, b)):
                    if name is None or v is None:
                        continue
                    if rows is None:
                        out[name] = v
                    else:
                        full = out.setdefault(name, v.new_zeros(_get(module, name).shape))
                        full[rows] += v
            return out

        return norm_sq, summer


def _key(rows: slice | None):
    return None if rows is None else (rows.start, rows.stop)
