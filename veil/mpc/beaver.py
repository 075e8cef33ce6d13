"""Beaver-triple protocols: one online round for any bilinear map of two secrets.

With a triple ``(a, b, c = op(a, b))`` from the dealer, the parties open
``e = x - a`` and ``f = y - b`` together (one exchange) and compute locally::

    op(x, y) = c + op(e, b) + op(a, f) + op(e, f)        (the last term by party 0 only)

computed as ``c_i + op(e, b_i + [i = 0] f) + op(a_i, f)``: two local ops per party.

``op`` is the elementwise product (``beaver`` triples, with broadcasting),
``torch.matmul`` (``matmul`` triples) or ``conv2d`` (``conv2d`` triples). The
functions here work on raw ring shares: fixed-point truncation is the caller's
business (:class:`veil.mpc.tensor.SecretTensor` does it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from veil import ring
from veil.sharing.errors import MaterialError
from veil.sharing.triples import apply_bilinear

if TYPE_CHECKING:
    from veil.mpc.party import Party


def _conv_params(stride: ring.IntPair, padding: ring.IntPair) -> dict:
    return {"stride": list(ring._pair(stride, "stride")),
            "padding": list(ring._pair(padding, "padding"))}


def bilinear(party: Party, op: str, x: torch.Tensor, y: torch.Tensor, **op_params) -> torch.Tensor:
    """This party's share of ``op(x, y)`` for secret shares ``x`` and ``y`` (one round).

    ``op`` is ``"beaver"`` (elementwise product), ``"matmul"`` or ``"conv2d"``
    (``op_params``: ``stride``, ``padding``).
    """
    params = {"shape_x": list(x.shape), "shape_y": list(y.shape)}
    if op == "conv2d":
        params.update(_conv_params(op_params.get("stride", 1), op_params.get("padding", 0)))
    m = party.material(op, **params)
    a, b, c = m["a"], m["b"], m["c"]
    if a.shape != x.shape or b.shape != y.shape:
        raise MaterialError(f"{op} triple has shapes {tuple(a.shape)}, {tuple(b.shape)}; "
                            f"expected {tuple(x.shape)}, {tuple(y.shape)}")
    e, f = party.open_many([x - a, y - b])
    opp = {k: params[k] for k in ("stride", "padding") if k in params}
    # c is single-use material owned by this call: accumulate into it in place.
    z = c.add_(apply_bilinear(op, e, b + f if party.rank == 0 else b, **opp))
    return z.add_(apply_bilinear(op, a, f, **opp))


def square(party: Party, x: torch.Tensor) -> torch.Tensor:
    """This party's share of ``x * x`` (one round, half the traffic of a product)."""
    m = party.material("square", shape=list(x.shape))
    a, c = m["a"], m["c"]
    (e,) = party.open_many([x - a])
    # Party 0: c + e * (2a + e); party 1: c + e * 2a.
    t = a + a
    if party.rank == 0:
        t.add_(e)
    return c.add_(e * t)
