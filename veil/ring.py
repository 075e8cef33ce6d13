"""The ring Z_2^64 on torch int64 tensors, and fixed-point encoding into it.

Shares are int64 tensors and every operation wraps around modulo 2^64 (two's
complement), which is exactly the arithmetic of the ring Z_2^64. Real numbers
are carried in fixed point: ``x`` is encoded as ``round(x * 2^f)`` with ``f``
fractional bits (16 by default).

Products of two fixed-point numbers carry ``2f`` fractional bits and are brought
back to ``f`` bits by :func:`truncate_share`, the local (SecureML-style)
probabilistic truncation: each party shifts its own share, with no
communication. Its result is off by at most one unit in the last place (ulp,
2^-f) except with probability at most ``2^(k + 1 - 64)`` per element, where
``|x| < 2^k`` is the magnitude of the product *before* truncation (in ring
units, i.e. with ``2f`` fractional bits). With ``f = 16`` and plaintext values
below 2^10 that is below 2^-21 per element; see ``docs/mpc.md``.

Matrix products and convolutions in the ring need exact int64 arithmetic. On
CPU torch has native int64 kernels; CUDA has no int64 GEMM, so there (or when
asked) the operands are split into limbs whose partial products are exact in
float64 GEMMs and recombined modulo 2^64.

Example
-------
>>> import torch
>>> from veil import ring
>>> x = ring.encode(torch.tensor([-1.5, 0.25]))
>>> ring.decode(x)
tensor([-1.5000,  0.2500], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RING_BITS = 64
DEFAULT_FRAC_BITS = 16
#: The largest supported number of fractional bits (products need 2f bits of headroom).
MAX_FRAC_BITS = 30
RING_DTYPE = torch.int64

IntPair = int | Sequence[int]


def check_frac_bits(frac_bits: int) -> int:
    """Validate a number of fractional bits and return it."""
    if not isinstance(frac_bits, int) or isinstance(frac_bits, bool):
        raise TypeError(f"frac_bits must be an int, got {type(frac_bits).__name__}")
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be in [0, {MAX_FRAC_BITS}], got {frac_bits}")
    return frac_bits


def encode_limit(frac_bits: int = DEFAULT_FRAC_BITS) -> float:
    """The bound ``L``: :func:`encode` accepts values in ``[-L, L)``, ``L = 2^(62 - f)``.

    One bit of headroom is kept below the ring's 2^63 so that the sum or
    difference of two encoded values never wraps.
    """
    return float(2 ** (RING_BITS - 2 - check_frac_bits(frac_bits)))


def encode(
    x: torch.Tensor | float | int | Sequence,
    frac_bits: int = DEFAULT_FRAC_BITS,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Encode real values into Z_2^64 in fixed point: ``round(x * 2^frac_bits)``.

    Integer inputs are scaled exactly (no float rounding). NaN, infinities and
    values outside ``[-2^(62-f), 2^(62-f))`` raise :class:`ValueError`.

    Example
    -------
    >>> encode(torch.tensor([1.0, -0.5]), frac_bits=4)
    tensor([16, -8])
    """
    f = check_frac_bits(frac_bits)
    t = torch.as_tensor(x)
    if device is not None:
        t = t.to(device)
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    limit = 2 ** (RING_BITS - 2 - f)
    if t.is_complex():
        raise TypeError("complex values cannot be encoded in fixed point")
    if not t.is_floating_point():
        t = t.to(torch.int64)
        if t.numel() and bool(((t >= limit) | (t < -limit)).any()):
            bad = t[(t >= limit) | (t < -limit)].flatten()[0].item()
            raise ValueError(
                f"value {bad} is outside the fixed-point range [-2^{62 - f}, 2^{62 - f}) "
                f"for frac_bits={f}"
            )
        return t << f if f else t.clone()
    t = t.to(torch.float64)
    if t.numel():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = t[~finite].flatten()[0].item()
            raise ValueError(f"cannot encode non-finite value {bad} in fixed point")
        out_of_range = (t >= limit) | (t < -limit)
        if bool(out_of_range.any()):
            bad = t[out_of_range].flatten()[0].item()
            raise ValueError(
                f"value {bad:g} is outside the fixed-point range [-2^{62 - f}, 2^{62 - f}) "
                f"for frac_bits={f}"
            )
    return torch.round(t * float(2**f)).to(torch.int64)


