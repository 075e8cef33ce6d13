"""Plaintext fixed-point arithmetic shared by the twin and the op table.

Values are integers ``round(x * 2^f)`` in int64, as on the ring; the GEMMs run in
float64, exact while every partial sum stays below 2^53.

Example
-------
>>> import torch
>>> decode(encode(torch.tensor([1.5, -0.25]))).tolist()
[1.5, -0.25]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def window_constant(kernel_size: tuple[int, int], frac_bits: int = DEFAULT_FRAC_BITS) -> int:
    """The public fixed-point multiplier ``round(2^f / (kh * kw))`` of average pooling."""
    kh, kw = kernel_size
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


def exact_gemm(fn, x: torch.Tensor, w: torch.Tensor, *args) -> torch.Tensor:
    """``fn(x, w, None, *args)`` (``F.linear``/``F.conv2d``) on int64 values, exactly."""
    bound = float(x.abs().max()) * float(w.abs().flatten(1).sum(1).max()) if x.numel() else 0.0
    if bound >= _EXACT:
        raise OverflowError("fixed-point product exceeds 2^53 in the twin; use fewer frac_bits")
    return torch.round(fn(x.double(), w.double(), None, *args)).to(torch.int64)


def window_index(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int]) -> torch.Tensor:
    """Flat positions in the padded ``(H + 2ph) x (W + 2pw)`` plane of every window element,
    ``(oh * ow * kh * kw,)`` in the ``unfold`` order of pooling."""
    hp, wp = in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1]
    pos = torch.arange(hp * wp).reshape(1, 1, hp, wp)
    return pos.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1]).reshape(-1)


def fold_windows(values: torch.Tensor, in_hw: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The adjoint of taking windows: add each ``(N, C, oh, ow, kh*kw)`` window element back
    at its input position; ``(N, C, H, W)`` (padding dropped). Works on int64 shares."""
    n, c = values.shape[:2]
    hp, wp = in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1]
    idx = window_index(in_hw, kernel, stride, padding).to(values.device)
    out = values.new_zeros((n, c, hp * wp)).index_add_(2, idx, values.reshape(n, c, -1))
    out = out.reshape(n, c, hp, wp)
    return out[:, :, padding[0]:padding[0] + in_hw[0], padding[1]:padding[1] + in_hw[1]]
