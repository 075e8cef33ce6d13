"""Non-linear gates on secret tensors, by function secret sharing (one online round each).

Every gate here is one *sign gate* (or one equality gate) per element: the
parties add a dealer mask to their shares, open the masked value in ONE round
(``n = 64`` bits per party per element, plus any extra operand opened in the same
round) and evaluate a DCF key locally (BCG+21, exact over the whole ring; see
:mod:`veil.fss.gates`). The same DCF carries a vector payload, so the products
needed by ReLU and by the selections of max / argmax trees come out of that
same round (a BCG+21 spline-style gate), with no Beaver multiplication:

===================================  ===============  ==================================
gate                                 online rounds    dealer material
===================================  ===============  ==================================
``drelu``, ``<``, ``<=``, ``>``,     1                ``fss_sign`` (DCF on 63 bits)
``>=`` (secret or public operand)
``relu``, ``abs``, ``maximum``,      1                ``fss_sign`` with ``relu``
``minimum``
``eq`` (``==``)                      1                ``fss_eq`` (DPF on 64 bits)
``max(dim)``, ``max_pool2d``         ⌈log₂ k⌉         ``k - 1`` sign gates per output
``argmax(dim)`` (one-hot)            ⌈log₂ m⌉         ``m - 1`` sign gates per row
===================================  ===============  ==================================

Results are exact (no probabilistic error) for all operands produced by
:func:`veil.ring.encode` (``|x| < 2^62``): the difference of two of them never
wraps the ring.

**Fewer bits** (``bits=k``, every sign-gate function): when the compared value
(``x`` for DReLU/ReLU, ``x - y`` for comparisons, min/max and the trees) is known
to satisfy ``-2^(k-1) <= z < 2^(k-1)``, its sign is the sign of ``z mod 2^k``:
the gate compares on the low ``k`` bits only (a DCF on ``k - 1`` bits), still
exactly; products stay in the 64-bit ring. A value outside the bound gets the
sign of ``z mod 2^k`` (wrong); the bound must be known (see
:mod:`veil.nn.calibration` for networks). For max-pool padding the inputs must
satisfy ``|x| < 2^(k-2)``.

**Lean gates** (``lean=True``): a 1-bit-output DCF with early termination and a
second round that opens one masked bit per element to select ``d``, ``d·x`` and
``d·w`` (Orca-style): about 4x smaller keys and faster evaluation, one more
round per gate (``veil bench fss`` and ``docs/fss.md`` have the measurements).

Comparison results are secret 0/1 values in the operand's
fixed-point encoding. ``method="ariann"`` swaps in AriaNN's original
comparison (wrong with probability ``|x| / 2^32`` per element; for
reproducing the paper only).

Dealer material is requested in chunks of :data:`MAX_CHUNK` elements, and the
masked values of up to :data:`MAX_ROUND` elements are opened together in one
round: a gate on up to 2^20 elements is one round; larger ones take one round per
2^20 elements, which bounds the key memory held at once (a 64-bit ReLU key is
about 2 KB per element and party).

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.tensor([-1.5, 0.0, 2.25]) if party.rank == 0 else None,
...                     owner=0, shape=(3,))
...     return x.relu().reveal(), (x > 0.5).reveal(), party.stats()["rounds"]
>>> veil.run(job)[0]                               # doctest: +SKIP
(tensor([0.0000, 0.0000, 2.2500]), tensor([0., 0., 1.]), 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from veil import ring
from veil.fss import gates
from veil.sharing import fss_keys as _fss_keys  # noqa: F401  (registers fss_sign, fss_eq)

if TYPE_CHECKING:
    from veil.mpc.party import Party
    from veil.mpc.tensor import SecretTensor

#: Elements per dealer request (one FSS key batch).
MAX_CHUNK = 1 << 17
#: Elements opened in one round; bounds the key memory held at once (~2 GB per party).
MAX_ROUND = 1 << 20
#: The default comparison protocol. ``"ariann"`` is AriaNN's (has errors); never the default.
DEFAULT_METHOD = "exact"
#: Default comparison width: the whole ring (exact for every encodable value).
DEFAULT_BITS = 64
#: Default gate shape: one round with a payload-carrying DCF (``lean=True``: two rounds,
#: a 1-bit DCF with early termination and a selection; about 4x smaller keys).
DEFAULT_LEAN = False


def _pad_value(bits: int) -> int:
    """Padding for max-pool windows: below every value the gate admits, and its difference
    with any of them still within the gate's bound (64 bits: every encodable value;
    ``bits = k``: values with ``|x| < 2^(k-2)``)."""
    return -(2**62) if bits >= 64 else -(2 ** (bits - 2))

__all__ = [
    "MAX_CHUNK",
    "MAX_ROUND",
    "abs",
    "argmax",
    "drelu",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "max",
    "max_pool2d",
    "maximum",
    "minimum",
    "plan",
    "relu",
]


# -- the one-round sign gate on raw shares ---------------------------------------------------
def _chunks(count: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + MAX_CHUNK, count)) for lo in range(0, count, MAX_CHUNK)]


def _rounds(requests: list[tuple[str, dict]], count: int) -> list[list[tuple[int, int, str, dict]]]:
    """Chunks and their dealer requests, grouped so that one round opens ``MAX_ROUND``
    elements at most."""
    per_round = MAX_ROUND // MAX_CHUNK or 1  # (this module defines its own max)
    items = [(lo, hi, kind, params)
             for (lo, hi), (kind, params) in zip(_chunks(count), requests, strict=True)]
    return [items[i:i + per_round] for i in range(0, len(items), per_round)]


def _check_bits(bits: int, lean: bool, method: str) -> None:
    if not 2 <= int(bits) <= 64:
        raise ValueError(f"bits must be in 2..64, got {bits}")
    if method != "exact" and (bits != 64 or lean):
        raise ValueError(f"bits < 64 and lean gates are exact gates; method={method!r} "
                         "(AriaNN's comparison) has neither")


def _sign_requests(count: int, extra: int, relu: bool, method: str, bits: int = DEFAULT_BITS,
                   lean: bool = DEFAULT_LEAN) -> list[tuple[str, dict]]:
    _check_bits(bits, lean, method)
    opts: dict[str, Any] = {}
    if bits != 64:  # the 64-bit one-round request keeps its historical parameters
        opts["bits"] = int(bits)
    if lean:
        opts["lean"] = True
    return [("fss_sign", {"count": hi - lo, "extra": extra, "relu": relu, "method": method,
                          **opts}) for lo, hi in _chunks(count)]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def _open_bits(party: Party, bits: list[np.ndarray]) -> list[np.ndarray]:
    """XOR-open 0/1 uint8 arrays in one round, 1 bit per element on the wire."""
    packed = torch.from_numpy(np.packbits(np.concatenate(bits)))
    other = party.exchange(packed)
    if not isinstance(other, torch.Tensor) or other.shape != packed.shape:
        from veil.sharing.errors import MaterialError

        raise MaterialError("the peer opened bits of a different shape (programs diverge)")
    total = sum(b.shape[0] for b in bits)
    opened = np.unpackbits(packed.numpy() ^ other.numpy())[:total]
    return np.split(opened, np.cumsum([b.shape[0] for b in bits])[:-1])


def _sign_round(party: Party, x: torch.Tensor, w: torch.Tensor | None = None,
                relu: bool = False, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
                lean: bool = DEFAULT_LEAN) -> dict[str, torch.Tensor]:
    """Shares of ``d = DReLU(x)``, ``d·x`` (``relu``) and ``d·w`` for flat int64 shares.

    ``x``: ``(N,)``; ``w``: ``(N, K)`` or None. One round per ``MAX_ROUND`` elements (two
    with ``lean``). ``bits``: compare on the low ``bits`` bits (exact when
    ``|x| < 2^(bits-1)``).
    """
    if method not in gates.METHODS:
        raise ValueError(f"method must be one of {gates.METHODS}, got {method!r}")
    count = x.shape[0]
    extra = 0 if w is None else w.shape[1]
    device = x.device
    d = torch.empty(count, dtype=torch.int64)
    dx = torch.empty(count, dtype=torch.int64) if relu else None
    dw = torch.empty((count, extra), dtype=torch.int64) if extra else None
    xs = _np(x)
    ws = _np(w) if extra else None
    for group in _rounds(_sign_requests(count, extra, relu, method, bits, lean), count):
        mats, to_open = [], []
        for lo, hi, kind, params in group:
            mat = party.material(kind, **params)
            xm, wm = gates.sign_mask(mat, xs[lo:hi], ws[lo:hi] if extra else None)
            mats.append(mat)
            to_open.append(torch.from_numpy(xm.view(np.int64)))
            if extra:
                to_open.append(torch.from_numpy(wm.view(np.int64)))
        opened = [_np(t) for t in party.open_many(to_open)]  # the (first) round of this group
        xos = opened[::2] if extra else opened
        wos = opened[1::2] if extra else [None] * len(mats)
        if lean:  # the second round: one masked bit per element selects d, d·x, d·w
            ehats = _open_bits(party, [gates.sign_select_bit(mat, party.rank, xo)
                                       for mat, xo in zip(mats, xos, strict=True)])
        else:
            ehats = [None] * len(mats)
        for (lo, hi, _, _), mat, xo, wo, eh in zip(group, mats, xos, wos, ehats, strict=True):
            out = gates.sign_finish(mat, party.rank, xo, wo, eh)
            d[lo:hi] = torch.from_numpy(out["d"].view(np.int64))
            if relu:
                dx[lo:hi] = torch.from_numpy(out["dx"].view(np.int64))
            if extra:
                dw[lo:hi] = torch.from_numpy(out["dw"].view(np.int64))
    res = {"d": d.to(device)}
    if relu:
        res["dx"] = dx.to(device)
    if extra:
        res["dw"] = dw.to(device)
    return res


def _eq_requests(count: int) -> list[tuple[str, dict]]:
    return [("fss_eq", {"count": hi - lo}) for lo, hi in _chunks(count)]


def _eq_round(party: Party, z: torch.Tensor) -> torch.Tensor:
    """Shares (int64, scale 1) of ``1{z == 0}`` for flat int64 shares ``z`` (one round per
    ``MAX_ROUND`` elements)."""
    count = z.shape[0]
    out = torch.empty(count, dtype=torch.int64)
    zs = _np(z)
    for group in _rounds(_eq_requests(count), count):
        mats = [party.material(kind, **params) for _, _, kind, params in group]
        masked = [torch.from_numpy(gates.eq_mask(mat, zs[lo:hi]).view(np.int64))
                  for (lo, hi, _, _), mat in zip(group, mats, strict=True)]
        opened = party.open_many(masked)  # the one round of this group
        for (lo, hi, _, _), mat, zo in zip(group, mats, opened, strict=True):
            out[lo:hi] = torch.from_numpy(gates.eq_finish(mat, party.rank, _np(zo)).view(np.int64))
    return out.to(z.device)


# -- helpers on SecretTensors ---------------------------------------------------------------------
def _secret(x: Any) -> SecretTensor:
    from veil.mpc.tensor import SecretTensor

    if not isinstance(x, SecretTensor):
        raise TypeError(f"expected a SecretTensor, got {type(x).__name__}")
    return x


def _bit_tensor(x: SecretTensor, d: torch.Tensor, shape: Sequence[int],
                negate: bool = False) -> SecretTensor:
    """Integer 0/1 shares ``d`` as a fixed-point SecretTensor like ``x`` (``1 - d``: negate)."""
    share = (d << x.frac_bits).reshape(tuple(shape))
    if negate:
        share = -share
        if x.party.rank == 0:
            share = share + (1 << x.frac_bits)
    return x._wrap(share)


def _difference(x: SecretTensor, y: Any) -> SecretTensor:
    return _secret(x) - y


# -- DReLU and comparisons ---------------------------------------------------------------------
def drelu(x: SecretTensor, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """``1{x >= 0}`` as a secret 0/1 tensor (one round; ``method="ariann"``: ``1{x > 0}``).

    Example
    -------
    >>> x.drelu().reveal()             # doctest: +SKIP
    tensor([0., 1., 1.])
    """
    x = _secret(x)
    out = _sign_round(x.party, x.share.reshape(-1), method=method, bits=bits, lean=lean)
    return _bit_tensor(x, out["d"], x.shape)


def ge(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """``x >= y`` (``y`` secret or public), one round."""
    if method == "ariann":  # AriaNN's gate gives 1{z > 0}: x >= y is 1 - 1{y - x > 0}
        z = -_difference(x, y)
        return _bit_tensor(z, _sign_round(z.party, z.share.reshape(-1), method=method, bits=bits,
                                          lean=lean)["d"],
                           z.shape, negate=True)
    return drelu(_difference(x, y), method, bits, lean)


def le(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """``x <= y`` (``y`` secret or public), one round."""
    return ge(-_secret(x), -y if not _is_secret(y) else -y, method, bits, lean)


def lt(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """``x < y`` (``y`` secret or public), one round: ``1 - (x >= y)``."""
    z = _difference(x, y)
    if method == "ariann":
        return drelu(-z, method, bits, lean)
    return _bit_tensor(z, _sign_round(z.party, z.share.reshape(-1), method=method, bits=bits,
                                          lean=lean)["d"],
                       z.shape, negate=True)


def gt(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """``x > y`` (``y`` secret or public), one round: ``y < x``."""
    return lt(-_secret(x), -y if not _is_secret(y) else -y, method, bits, lean)


def _is_secret(y: Any) -> bool:
    from veil.mpc.tensor import SecretTensor

    return isinstance(y, SecretTensor)


__lt__, __le__, __gt__, __ge__ = lt, le, gt, ge


def eq(x: SecretTensor, y: Any) -> SecretTensor:
    """``x == y`` as a secret 0/1 tensor (one DPF per element, one round)."""
    z = _difference(x, y)
    return _bit_tensor(z, _eq_round(z.party, z.share.reshape(-1)), z.shape)


# -- ReLU and friends ------------------------------------------------------------------------------
def relu(x: SecretTensor, return_drelu: bool = False,
         method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor | tuple[SecretTensor, SecretTensor]:
    """``max(x, 0)`` in ONE online round (DCF with payload ``(1, r)``; no Beaver triple).

    ``return_drelu=True`` also returns the secret bits ``1{x >= 0}`` (for a backward pass).
    """
    x = _secret(x)
    out = _sign_round(x.party, x.share.reshape(-1), relu=True, method=method, bits=bits,
                      lean=lean)
    y = x._wrap(out["dx"].reshape(x.shape))
    if return_drelu:
        return y, _bit_tensor(x, out["d"], x.shape)
    return y


def abs(x: SecretTensor, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:  # noqa: A001
    """``|x| = 2·relu(x) - x``, one round."""
    return relu(x, method=method, bits=bits, lean=lean) * 2 - x


def maximum(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """Element-wise ``max(x, y)`` (broadcasting; ``y`` secret or public): ``y + relu(x - y)``."""
    z = _difference(x, y)
    return relu(z, method=method, bits=bits, lean=lean) + y


def minimum(x: SecretTensor, y: Any, method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """Element-wise ``min(x, y)``: ``x - relu(x - y)``, one round."""
    z = _difference(x, y)
    return _secret(x) - relu(z, method=method, bits=bits, lean=lean)


# -- comparison trees ----------------------------------------------------------------------------
def _levels(k: int) -> list[tuple[int, int]]:
    """``(pairs, block)`` per tree level for ``k`` candidates (byes pass through)."""
    out = []
    block = 1
    while k > 1:
        out.append((k // 2, block))
        k = k - k // 2
        block *= 2
    return out


def _tree_requests(rows: int, k: int, onehot: bool, method: str, bits: int = DEFAULT_BITS,
                   lean: bool = DEFAULT_LEAN) -> list[tuple[str, dict]]:
    reqs: list[tuple[str, dict]] = []
    for pairs, block in _levels(k):
        reqs += _sign_requests(rows * pairs, 2 * block if onehot else 0, True, method,
                               bits, lean)
    return reqs


def _tournament(x: SecretTensor, values: torch.Tensor, onehot: bool, method: str,
                bits: int = DEFAULT_BITS,
                lean: bool = DEFAULT_LEAN) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Max over the last dim of raw shares ``values`` ``(B, k)``: ``k - 1`` comparisons,
    ``⌈log₂ k⌉`` rounds. Returns the max shares ``(B,)`` and, if ``onehot``, the
    integer one-hot shares ``(B, k)`` of the winner (ties go to the lowest index)."""
    party = x.party
    rows, k = values.shape
    # one-hot blocks: (B, candidates, block) integer shares; party 0 holds the public 1s
    oh = None
    if onehot:
        oh = torch.full((rows, k, 1), 1 if party.rank == 0 else 0, dtype=torch.int64,
                        device=values.device)
    block = 1
    while values.shape[1] > 1:
        c = values.shape[1]
        pairs = c // 2
        a, b = values[:, 0:2 * pairs:2], values[:, 1:2 * pairs:2]
        w = None
        if onehot:
            w = torch.cat([oh[:, 0:2 * pairs:2], oh[:, 1:2 * pairs:2]], dim=2)
            w = w.reshape(rows * pairs, 2 * block)
        out = _sign_round(party, (a - b).reshape(-1), w, relu=True, method=method, bits=bits,
                          lean=lean)
        win = b + out["dx"].reshape(rows, pairs)  # b + d·(a - b)
        if onehot:
            dw = out["dw"].reshape(rows, pairs, 2 * block)
            # left block: d·oh_a; right block: oh_b - d·oh_b
            new = torch.cat([dw[:, :, :block], oh[:, 1:2 * pairs:2] - dw[:, :, block:]], dim=2)
        if c % 2:
            win = torch.cat([win, values[:, -1:]], dim=1)
            if onehot:
                bye = torch.cat([oh[:, -1:], torch.zeros_like(oh[:, -1:])], dim=2)
                new = torch.cat([new, bye], dim=1)
        values = win
        if onehot:
            oh = new
        block *= 2
    onehot_out = oh[:, 0, :k] if onehot else None
    return values[:, 0], onehot_out


