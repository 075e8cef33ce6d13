"""Helpers shared by several ops: bilinear plans, bias handling, gate plans."""

from __future__ import annotations

from veil.nn.layer import Layer
from veil.nn.ops.base import Op, Request, mask_id


def bilinear_plan(op: Op, layer: Layer, triple: str, in_shape: tuple[int, ...], batch: int,
                  session: str | None, **extra) -> list[Request]:
    """One triple of kind ``triple`` (``matmul``/``conv2d``/``beaver``) for ``x (*) weight``.

    With a ``session``, the triple's ``b`` is the weight's reusable mask.
    """
    params: dict = {"shape_x": [batch, *in_shape],
                    "shape_y": list(op.param_view(layer, "weight", layer.weight).shape), **extra}
    if session is None:
        return [(triple, params)]
    return [(f"{triple}_fixed", {**params, "mask_id": mask_id(session, layer.name)})]


def gate_plan(gate: str, shape: tuple[int, ...], **params) -> list[Request]:
    """The FSS requests of the :mod:`veil.mpc.nonlinear` gate ``gate`` on ``shape``."""
    from veil.mpc import nonlinear

    return list(nonlinear.plan(gate, shape, **params))


def channel_shape(ndim: int) -> tuple[int, ...]:
    """Broadcast shape of a per-channel vector against a batch of ``ndim`` dimensions."""
    return (1, -1) + (1,) * (ndim - 2)