def check_range(x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS, what: str = "value"
                ) -> None:
    """Raise :class:`ValueError`, naming ``what``, unless :func:`encode` accepts all of ``x``.

    For checking inputs and weights *before* a protocol starts, so that a bad
    value fails locally and early rather than in the middle of a run.

    Example
    -------
    >>> check_range(torch.tensor([1.0, 2.0**50]), what="input")
    Traceback (most recent call last):
    ...
    ValueError: input has a value outside the fixed-point range [-2^46, 2^46)...
    """
    f = check_frac_bits(frac_bits)
    t = torch.as_tensor(x)
    if not t.is_floating_point() or not t.numel():
        if t.numel() and t.dtype != torch.bool:
            limit = 2 ** (RING_BITS - 2 - f)
            if bool(((t >= limit) | (t < -limit)).any()):
                raise ValueError(f"{what} has a value outside the fixed-point range "
                                 f"[-2^{62 - f}, 2^{62 - f}) for frac_bits={f}")
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    limit = encode_limit(f)
    if bool(((t >= limit) | (t < -limit)).any()):
        raise ValueError(f"{what} has a value outside the fixed-point range [-2^{62 - f}, "
                         f"2^{62 - f}) for frac_bits={f} (largest magnitude "
                         f"{float(t.abs().max()):.3g}); scale it down")


