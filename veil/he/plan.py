"""What client and server agree on before any encryption: layout, dimensions, parameters, keys.

Two layouts (both evaluate the same :class:`~veil.he.convert.HEGraph`):

``vector`` (latency)
    One image per ciphertext, its features repeated with a power-of-two period
    across the slots; affine maps are Halevi-Shoup diagonal products with
    baby-step/giant-step rotations (Gazelle's hybrid method for rectangular
    matrices), so every rotation is by a power of two.
``batch`` (throughput)
    One ciphertext per feature, up to N/2 images in its slots; affine maps are
    sums of ciphertext-times-scalar products (no rotations, no Galois keys).

Example
-------
>>> from torch import nn
>>> from veil.he.convert import Square, convert
>>> g = convert(nn.Sequential(nn.Linear(30, 8), Square(), nn.Linear(8, 3)), (30,))
>>> s = plan(g, "vector")
>>> s.period, s.galois_steps, s.params.poly_modulus_degree
(32, (1, 2, 4, 8, 16), 8192)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veil.he.convert import HEGraph
from veil.he.params import CKKSParameters, InsecureParametersError, choose_parameters

LAYOUTS = ("vector", "batch")


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def bsgs(p_in: int, p_out: int) -> tuple[int, int, int]:
    """``(diagonals, baby, giant)`` of the hybrid diagonal product of a ``p_out x p_in`` matrix."""
    d = min(p_in, p_out)
    baby = 1 << math.ceil(math.log2(d) / 2)
    return d, baby, d // baby


@dataclass(frozen=True)
class HESpec:
    """The public description of an HE deployment (sent to the client; holds no weights).

    Attributes
    ----------
    layout: ``"vector"`` or ``"batch"``.
    in_features, out_features: flattened per-image sizes.
    input_shape: per-image input shape.
    period: slot period of an input ciphertext (``vector``; 0 for ``batch``).
    params: the CKKS parameters.
    galois_steps: the rotations the server needs keys for.
    depth: the model's multiplicative depth.
    """

    layout: str
    input_shape: tuple[int, ...]
    out_features: int
    period: int
    params: CKKSParameters
    galois_steps: tuple[int, ...]
    depth: int

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def images_per_ciphertext(self) -> int:
        return 1 if self.layout == "vector" else self.params.slots

    def to_dict(self) -> dict:
        return {"layout": self.layout, "input_shape": list(self.input_shape),
                "out_features": self.out_features, "period": self.period,
                "params": self.params.to_dict(), "galois_steps": list(self.galois_steps),
                "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict) -> HESpec:
        return cls(d["layout"], tuple(d["input_shape"]), int(d["out_features"]),
                   int(d["period"]), CKKSParameters.from_dict(d["params"]),
                   tuple(int(s) for s in d["galois_steps"]), int(d["depth"]))


def plan(graph: HEGraph, layout: str = "vector",
         params: CKKSParameters | None = None) -> HESpec:
    """Choose (or check) parameters and the rotation keys for ``graph`` in ``layout``.

    Raises
    ------
    InsecureParametersError
        For parameters below 128-bit security, or too shallow/small for the model.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    steps: set[int] = set()
    slots = 1
    if layout == "vector":
        for op in graph.ops:
            p_in, p_out = pow2(op.in_features), pow2(op.out_features)
            slots = max(slots, p_in, p_out)
            if op.kind != "affine":
                continue
            _, baby, giant = bsgs(p_in, p_out)
            if baby > 1:
                steps.add(1)
            if giant > 1:
                steps.add(baby)
            k = p_in // 2
            while k >= p_out:
                steps.add(k)
                k //= 2
    if params is None:
        params = choose_parameters(graph.depth, slots)
    params.check()
    if params.depth < graph.depth:
        raise InsecureParametersError(
            f"the model needs {graph.depth} multiplicative levels, the parameters give "
            f"{params.depth} (coeff_mod_bit_sizes={list(params.coeff_mod_bit_sizes)})")
    if params.slots < slots:
        raise ValueError(f"the vector layout needs {slots} slots, N={params.poly_modulus_degree} "
                         f"gives {params.slots}")
    period = pow2(graph.in_features) if layout == "vector" else 0
    return HESpec(layout, graph.input_shape, graph.ops[-1].out_features, period, params,
                  tuple(sorted(steps)), graph.depth)
