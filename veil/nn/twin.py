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
import torch.nn.functional as F

from veil.nn.graph import Layer, SecureGraph

DEFAULT_FRAC_BITS = 16
# float64 represents every integer below 2^53 exactly; the twin's GEMMs stay below it.
_EXACT = 2.0 ** 53


def encode(x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """Fixed-point encoding ``round(x * 2^f)`` as int64, refusing NaN/inf and overflow."""
    xd = x.detach().double()
    if not torch.isfinite(xd).all():
        raise ValueError("cannot encode NaN or infinite values in fixed point")
    scaled = torch.round(xd * (1 << frac_bits))
    if scaled.numel() and scaled.abs().max() >= 2.0 ** 62:
        raise ValueError(f"value {float(xd.abs().max()):.3g} is out of the fixed-point range "
                         f"with {frac_bits} fractional bits")
    return scaled.to(torch.int64)


def decode(q: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS) -> torch.Tensor:
    """Fixed-point integers back to float64."""
    return q.double() / (1 << frac_bits)


def avgpool_constant(layer: Layer, frac_bits: int = DEFAULT_FRAC_BITS) -> int:
    """The public fixed-point multiplier of an average pooling layer."""
    kh, kw = layer.params["kernel_size"]
    return round((1 << frac_bits) / (kh * kw))


def window_sum(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int]) -> torch.Tensor:
    """Sum over pooling windows (zero padding), for any dtype including int64 shares.

    Example
    -------
    >>> window_sum(torch.ones(1, 1, 4, 4, dtype=torch.int64), (2, 2), (2, 2), (0, 0))
    tensor([[[[4, 4],
              [4, 4]]]])
    """
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    win = x.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])
    return win.sum(dim=(-1, -2))


def _exact_gemm(fn, x: torch.Tensor, w: torch.Tensor, *args) -> torch.Tensor:
    bound = float(x.abs().max()) * float(w.abs().flatten(1).sum(1).max()) if x.numel() else 0.0
    if bound >= _EXACT:
        raise OverflowError("fixed-point product exceeds 2^53 in the twin; use fewer frac_bits")
    return torch.round(fn(x.double(), w.double(), None, *args)).to(torch.int64)


def twin_layer(layer: Layer, args: list[torch.Tensor], frac_bits: int) -> torch.Tensor:
    """One layer on fixed-point int64 plaintext (the secure executor's arithmetic)."""
    x = args[0]
    p = layer.params
    if layer.op in ("linear", "conv2d", "affine"):
        w = encode(layer.weight, frac_bits)
        if layer.op == "linear":
            y = _exact_gemm(F.linear, x, w)
        elif layer.op == "conv2d":
            y = _exact_gemm(F.conv2d, x, w, p["stride"], p["padding"])
        else:
            y = x * w.reshape((1, -1) + (1,) * (x.dim() - 2))
        y = y >> frac_bits
        if layer.bias is not None:
            b = encode(layer.bias, frac_bits)
            y = y + b.reshape((1, -1) + (1,) * (y.dim() - 2))
        return y
    if layer.op == "relu":
        return x.clamp_min(0)
    if layer.op == "maxpool2d":
        pad = p["padding"]
        if pad != (0, 0):
            x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=torch.iinfo(torch.int64).min)
        win = x.unfold(2, p["kernel_size"][0], p["stride"][0]).unfold(
            3, p["kernel_size"][1], p["stride"][1])
        return win.flatten(-2).max(-1).values
    if layer.op == "avgpool2d":
        s = window_sum(x, p["kernel_size"], p["stride"], p["padding"])
        return (s * avgpool_constant(layer, frac_bits)) >> frac_bits
    if layer.op == "add":
        return args[0] + args[1]
    if layer.op == "reshape":
        return x.reshape(x.shape[0], *layer.out_shape)
    if layer.op == "argmax":
        return F.one_hot(x.argmax(-1), x.shape[-1]).to(torch.int64) << frac_bits
    raise AssertionError(layer.op)


def twin_forward(graph: SecureGraph, x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS,
                 decode_output: bool = True) -> torch.Tensor:
    """Run ``graph`` on ``x`` in plaintext fixed point; float64 output unless told otherwise."""
    graph.check_input(x)
    values = {graph.input_name: encode(x, frac_bits)}
    for layer in graph.layers:
        values[layer.name] = twin_layer(layer, [values[i] for i in layer.inputs], frac_bits)
    out = values[graph.output]
    return decode(out, frac_bits) if decode_output else out