def decode(
    x: torch.Tensor, frac_bits: int = DEFAULT_FRAC_BITS, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Decode ring elements (signed, two's complement) from fixed point.

    The conversion to float64 is correctly rounded and the scaling by 2^-f is
    exact, so negative values decode exactly (no floor-division off-by-one).
    With ``frac_bits=0`` and an integer ``dtype`` the result is the raw ring value.

    Example
    -------
    >>> decode(torch.tensor([-1, 65536]), frac_bits=16)
    tensor([-1.5259e-05,  1.0000e+00], dtype=torch.float64)
    """
    f = check_frac_bits(frac_bits)
    if x.dtype != torch.int64:
        raise TypeError(f"ring elements must be int64, got {x.dtype}")
    if not dtype.is_floating_point:
        if f:
            raise TypeError("an integer dtype can only decode frac_bits=0 values")
        return x.to(dtype)
    return (x.to(torch.float64) * (2.0**-f)).to(dtype)


def truncate_share(share: torch.Tensor, bits: int, rank: int) -> torch.Tensor:
    """One party's step of the local probabilistic truncation (SecureML).

    Party 0 shifts its share arithmetically, party 1 shifts the negation of its
    share and negates back. If ``x = x0 + x1`` with ``|x| < 2^k``, the new
    shares sum to ``floor(x / 2^bits)`` up to ±1, except with probability at
    most ``2^(k + 1 - 64)`` (when the shares straddle the wrap), where the result
    is garbage. Callers must keep ``|x|`` small; see the module docstring.
    """
    if bits == 0:
        return share
    if rank == 0:
        return share >> bits
    return -((-share) >> bits)


def divide_share(share: torch.Tensor, divisor: int | torch.Tensor, rank: int) -> torch.Tensor:
    """One party's step of the local division by a public positive integer ``divisor``.

    The same local trick as :func:`truncate_share` for any divisor: party 0
    floors ``x0 / d``, party 1 computes ``-floor(-x1 / d)``. When the shares do
    not straddle the wrap (as signed integers ``x0 + x1 = x``), the results sum
    to ``x / d`` within one ring unit (``floor(a/d) + ceil(b/d)`` lies strictly
    between ``(a + b)/d - 1`` and ``(a + b)/d + 1``): one ulp, whatever ``d`` is,
    where multiplying by an encoded ``1/d`` loses ``|x|·2^-(f+1)`` to rounding
    the constant (the mean of 200,000 ones came out as 0). It fails (garbage),
    like truncation, with probability at most ``2^(k + 1 - 64)`` for
    ``|x| < 2^k`` ring units.

    Example
    -------
    >>> x = encode(torch.tensor([1000.0, -3.0]))
    >>> x0 = torch.tensor([123456789, -987654321]); x1 = x - x0
    >>> decode(divide_share(x0, 49, 0) + divide_share(x1, 49, 1))
    tensor([20.4082, -0.0612], dtype=torch.float64)
    """
    if isinstance(divisor, torch.Tensor):
        if divisor.dtype != torch.int64 or bool((divisor <= 0).any()):
            raise ValueError("divide_share needs positive int64 divisors")
        divisor = divisor.to(share.device)
    elif not isinstance(divisor, int) or divisor <= 0:
        raise ValueError(f"divide_share needs a positive integer divisor, got {divisor!r}")
    if isinstance(divisor, int) and divisor == 1:
        return share
    if rank == 0:
        return torch.div(share, divisor, rounding_mode="floor")
    return -torch.div(-share, divisor, rounding_mode="floor")


#: Limbs of a public factor (:func:`public_factor`): enough bits for every encodable ``x``.
FACTOR_LIMBS = 3


def public_factor(c: torch.Tensor | float, frac_bits: int = DEFAULT_FRAC_BITS
                  ) -> tuple[list[torch.Tensor], int, int]:
    """A public real factor as limbs: ``c ≈ (m0 + m1/2^t + m2/2^2t) / 2^s``.

    Returns ``(limbs, s, t)`` for :func:`multiply_public`. ``s`` is
    ``frac_bits`` plus enough extra bits that the largest ``|c|`` keeps at least
    ``frac_bits + 1`` significant bits in ``m0`` (encoding ``1/49`` with 16
    bits lost 0.035% of every average, ``1/200000`` became 0); the lower limbs,
    ``t = frac_bits + 1`` bits each, carry the rest of ``c``'s precision, so the
    product with any encodable ``x`` is within about one ulp. Each limb's
    product stays below ``|x|·2^(2f+1)`` ring units, as for a factor of
    magnitude below 2, so each truncation fails with that probability. Trailing
    limbs that are zero (``0.5``, ``3.0``) are dropped: one product, as before.

    Example
    -------
    >>> limbs, s, t = public_factor(1 / 49)
    >>> [int(m) for m in limbs], s, t
    ([85598, 5349, 115022], 22, 17)
    >>> public_factor(3.0, 16)
    ([tensor(196608)], 16, 17)
    """
    f = check_frac_bits(frac_bits)
    t = torch.as_tensor(c, dtype=torch.float64)
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError("cannot encode a non-finite public factor in fixed point")
    amax = float(t.abs().max()) if t.numel() else 0.0
    extra = 0
    if 0.0 < amax < 1.0:
        extra = min(-math.floor(math.log2(amax)), RING_BITS - 2 - f)
    scale, width = f + extra, f + 1
    if amax >= 2 ** (RING_BITS - 2 - scale):
        raise ValueError(f"public factor {amax:g} is outside the fixed-point range "
                         f"[-2^{62 - f}, 2^{62 - f}) for frac_bits={f}")
    # Scaling by powers of two and subtracting the floor are exact in float64.
    rest = t * float(2**scale)
    limbs = []
    for i in range(FACTOR_LIMBS):
        last = i == FACTOR_LIMBS - 1 or f == 0
        limb = torch.round(rest) if last else torch.floor(rest)
        limbs.append(limb.to(torch.int64))
        if last:
            break
        rest = (rest - limb) * float(2**width)
    while len(limbs) > 1 and not bool(limbs[-1].any()):
        limbs.pop()
    return limbs, scale, width


def multiply_public(share: torch.Tensor, factor: tuple[list[torch.Tensor], int, int], rank: int,
                    product=torch.mul) -> torch.Tensor:
    """One party's share of ``x * c`` for a public factor from :func:`public_factor`.

    ``product(share, limb)`` is the local bilinear map (``torch.mul``,
    :func:`matmul`, a convolution...). The low limbs are folded in from the least
    significant one, each truncated by ``t`` bits, and the sum is truncated by
    ``s`` bits: the error is one truncation's (one ulp) plus a fraction of an
    ulp.
    """
    limbs, scale, width = factor
    acc = product(share, limbs[-1].to(share.device))
    for limb in reversed(limbs[:-1]):
        acc = product(share, limb.to(share.device)) + truncate_share(acc, width, rank)
    return truncate_share(acc, scale, rank)


def _limb_width(inner: int) -> int:
    # Two limbs of w bits multiply to < 2^(2w); summing `inner` of them must stay below
    # 2^53 so that float64 GEMMs are exact.
    w = (53 - max(1, math.ceil(math.log2(max(inner, 2))))) // 2
    if w < 1:
        raise ValueError(f"inner dimension {inner} too large for exact limb GEMMs")
    return min(w, 32)


def _limbs(x: torch.Tensor, width: int, count: int) -> list[torch.Tensor]:
    mask = (1 << width) - 1
    return [((x >> (width * i)) & mask).to(torch.float64) for i in range(count)]


def matmul_limbs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` modulo 2^64 through exact float64 GEMMs on limbs (works on CUDA).

    Each operand is split into ``L`` unsigned limbs of ``w`` bits, chosen so
    that ``inner * 2^(2w) < 2^53``; only the ``L(L+1)/2`` limb products that
    reach the low 64 bits are computed, as ``L`` wide GEMMs.
    """
    inner = a.shape[-1]
    width = _limb_width(inner)
    count = math.ceil(RING_BITS / width)
    la, lb = _limbs(a, width, count), _limbs(b, width, count)
    out: torch.Tensor | None = None
    n = b.shape[-1]
    for i in range(count):
        # a_i times all b_j with i + j < count, as one GEMM on concatenated columns.
        wide = torch.cat(lb[: count - i], dim=-1)
        prod = torch.matmul(la[i], wide).to(torch.int64)
        for j in range(count - i):
            part = prod[..., j * n : (j + 1) * n] << (width * (i + j))
            out = part if out is None else out.add_(part)
    assert out is not None
    return out


def matmul(a: torch.Tensor, b: torch.Tensor, limbs: bool | None = None) -> torch.Tensor:
    """Ring matrix product (torch.matmul semantics, wrap-around modulo 2^64).

    ``limbs=None`` uses native int64 kernels on CPU and limb GEMMs elsewhere.
    """
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise TypeError(f"ring matmul needs int64 operands, got {a.dtype} and {b.dtype}")
    if limbs is None:
        limbs = a.device.type != "cpu"
    if not limbs:
        return torch.matmul(a, b)
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    out = matmul_limbs(a2, b2)
    if b.dim() == 1:
        out = out.squeeze(-1)
    if a.dim() == 1:
        out = out.squeeze(-2)
    return out


def _pair(v: IntPair, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v}")
    return v


def conv2d_output_shape(
    input_shape: Sequence[int], weight_shape: Sequence[int], stride: IntPair = 1,
    padding: IntPair = 0,
) -> tuple[int, int, int, int]:
    """Output shape of :func:`conv2d`; raises a clear error on inconsistent shapes."""
    if len(input_shape) != 4 or len(weight_shape) != 4:
        raise ValueError(
            f"conv2d needs input (N, C, H, W) and weight (O, C, kH, kW), got "
            f"{tuple(input_shape)} and {tuple(weight_shape)}"
        )
    n, c, h, w = input_shape
    o, cw, kh, kw = weight_shape
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"invalid stride {stride} or padding {padding}")
    if c != cw:
        raise ValueError(f"conv2d: input has {c} channels but weight expects {cw}")
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: kernel {kh}x{kw} larger than padded input {h}x{w}")
    return n, o, oh, ow


#: Below this many GEMM rows (batch x output pixels), an int64 GEMM on im2col columns beats
#: torch's native int64 convolution on CPU (2-3x on VGG16's and AlexNet's small late layers;
#: measured per layer of the zoo, see docs/inference.md); above it the native one wins.
IM2COL_MAX_ROWS = 256


def conv2d(
    x: torch.Tensor, weight: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0,
    limbs: bool | None = None, weight_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ring 2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

    On CPU, torch's native int64 convolution (exact, wrapping), or im2col and an
    int64 GEMM when the output has few pixels (:data:`IM2COL_MAX_ROWS`);
    elsewhere, or with ``limbs=True``, :func:`conv2d_im2col` with limb GEMMs.
    ``weight_matrix`` is ``conv2d_weight_matrix(weight)`` when the caller keeps it
    (a weight used many times): it saves a transposition per call.
    """
    if x.dtype != torch.int64 or weight.dtype != torch.int64:
        raise TypeError("ring conv2d needs int64 operands")
    n, _, oh, ow = conv2d_output_shape(x.shape, weight.shape, stride, padding)
    if limbs is None:
        limbs = x.device.type != "cpu"
    if not limbs and n * oh * ow > IM2COL_MAX_ROWS:
        try:
            return F.conv2d(x, weight, stride=_pair(stride, "stride"),
                            padding=_pair(padding, "padding"))
        except (RuntimeError, NotImplementedError):  # a torch build without int64 conv
            pass
    return conv2d_im2col(x, weight, stride, padding, limbs=limbs, weight_matrix=weight_matrix)


def conv2d_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The (C*kH*kW, O) contiguous layout of a convolution weight used by im2col GEMMs."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def conv2d_im2col(
    x: torch.Tensor, weight: torch.Tensor, stride: IntPair = 1, padding: IntPair = 0,
    limbs: bool | None = None, weight_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ring convolution as im2col plus a ring :func:`matmul`: exact on any device."""
    n, o, oh, ow = conv2d_output_shape(x.shape, weight.shape, stride, padding)
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    _, c, kh, kw = weight.shape
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    cols = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, OH, OW, kH, kW)
    cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    if weight_matrix is None:
        weight_matrix = weight.reshape(o, c * kh * kw).t()
    out = matmul(cols, weight_matrix, limbs=limbs)
    return out.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()
