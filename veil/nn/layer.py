"""The unit of a secure graph: :class:`Layer`, and the error for models Veil cannot run.

This module sits below the op table (:mod:`veil.nn.ops`) and the graph
(:mod:`veil.nn.graph`), which both build and read layers.

Example
-------
>>> Layer("fc", "linear", ("x",), (10,)).op
'linear'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class UnsupportedModelError(ValueError):
    """The model uses an op that secure computation cannot run (raised before any computation)."""


@dataclass
class Layer:
    """One step of a secure graph.

    Attributes
    ----------
    name: unique name (the fx node's).
    op: the name of a registered op (:func:`veil.nn.ops.get_op`).
    inputs: names of the layers (or the graph input) it reads.
    out_shape: output shape without the batch dimension.
    weight, bias: float parameters of ``linear``/``conv2d``/``affine`` (model owner's).
    params: static hyper-parameters (stride, padding, kernel size, ...).
    source: the model source line that produced it.
    target: the module path of a layer lowered from a module call (``""`` otherwise): where
        trained parameters go back.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    out_shape: tuple[int, ...]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    target: str = ""
