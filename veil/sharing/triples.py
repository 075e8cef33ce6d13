"""Beaver triples for bilinear maps: elementwise products, matmul, conv2d, squares.

A triple for a bilinear map ``op`` is ``(a, b, c = op(a, b))`` additively
shared over Z_2^64. Seed compression: party 0's whole share ``(a0, b0, c0)`` and
party 1's ``(a1, b1)`` are expanded from 16-byte seeds; the dealer sends party 0
one seed and party 1 one seed plus ``c1 = op(a, b) - c0``. The dealer thus
sends one tensor of the output's size instead of six tensors.

Registered kinds and their parameters:

- ``beaver``: ``shape_x``, ``shape_y`` (broadcasting elementwise product);
- ``matmul``: ``shape_x``, ``shape_y`` (``torch.matmul`` shapes, batched too);
- ``conv2d``: ``shape_x`` (N, C, H, W), ``shape_y`` (weight O, C, kH, kW), ``stride``,
  ``padding`` (pairs);
- ``square``: ``shape`` (``a`` and ``c = a * a``);
- ``fixed_mask``: ``mask_id``, ``shape``: shares of the dealer's reusable mask ``b``
  (:mod:`veil.sharing.masks`), issued once per id;
- ``beaver_fixed``, ``matmul_fixed``, ``conv2d_fixed``: as the triples above, but
  ``b`` is the issued mask ``mask_id`` (``shape_y`` its shape): each party gets
  ``(a, c = op(a, b))`` only, and keeps its share of ``b`` from ``fixed_mask``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from veil import ring
from veil.csprng import CSPRNG
from veil.sharing.errors import MaterialError
from veil.sharing.masks import MaskKeyring
from veil.sharing.material import register_material

Shape = Sequence[int]


def broadcast_shape(sx: Shape, sy: Shape) -> tuple[int, ...]:
    """Broadcast two shapes like torch (pure Python: ``torch.broadcast_shapes`` costs ~1 s on
    its first call)."""
    sx, sy = tuple(int(d) for d in sx), tuple(int(d) for d in sy)
    n = max(len(sx), len(sy))
    px, py = (1,) * (n - len(sx)) + sx, (1,) * (n - len(sy)) + sy
    out = []
    for a, b in zip(px, py, strict=True):
        if a != b and a != 1 and b != 1:
            raise ValueError(f"shapes {sx} and {sy} do not broadcast")
        out.append(b if a == 1 else a)
    return tuple(out)


def matmul_shape(sx: Shape, sy: Shape) -> tuple[int, ...]:
    """The shape of ``torch.matmul(x, y)`` (computed without touching any tensor)."""
    sx, sy = tuple(sx), tuple(sy)
    if not sx or not sy:
        raise ValueError("matmul needs tensors of at least one dimension")
    x2 = (1,) + sx if len(sx) == 1 else sx
    y2 = sy + (1,) if len(sy) == 1 else sy
    if x2[-1] != y2[-2]:
        raise ValueError(f"matmul shapes {sx} @ {sy}: inner dimensions {x2[-1]} != {y2[-2]}")
    try:
        batch = broadcast_shape(x2[:-2], y2[:-2])
    except ValueError:
        raise ValueError(f"matmul shapes {sx} @ {sy}: batch dimensions do not broadcast") from None
    out = batch + (x2[-2], y2[-1])
    if len(sx) == 1:
        out = out[:-2] + out[-1:]
    if len(sy) == 1:
        out = out[:-1]
    return out


def bilinear_shape(op: str, shape_x: Shape, shape_y: Shape, **op_params) -> tuple[int, ...]:
    """The output shape of ``op(x, y)`` (raises a clear error on incompatible shapes)."""
    sx, sy = torch.Size(shape_x), torch.Size(shape_y)
    if op == "beaver":
        return broadcast_shape(sx, sy)
    if op == "matmul":
        return matmul_shape(sx, sy)
    if op == "conv2d":
        return ring.conv2d_output_shape(sx, sy, op_params.get("stride", 1),
                                        op_params.get("padding", 0))
    raise ValueError(f"unknown bilinear op {op!r}")


def apply_bilinear(op: str, x: torch.Tensor, y: torch.Tensor, **op_params) -> torch.Tensor:
    """``op(x, y)`` in the ring Z_2^64 (``conv2d`` also takes ``y``'s ``weight_matrix``)."""
    if op == "beaver":
        return x * y
    if op == "matmul":
        return ring.matmul(x, y)
    if op == "conv2d":
        return ring.conv2d(x, y, op_params.get("stride", 1), op_params.get("padding", 0),
                           weight_matrix=op_params.get("weight_matrix"))
    raise ValueError(f"unknown bilinear op {op!r}")


def _op_params(op: str, params: dict) -> dict:
    return {k: params[k] for k in ("stride", "padding") if k in params} if op == "conv2d" else {}


def _generate_fixed(op: str, rng: CSPRNG, keyring: MaskKeyring, shape_x: Shape, shape_y: Shape,
                    mask_id: str, **params) -> tuple[dict, dict]:
    opp = _op_params(op, params)
    b = keyring.mask(mask_id, shape_y)
    shape_c = bilinear_shape(op, shape_x, shape_y, **opp)
    s0, s1 = rng.seed(), rng.seed()
    g0 = CSPRNG(s0)
    a0, c0 = g0.integers(shape_x), g0.integers(shape_c)
    a = CSPRNG(s1).integers(shape_x).add_(a0)
    return {"seed": s0}, {"seed": s1, "c": apply_bilinear(op, a, b, **opp).sub_(c0)}


def _generate(op: str, rng: CSPRNG, shape_x: Shape, shape_y: Shape, **params) -> tuple[dict, dict]:
    opp = _op_params(op, params)
    shape_c = bilinear_shape(op, shape_x, shape_y, **opp)
    s0, s1 = rng.seed(), rng.seed()
    g0, g1 = CSPRNG(s0), CSPRNG(s1)
    a0, b0, c0 = g0.integers(shape_x), g0.integers(shape_y), g0.integers(shape_c)
    a1, b1 = g1.integers(shape_x), g1.integers(shape_y)
    c1 = apply_bilinear(op, a0 + a1, b0 + b1, **opp) - c0
    return {"seed": s0}, {"seed": s1, "c": c1}


def _seeded(material: dict, what: str) -> CSPRNG:
    seed = material.get("seed")
    if not isinstance(seed, bytes) or len(seed) != 16:
        raise MaterialError(f"{what}: missing or malformed seed")
    return CSPRNG(seed)


def _correction(material: dict, shape: Sequence[int], what: str, key: str = "c"
                ) -> torch.Tensor:
    c = material.get(key)
    if not isinstance(c, torch.Tensor) or c.dtype != torch.int64 or tuple(c.shape) != tuple(shape):
        raise MaterialError(f"{what}: correction term missing or of the wrong shape")
    return c


def _expand(op: str, rank: int, material: dict, shape_x: Shape, shape_y: Shape, **params) -> dict:
    opp = _op_params(op, params)
    shape_c = bilinear_shape(op, shape_x, shape_y, **opp)
    g = _seeded(material, f"{op} triple")
    a, b = g.integers(shape_x), g.integers(shape_y)
    c = g.integers(shape_c) if rank == 0 else _correction(material, shape_c, f"{op} triple")
    return {"a": a, "b": b, "c": c}


def _expand_fixed(op: str, rank: int, material: dict, shape_x: Shape, shape_y: Shape,
                  mask_id: str, **params) -> dict:
    opp = _op_params(op, params)
    shape_c = bilinear_shape(op, shape_x, shape_y, **opp)
    g = _seeded(material, f"{op} triple with a fixed mask")
    a = g.integers(shape_x)
    c = g.integers(shape_c) if rank == 0 else _correction(material, shape_c, f"{op} triple")
    return {"a": a, "c": c}


def _register(op: str) -> None:
    def generate(rng: CSPRNG, **params) -> tuple[dict, dict]:
        return _generate(op, rng, **params)

    def expand(rank: int, material: dict, **params) -> dict:
        return _expand(op, rank, material, **params)

    def generate_fixed(rng: CSPRNG, keyring: MaskKeyring, **params) -> tuple[dict, dict]:
        return _generate_fixed(op, rng, keyring, **params)

    def expand_fixed(rank: int, material: dict, **params) -> dict:
        return _expand_fixed(op, rank, material, **params)

    def size(*, shape_x: Shape, shape_y: Shape, **params) -> int:  # a, b, c
        out = bilinear_shape(op, shape_x, shape_y, **_op_params(op, params))
        return 8 * (math.prod(shape_x) + math.prod(shape_y) + math.prod(out))

    def size_fixed(*, shape_x: Shape, shape_y: Shape, mask_id: str, **params) -> int:  # a, c
        out = bilinear_shape(op, shape_x, shape_y, **_op_params(op, params))
        return 8 * (math.prod(shape_x) + math.prod(out))

    generate.__name__ = generate.__qualname__ = f"generate_{op}_triple"
    generate_fixed.__name__ = generate_fixed.__qualname__ = f"generate_{op}_fixed_triple"
    register_material(op, expand=expand, replace=True, family="triple", size=size)(generate)
    register_material(f"{op}_fixed", expand=expand_fixed, replace=True, keyed=True,
                      family="triple", size=size_fixed)(generate_fixed)


for _op in ("beaver", "matmul", "conv2d"):
    _register(_op)


def _expand_fixed_mask(rank: int, material: dict, *, mask_id: str, shape: Shape) -> dict:
    if rank == 0:
        return {"b": _seeded(material, "fixed mask").integers(shape)}
    return {"b": _correction(material, shape, "fixed mask", key="b")}


@register_material("fixed_mask", expand=_expand_fixed_mask, replace=True, keyed=True,
                   family="mask", size=lambda *, mask_id, shape: 8 * math.prod(shape))
def generate_fixed_mask(rng: CSPRNG, keyring: MaskKeyring, *, mask_id: str, shape: Shape
                        ) -> tuple[dict, dict]:
    """Shares of the reusable mask ``mask_id`` (issued once: a second request raises)."""
    b = keyring.issue(mask_id, shape)
    s0 = rng.seed()
    return {"seed": s0}, {"b": b - CSPRNG(s0).integers(shape)}


def _expand_square(rank: int, material: dict, *, shape: Shape) -> dict:
    g = _seeded(material, "square pair")
    a = g.integers(shape)
    c = g.integers(shape) if rank == 0 else _correction(material, a.shape, "square pair")
    return {"a": a, "c": c}


@register_material("square", expand=_expand_square, replace=True, family="triple",
                   size=lambda *, shape: 16 * math.prod(shape))
def generate_square_pair(rng: CSPRNG, *, shape: Shape) -> tuple[dict, dict]:
    """Shares of ``(a, a*a)`` for squaring a secret in one round."""
    s0, s1 = rng.seed(), rng.seed()
    g0, g1 = CSPRNG(s0), CSPRNG(s1)
    a0, c0 = g0.integers(shape), g0.integers(shape)
    a = a0 + g1.integers(shape)
    return {"seed": s0}, {"seed": s1, "c": a * a - c0}
