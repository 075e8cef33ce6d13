"""Beaver-triple protocols: one online round for any bilinear map of two secrets.

With a triple ``(a, b, c = op(a, b))`` from the dealer, the parties open
``e = x - a`` and ``f = y - b`` together (one exchange) and compute locally::

    op(x, y) = c + op(e, b) + op(a, f) + op(e, f)        (the last term by party 0 only)

computed as ``c_i + op(e, b_i + [i = 0] f) + op(a_i, f)``: two local ops per party.

``op`` is the elementwise product (``beaver`` triples, with broadcasting),
``torch.matmul`` (``matmul`` triples) or ``conv2d`` (``conv2d`` triples). The
functions here work on raw ring shares: fixed-point truncation is the caller's
business (:class:`veil.mpc.tensor.SecretTensor` does it).

**A fixed second operand** (a served model's weights, multiplied by every
query): :func:`open_fixed` opens ``f = y - b`` once under a dealer mask ``b``
that the dealer keeps for this operand (:mod:`veil.sharing.masks`); then
:func:`bilinear_fixed` needs a triple ``(a, c = op(a, b))`` for that same ``b``
and opens only ``e = x - a``: each query's traffic is the size of ``x``, not
of ``x`` and ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
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


@dataclass(frozen=True)
class FixedOperand:
    """A secret operand opened once under a reusable dealer mask (raw ring values).

    ``opened`` is the public ``y - b``; ``local`` is this party's share of ``b`` plus
    ``opened`` for party 0 (the operand of every product with an opened input).
    """

    mask_id: str
    opened: torch.Tensor
    local: torch.Tensor
    _layouts: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> torch.Size:
        return self.opened.shape

    def op_params(self, op: str, params: dict, which: str) -> dict:
        """``apply_bilinear`` parameters for a product with ``opened`` or ``local``."""
        if op != "conv2d":
            return {}
        layout = self._layouts.get(which)
        if layout is None:  # the im2col layout, made once per operand, not per query
            layout = self._layouts[which] = ring.conv2d_weight_matrix(getattr(self, which))
        return {"stride": params["stride"], "padding": params["padding"],
                "weight_matrix": layout}


def open_fixed(party: Party, y: torch.Tensor, mask_id: str) -> FixedOperand:
    """Open the share ``y`` under the dealer's reusable mask ``mask_id`` (one round, once).

    The dealer issues each mask id once, so ``y`` is the only value ever opened
    under it; the opened ``y - b`` is uniform and reveals nothing about ``y``.
    From then on, the input-independent term ``op(a, y - b)`` of every product
    with ``y`` is added to ``c`` as its triple arrives (offline, see
    :meth:`~veil.mpc.party.Party.on_material`).
    """
    m = party.material("fixed_mask", mask_id=mask_id, shape=list(y.shape))
    b = m["b"]
    if b.shape != y.shape:
        raise MaterialError(f"fixed mask {mask_id!r} has shape {tuple(b.shape)}, "
                            f"expected {tuple(y.shape)}")
    f = party.open(y - b)
    operand = FixedOperand(mask_id, f, b + f if party.rank == 0 else b)
    for op in ("beaver", "matmul", "conv2d"):
        party.on_material(f"{op}_fixed", partial(_fold_fixed_term, op, operand), mask_id=mask_id)
    return operand


def _fold_fixed_term(op: str, y: FixedOperand, params: dict, material: dict) -> dict:
    """``c + op(a, y - b)``: the part of a product with ``y`` known before the input."""
    y.op_params(op, params, "local")  # lay out the online operand now, not in the first query
    term = apply_bilinear(op, material["a"], y.opened, **y.op_params(op, params, "opened"))
    return {**material, "c": material["c"].add_(term), "folded": True}


def bilinear_fixed(party: Party, op: str, x: torch.Tensor, y: FixedOperand, **op_params
                   ) -> torch.Tensor:
    """This party's share of ``op(x, y)`` for a fixed operand ``y`` (one round; opens ``x - a``).

    Same result as :func:`bilinear`, with a triple whose ``b`` is ``y``'s reusable mask.
    """
    params = {"shape_x": list(x.shape), "shape_y": list(y.shape), "mask_id": y.mask_id}
    if op == "conv2d":
        params.update(_conv_params(op_params.get("stride", 1), op_params.get("padding", 0)))
    m = party.material(f"{op}_fixed", **params)
    a, c = m["a"], m["c"]
    if a.shape != x.shape:
        raise MaterialError(f"{op} triple has shape {tuple(a.shape)}; expected {tuple(x.shape)}")
    (e,) = party.open_many([x - a])
    z = c.add_(apply_bilinear(op, e, y.local, **y.op_params(op, params, "local")))
    if m.get("folded"):
        return z
    return z.add_(apply_bilinear(op, a, y.opened, **y.op_params(op, params, "opened")))


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