def _move_last(x: SecretTensor, dim: int | None) -> tuple[torch.Tensor, tuple[int, ...], int]:
    share = x.share
    if dim is None:
        return share.reshape(1, -1), tuple(share.shape), -1
    d = dim % share.dim() if share.dim() else 0
    moved = share.movedim(d, -1)
    return moved.reshape(-1, moved.shape[-1]), tuple(moved.shape), d


def max(x: SecretTensor, dim: int | None = None, keepdim: bool = False,  # noqa: A001
        method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor | tuple[SecretTensor, SecretTensor]:
    """Maximum by a comparison tree: ``k - 1`` sign gates, ``⌈log₂ k⌉`` rounds.

    ``dim=None``: the maximum of all elements (a 0-d SecretTensor). With ``dim``:
    ``(values, onehot)`` where ``onehot`` has ``x``'s shape and marks the first
    maximal element along ``dim`` (secret 0/1; what a backward pass routes
    gradients through), like ``torch.max(dim)`` returns ``(values, indices)``.
    """
    x = _secret(x)
    if x.numel() == 0:
        raise ValueError("max of an empty SecretTensor")
    flat, moved_shape, d = _move_last(x, dim)
    if dim is None:
        best, _ = _tournament(x, flat, False, method, bits, lean)
        return x._wrap(best.reshape(()))
    best, oh = _tournament(x, flat, True, method, bits, lean)
    values = best.reshape(moved_shape[:-1])
    if keepdim:
        values = values.unsqueeze(d)
    onehot = (oh.reshape(moved_shape) << x.frac_bits).movedim(-1, d)
    return x._wrap(values), x._wrap(onehot)


def argmax(x: SecretTensor, dim: int | None = None, keepdim: bool = False,
           method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor:
    """One-hot argmax by a tournament: ``m - 1`` comparisons in ``⌈log₂ m⌉`` rounds.

    Returns a secret 0/1 tensor of ``x``'s shape with a single 1 per slice along
    ``dim`` (all elements when ``dim=None``), at the first maximal element. The
    one-hot form is always returned (``keepdim`` is accepted for torch
    compatibility: the one-hot keeps every dimension).
    """
    x = _secret(x)
    if x.numel() == 0:
        raise ValueError("argmax of an empty SecretTensor")
    flat, moved_shape, d = _move_last(x, dim)
    _, oh = _tournament(x, flat, True, method, bits, lean)
    if dim is None:
        return x._wrap(oh.reshape(moved_shape) << x.frac_bits)
    return x._wrap((oh.reshape(moved_shape) << x.frac_bits).movedim(-1, d))


def _pair(v: ring.IntPair) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _pool_geometry(shape: Sequence[int], kernel_size: ring.IntPair, stride: ring.IntPair | None,
                   padding: ring.IntPair) -> tuple[tuple[int, int], tuple[int, int],
                                                   tuple[int, int], int, int]:
    if len(shape) not in (3, 4):
        raise ValueError(f"max_pool2d expects (C, H, W) or (N, C, H, W), got shape {tuple(shape)}")
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride is not None else (kh, kw)
    ph, pw = _pair(padding)
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0 or ph > kh // 2 or pw > kw // 2:
        raise ValueError("max_pool2d: kernel and stride must be >= 1 and padding at most half "
                         f"the kernel (got kernel {kh, kw}, stride {sh, sw}, padding {ph, pw})")
    h, w = shape[-2] + 2 * ph, shape[-1] + 2 * pw
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: kernel {kh, kw} larger than the padded input {h, w}")
    return (kh, kw), (sh, sw), (ph, pw), oh, ow


def max_pool2d(x: SecretTensor, kernel_size: ring.IntPair, stride: ring.IntPair | None = None,
               padding: ring.IntPair = 0, return_onehot: bool = False,
               method: str = DEFAULT_METHOD, bits: int = DEFAULT_BITS,
           lean: bool = DEFAULT_LEAN) -> SecretTensor | tuple[SecretTensor, SecretTensor]:
    """2-D max pooling as comparison trees: ``k - 1`` sign gates per window, ``⌈log₂ k⌉``
    rounds for ``k = kh·kw``. Padding uses a value below every encodable number.

    ``return_onehot=True`` also returns the per-window selection one-hot, shape
    ``(*out_shape, kh·kw)`` (for the backward pass; costs extra payload and bytes).
    """
    x = _secret(x)
    (kh, kw), (sh, sw), (ph, pw), oh, ow = _pool_geometry(x.shape, kernel_size, stride, padding)
    share = x.share
    if ph or pw:
        fill = _pad_value(bits) if x.party.rank == 0 else 0
        share = torch.nn.functional.pad(share, (pw, pw, ph, ph), value=fill)
    win = share.unfold(-2, kh, sh).unfold(-2, kw, sw)  # (..., oh, ow, kh, kw)
    lead = win.shape[:-2]
    flat = win.reshape(-1, kh * kw)
    best, sel = _tournament(x, flat, return_onehot, method, bits, lean)
    out = x._wrap(best.reshape(lead))
    if return_onehot:
        return out, x._wrap((sel << x.frac_bits).reshape(*lead, kh * kw))
    return out


# -- planning ---------------------------------------------------------------------------------
def plan(name: str, shape: Sequence[int], **params: Any) -> list[tuple[str, dict]]:
    """The dealer requests ``[(kind, params), ...]`` of gate ``name`` on a secret of ``shape``.

    Used to fetch all material before the online phase (``veil.run(plan=...)``).
    ``params`` are the gate's own options (``kernel_size``, ``stride``,
    ``padding``, ``return_onehot`` for ``max_pool2d``; ``dim`` for ``max`` and
    ``argmax``; ``method`` for all; ``shape_y`` for binary gates whose output
    broadcasts to a larger shape).

    Example
    -------
    >>> plan("relu", (2, 3))
    [('fss_sign', {'count': 6, 'extra': 0, 'relu': True, 'method': 'exact'})]
    """
    method = params.get("method", DEFAULT_METHOD)
    bits, lean = int(params.get("bits", DEFAULT_BITS)), bool(params.get("lean", DEFAULT_LEAN))
    shape = tuple(int(s) for s in shape)
    if "shape_y" in params:
        shape = tuple(torch.broadcast_shapes(shape, tuple(params["shape_y"])))
    count = math.prod(shape)
    if name in ("drelu", "ge", "gt", "le", "lt", "__lt__", "__le__", "__gt__", "__ge__"):
        return _sign_requests(count, 0, False, method, bits, lean)
    if name in ("relu", "abs", "maximum", "minimum"):
        return _sign_requests(count, 0, True, method, bits, lean)
    if name == "eq":
        return _eq_requests(count)
    if name in ("max", "argmax"):
        dim = params.get("dim")
        if dim is None:
            return _tree_requests(1, count, name == "argmax", method, bits, lean)
        k = shape[dim]
        return _tree_requests(count // k if k else 0, k, True, method, bits, lean)
    if name == "max_pool2d":
        (kh, kw), _, _, oh, ow = _pool_geometry(shape, params["kernel_size"],
                                                params.get("stride"), params.get("padding", 0))
        rows = math.prod(shape[:-2]) * oh * ow
        return _tree_requests(rows, kh * kw, bool(params.get("return_onehot", False)),
                              method, bits, lean)
    raise ValueError(f"no plan for gate {name!r}")
