"""The plaintext fixed-point twin of secure inference.

:func:`twin_forward` runs a :class:`~veil.nn.graph.SecureGraph` on plaintext
integers with *exactly* the arithmetic the secure executor performs on shares:
values are encoded with ``frac_bits`` fractional bits, every product is
followed by a truncation (an arithmetic right shift), biases are added at scale
``2^frac_bits`` after it, average pooling is a sum times the public constant
``round(2^f / window)``. The secure result equals the twin's up to the
truncation protocol's error (at most one unit in the last place per
truncation, see :mod:`veil.nn.secure`), so the twin is the reference in tests
and tells how much of the gap to float PyTorch is due to fixed point alone.

Example
-------
>>> import torch
>>> from veil.models import build
>>> from veil.nn import convert
>>> from veil.nn.twin import twin_forward
>>> g = convert(build("network1"), (1, 28, 28))
>>> x = torch.zeros(2, 1, 28, 28)
>>> bool((twin_forward(g, x) - g.forward(x)).abs().max() < 1e-3)
True
"""

from __future__ import annotations

import torch

from veil.nn.fixedpoint import DEFAULT_FRAC_BITS, decode, encode, window_constant, window_sum
from veil.nn.graph import SecureGraph
from veil.nn.layer import Layer
from veil.nn.ops import get_op

__all__ = ["DEFAULT_FRAC_BITS", "avgpool_constant", "decode", "encode", "twin_forward",
           "twin_layer", "window_sum"]


def avgpool_constant(layer: Layer, frac_bits: int = DEFAULT_FRAC_BITS) -> int:
    """The public fixed-point multiplier of an average pooling layer."""
    return window_constant(layer.params["kernel_size"], frac_bits)


def twin_layer(layer: Layer, args: list[torch.Tensor], frac_bits: int) -> torch.Tensor:
    """One layer on fixed-point int64 plaintext (the secure executor's arithmetic)."""
    return get_op(layer.op).twin(layer, args, frac_bits)


def twin_forward(graph: SecureGraph, x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS,
                 decode_output: bool = True) -> torch.Tensor:
    """Run ``graph`` on ``x`` in plaintext fixed point; float64 output unless told otherwise."""
    graph.check_input(x)
    values = {graph.input_name: encode(x, frac_bits)}
    for layer in graph.layers:
        values[layer.name] = twin_layer(layer, [values[i] for i in layer.inputs], frac_bits)
    out = values[graph.output]
    return decode(out, frac_bits) if decode_output else out
