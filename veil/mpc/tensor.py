"""SecretTensor: one party's additive share of a tensor, in fixed point over Z_2^64.

A :class:`SecretTensor` holds this party's int64 share, the fixed-point
precision (``frac_bits``), the floating dtype that :meth:`~SecretTensor.reveal`
returns, and the :class:`~veil.mpc.party.Party`. Every operation is run by both
parties on their own shares (SPMD).

Costs: ``+``, ``-``, products with public values, reshapes, sums and indexing
are local (no communication). ``secret * secret``, ``secret @ secret`` and
``conv2d`` with a secret weight take one round and one Beaver triple. An
operand used in many products (a served model's weight) can be opened once
under a reusable dealer mask with :meth:`SecretTensor.fix_mask`: each product
with the :class:`FixedSecretTensor` then opens only the other operand.
Products of two fixed-point values are truncated locally back to
``frac_bits`` (error: at most one ulp, except with probability
``2^(k+1-64)`` per element for a product of magnitude ``< 2^k`` in ring units; see
:mod:`veil.ring`). Multiplying by a public *integer* (``3 * x``, ``x * 2.0``) is
exact and needs no truncation. Dividing by a public integer (``x / 7``,
``x * (1/7)``, ``mean``, ``avg_pool2d``) is within one ulp however large the
divisor; other public factors are encoded with extra fractional bits when they
are small (:func:`veil.ring.public_factor`), so ``x * 1e-6`` keeps 17
significant bits instead of rounding to zero.

Comparisons and other non-linear functions (``<``, ``==``, ``!=``, ``relu``,
``max``...) are implemented in :mod:`veil.mpc.nonlinear` with function secret
sharing; ``==`` and ``!=`` are the equality gate, never Python identity.

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.ones(4, 8) if party.rank == 0 else None, owner=0, shape=(4, 8))
...     w = party.share(torch.eye(8, 3) if party.rank == 1 else None, owner=1, shape=(8, 3))
...     return (x @ w + 1.5 * x.sum()).reveal()
>>> y0, y1 = veil.run(job)       # doctest: +SKIP
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from veil import config, ring
from veil.mpc import beaver, overflow

if TYPE_CHECKING:
    from veil.mpc.party import Party

Public = torch.Tensor | np.ndarray | numbers.Number | Sequence


def _gate(name: str):
    # Gates live in veil.mpc.nonlinear (function secret sharing), imported lazily. Comparison
    # gates may be named like the operator (``__lt__``) or plainly (``lt``).
    from veil.mpc import nonlinear

    fn = getattr(nonlinear, name, None)
    if fn is None and name.startswith("__"):
        fn = getattr(nonlinear, name.strip("_"), None)
    if fn is None:
        raise NotImplementedError(f"veil.mpc.nonlinear does not provide {name}")
    return fn


def _promote(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return torch.promote_types(a, b)


def _magnitude_product(op: str, **op_params: Any):
    """``op`` on float64 magnitudes (an upper bound of the product's magnitude)."""
    if op == "matmul":
        return torch.matmul
    if op == "conv2d":
        return lambda a, b: F.conv2d(a, b, stride=op_params.get("stride", 1),
                                     padding=op_params.get("padding", 0))
    return torch.mul


def _reciprocal_integer(value: Any) -> int | None:
    """``n`` if the public scalar ``value`` is exactly the float ``1/n`` (``x * (1/200000)``)."""
    if isinstance(value, torch.Tensor):
        if value.ndim or not value.is_floating_point():
            return None
        value = float(value)
    elif isinstance(value, np.ndarray):
        if value.ndim or not np.issubdtype(value.dtype, np.floating):
            return None
        value = float(value)
    if not isinstance(value, float | np.floating):
        return None
    v = float(value)
    if not math.isfinite(v) or v == 0.0 or abs(v) >= 1.0:
        return None
    n = round(1.0 / v)
    return n if abs(n) < 2**62 and 1.0 / n == v else None


class SecretTensor:
    """This party's share of a secret tensor (see the module docstring).

    Build one with :meth:`veil.mpc.party.Party.share` or, from a raw int64 share,
    :meth:`SecretTensor.from_share`.
    """

    __slots__ = ("share", "party", "frac_bits", "dtype")
    # Make numpy defer to our reflected operators (ndarray * SecretTensor).
    __array_priority__ = 1000

    def __init__(self, share: torch.Tensor, party: Party, frac_bits: int,
                 dtype: torch.dtype | None = None) -> None:
        if not isinstance(share, torch.Tensor) or share.dtype != torch.int64:
            raise TypeError("a SecretTensor share must be an int64 torch.Tensor")
        self.share = share
        self.party = party
        self.frac_bits = ring.check_frac_bits(frac_bits)
        if dtype is None:
            dtype = torch.int64 if frac_bits == 0 else torch.float64
        self.dtype = dtype

    @classmethod
    def from_share(cls, party: Party, share: torch.Tensor, frac_bits: int | None = None,
                   dtype: torch.dtype | None = None) -> SecretTensor:
        """Wrap a raw int64 share (e.g. the output of a protocol) as a SecretTensor."""
        return cls(share, party, party.frac_bits if frac_bits is None else frac_bits, dtype)

    def _wrap(self, share: torch.Tensor, frac_bits: int | None = None,
              dtype: torch.dtype | None = None) -> SecretTensor:
        return SecretTensor(share, self.party, self.frac_bits if frac_bits is None else frac_bits,
                            self.dtype if dtype is None else dtype)

    # -- metadata ------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.share.shape

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.share.size() if dim is None else self.share.size(dim)

    def dim(self) -> int:
        return self.share.dim()

    @property
    def ndim(self) -> int:
        return self.share.dim()

    def numel(self) -> int:
        return self.share.numel()

    def __len__(self) -> int:
        return len(self.share)

    @property
    def device(self) -> torch.device:
        return self.share.device

    @property
    def rank(self) -> int:
        return self.party.rank

    def __repr__(self) -> str:
        return (f"SecretTensor(shape={tuple(self.shape)}, frac_bits={self.frac_bits}, "
                f"party={self.party.rank})")

    def __reduce__(self):
        raise TypeError("a SecretTensor cannot be pickled or returned from a TCP job: reveal "
                        "it, or return its raw .share explicitly")

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a SecretTensor is secret; reveal it explicitly")

    # -- operand helpers -----------------------------------------------------------
    def _check_same_party(self, other: SecretTensor) -> None:
        if other.party is not self.party:
            raise ValueError("cannot combine SecretTensors of different parties or runs")

    def _public_tensor(self, other: Public) -> torch.Tensor:
        if isinstance(other, SecretTensor):
            raise TypeError("expected a public value")
        t = torch.as_tensor(other)
        return t.to(self.device)

    def _exact_int(self, other: Public) -> torch.Tensor | int | None:
        """``other`` as exact integers if it is a public integer value, else None."""
        if isinstance(other, bool):
            return int(other)
        if isinstance(other, numbers.Integral):
            return int(other)
        if isinstance(other, float | np.floating):
            if math.isfinite(other) and float(other).is_integer() and abs(other) < 2**62:
                return int(other)
            return None
        if isinstance(other, torch.Tensor | np.ndarray):
            t = torch.as_tensor(other)
            if t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
                return t.to(device=self.device, dtype=torch.int64)
        return None

    def _encode(self, other: Public, frac_bits: int) -> torch.Tensor:
        t = self._public_tensor(other)
        if frac_bits == 0 and t.is_floating_point() and t.numel():
            finite = torch.isfinite(t)
            if bool(finite.all()) and not bool((t == torch.round(t)).all()):
                raise ValueError("an integer sharing (frac_bits=0) cannot be combined with "
                                 "non-integer public values; share it in fixed point instead")
        return ring.encode(t, frac_bits, device=self.device)

    def _times_public(self, other: Public, product=torch.mul) -> SecretTensor:
        """``product(self, other)`` for a public non-integer factor, within about one ulp
        (limbs with extra fractional bits: :func:`veil.ring.public_factor`)."""
        if self.frac_bits == 0:
            return self._wrap(product(self.share, self._encode(other, 0)))  # (integers only)
        # A Python or numpy scalar is a double: keep all its bits (torch would make it float32).
        c = float(other) if isinstance(other, numbers.Real) else self._public_tensor(other)
        factor = ring.public_factor(c, self.frac_bits)
        return self._wrap(ring.multiply_public(self.share, factor, self.party.rank, product))

    def _divide(self, divisor: int | torch.Tensor) -> SecretTensor:
        """Division by public non-zero integers, within one ulp (:func:`veil.ring.divide_share`)."""
        rank = self.party.rank
        if isinstance(divisor, torch.Tensor):
            divisor = divisor.to(device=self.device, dtype=torch.int64)
            share = ring.divide_share(self.share, divisor.abs(), rank) * divisor.sign()
        else:
            share = ring.divide_share(self.share, abs(divisor), rank)
            share = -share if divisor < 0 else share
        return self._wrap(share)

    def _aligned(self, other: SecretTensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        # Bring two sharings to the same precision by an exact left shift.
        f = max(self.frac_bits, other.frac_bits)
        a = self.share << (f - self.frac_bits) if f > self.frac_bits else self.share
        b = other.share << (f - other.frac_bits) if f > other.frac_bits else other.share
        return a, b, f

    def _truncate(self, share: torch.Tensor, bits: int) -> torch.Tensor:
        return ring.truncate_share(share, bits, self.party.rank)

    def _public_add(self, enc: torch.Tensor) -> torch.Tensor:
        # Only party 0 adds a public value; party 1 broadcasts to the same shape.
        if self.party.rank == 0:
            return self.share + enc
        return self.share + torch.zeros_like(enc)

    # -- linear operations (local) ---------------------------------------------------
    def __add__(self, other: SecretTensor | Public) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._check_same_party(other)
            a, b, f = self._aligned(other)
            if config.debug_overflow():
                overflow.check_sum(self.party, a, b)
            return self._wrap(a + b, f, _promote(self.dtype, other.dtype))
        return self._wrap(self._public_add(self._encode(other, self.frac_bits)))

    __radd__ = __add__

    def __neg__(self) -> SecretTensor:
        return self._wrap(-self.share)

    def __sub__(self, other: SecretTensor | Public) -> SecretTensor:
        if isinstance(other, SecretTensor):
            self._check_same_party(other)
            a, b, f = self._aligned(other)
            if config.debug_overflow():
                overflow.check_sum(self.party, a, b, "difference")
            return self._wrap(a - b, f, _promote(self.dtype, other.dtype))
        return self._wrap(self._public_add(-self._encode(other, self.frac_bits)))

    def __rsub__(self, other: Public) -> SecretTensor:
        return (-self) + other

    def add(self, other: SecretTensor | Public) -> SecretTensor:
        return self + other

    def sub(self, other: SecretTensor | Public) -> SecretTensor:
        return self - other

    def neg(self) -> SecretTensor:
        return -self

    # -- products --------------------------------------------------------------------
    def _product(self, other: SecretTensor | FixedSecretTensor, op: str, **op_params
                 ) -> SecretTensor:
        self._check_same_party(other)
        if config.debug_overflow() and isinstance(other, SecretTensor):
            overflow.check_product(self.party, self.share, other.share, op,
                                   _magnitude_product(op, **op_params))
        if isinstance(other, FixedSecretTensor):
            raw = beaver.bilinear_fixed(self.party, op, self.share, other.operand, **op_params)
        else:
            raw = beaver.bilinear(self.party, op, self.share, other.share, **op_params)
        bits = min(self.frac_bits, other.frac_bits)
        return self._wrap(self._truncate(raw, bits), max(self.frac_bits, other.frac_bits),
                          _promote(self.dtype, other.dtype))

    def __mul__(self, other: SecretTensor | FixedSecretTensor | Public) -> SecretTensor:
        if isinstance(other, FixedSecretTensor):
            return self._product(other, "beaver")
        if isinstance(other, SecretTensor):
            if other is self:
                return self.square()
            return self._product(other, "beaver")
        exact = self._exact_int(other)
        if exact is not None:
            if config.debug_overflow():
                peak = exact.abs().max().item() if isinstance(exact, torch.Tensor) else exact
                overflow.check_scaled(self.party, self.share, float(peak), "beaver")
            return self._wrap(self.share * exact)
        n = _reciprocal_integer(other)
        if n is not None and self.frac_bits:
            return self._divide(n)  # x * (1/n): exact division, not a rounded 1/n
        return self._times_public(other)

    __rmul__ = __mul__

    def mul(self, other: SecretTensor | Public) -> SecretTensor:
        return self * other

    def __truediv__(self, other: Public) -> SecretTensor:
        if isinstance(other, SecretTensor):
            raise TypeError("division by a secret is not supported; multiply by a public "
                            "reciprocal or use a non-linear protocol")
        t = self._public_tensor(other).to(torch.float64)
        if bool((t == 0).any()):
            raise ZeroDivisionError("division of a SecretTensor by zero")
        if (self.frac_bits and bool(torch.isfinite(t).all()) and bool((t == t.round()).all())
                and bool((t.abs() < 2**62).all())):
            # An integer divisor, however large, divides within one ulp.
            return self._divide(t.to(torch.int64) if t.dim() else int(t))
        return self * (1.0 / t if t.dim() else float(1.0 / t))

    def div(self, other: Public) -> SecretTensor:
        return self / other

    def square(self) -> SecretTensor:
        """``self * self`` in one round with a square pair (half a triple's traffic)."""
        if config.debug_overflow():
            overflow.check_product(self.party, self.share, self.share, "square")
        raw = beaver.square(self.party, self.share)
        return self._wrap(self._truncate(raw, self.frac_bits))

    def __pow__(self, exponent: int) -> SecretTensor:
        if not isinstance(exponent, int) or exponent < 1:
            raise ValueError("only positive integer powers of a SecretTensor are supported")
        result, base, e = None, self, exponent
        while True:  # square-and-multiply: log2(exponent) rounds of squares
            if e & 1:
                result = base if result is None else result * base
            e >>= 1
            if not e:
                return result
            base = base.square()

    def __matmul__(self, other: SecretTensor | FixedSecretTensor | Public) -> SecretTensor:
        if isinstance(other, SecretTensor | FixedSecretTensor):
            return self._product(other, "matmul")
        exact = self._exact_int(other)
        if exact is not None and isinstance(exact, torch.Tensor):
            return self._wrap(ring.matmul(self.share, exact))
        return self._times_public(other, ring.matmul)

    def __rmatmul__(self, other: Public) -> SecretTensor:
        exact = self._exact_int(other)
        if exact is not None and isinstance(exact, torch.Tensor):
            return self._wrap(ring.matmul(exact, self.share))
        return self._times_public(other, lambda share, m: ring.matmul(m, share))

    def matmul(self, other: SecretTensor | Public) -> SecretTensor:
        return self @ other

    def linear(self, weight: SecretTensor | Public,
               bias: SecretTensor | Public | None = None) -> SecretTensor:
        """``self @ weight.T + bias`` (like ``torch.nn.functional.linear``)."""
        wt = weight.t() if isinstance(weight, SecretTensor) else torch.as_tensor(weight).t()
        out = self @ wt
        return out + bias if bias is not None else out

    def conv2d(self, weight: SecretTensor | FixedSecretTensor | Public,
               bias: SecretTensor | Public | None = None,
               stride: ring.IntPair = 1, padding: ring.IntPair = 0) -> SecretTensor:
        """2-D convolution of this (N, C, H, W) input with ``weight`` (O, C, kH, kW).

        A secret weight costs one round (a convolution triple); a public weight is local.
        ``bias`` (shape (O,)) is added per output channel.
        """
        if isinstance(weight, SecretTensor | FixedSecretTensor):
            out = self._product(weight, "conv2d", stride=stride, padding=padding)
        else:
            exact = self._exact_int(weight)
            if exact is not None and isinstance(exact, torch.Tensor):
                out = self._wrap(ring.conv2d(self.share, exact, stride, padding))
            else:
                out = self._times_public(
                    weight, lambda share, m: ring.conv2d(share, m, stride, padding))
        return _add_channel_bias(out, bias)

    def avg_pool2d(self, kernel_size: ring.IntPair, stride: ring.IntPair | None = None,
                   padding: ring.IntPair = 0) -> SecretTensor:
        """Average pooling (local: window sums divided by the public ``kH*kW``).

        Padding counts as zeros in the average (``count_include_pad=True``). The
        division is within one ulp (:func:`veil.ring.divide_share`).
        """
        kh, kw = ring._pair(kernel_size, "kernel_size")
        sh, sw = ring._pair(stride if stride is not None else (kh, kw), "stride")
        ph, pw = ring._pair(padding, "padding")
        if self.dim() != 4:
            raise ValueError(f"avg_pool2d needs an (N, C, H, W) input, got {tuple(self.shape)}")
        x = F.pad(self.share, (pw, pw, ph, ph)) if ph or pw else self.share
        if x.shape[2] < kh or x.shape[3] < kw:
            raise ValueError(f"avg_pool2d: kernel {kh}x{kw} larger than input")
        sums = self._wrap(x.unfold(2, kh, sh).unfold(3, kw, sw).sum(dim=(-1, -2)))
        return sums._divide(kh * kw) if self.frac_bits else sums * (1.0 / (kh * kw))

    # -- reductions -------------------------------------------------------------------
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> SecretTensor:
        """Sum (local)."""
        if dim is None:
            return self._wrap(self.share.sum())
        return self._wrap(self.share.sum(dim=dim, keepdim=keepdim))

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> SecretTensor:
        """Mean: a local sum divided by the public ``n`` (within one ulp, for any ``n``)."""
        if dim is None:
            n = self.numel()
        else:
            dims = (dim,) if isinstance(dim, int) else tuple(dim)
            n = math.prod(self.shape[d] for d in dims)
        if n == 0:
            raise ValueError("mean of an empty SecretTensor")
        s = self.sum(dim, keepdim)
        if n == 1:
            return s
        return s._divide(n) if self.frac_bits else s * (1.0 / n)

    # -- shape operations (local) --------------------------------------------------
    def reshape(self, *shape: Any) -> SecretTensor:
        return self._wrap(self.share.reshape(*shape))

    def view(self, *shape: Any) -> SecretTensor:
        return self._wrap(self.share.view(*shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> SecretTensor:
        return self._wrap(self.share.flatten(start_dim, end_dim))

    def transpose(self, dim0: int, dim1: int) -> SecretTensor:
        return self._wrap(self.share.transpose(dim0, dim1))

    def t(self) -> SecretTensor:
        return self._wrap(self.share.t())

    @property
    def T(self) -> SecretTensor:  # noqa: N802 - torch's name
        return self._wrap(self.share.permute(*reversed(range(self.dim()))))

    def permute(self, *dims: Any) -> SecretTensor:
        return self._wrap(self.share.permute(*dims))

    def squeeze(self, dim: int | None = None) -> SecretTensor:
        return self._wrap(self.share.squeeze() if dim is None else self.share.squeeze(dim))

    def unsqueeze(self, dim: int) -> SecretTensor:
        return self._wrap(self.share.unsqueeze(dim))

    def expand(self, *sizes: Any) -> SecretTensor:
        return self._wrap(self.share.expand(*sizes))

    def repeat(self, *sizes: Any) -> SecretTensor:
        return self._wrap(self.share.repeat(*sizes))

    def flip(self, dims: Sequence[int]) -> SecretTensor:
        return self._wrap(self.share.flip(dims))

    def contiguous(self) -> SecretTensor:
        return self._wrap(self.share.contiguous())

    def clone(self) -> SecretTensor:
        return self._wrap(self.share.clone())

    def pad(self, pad: Sequence[int], value: float = 0.0) -> SecretTensor:
        """Constant padding like ``torch.nn.functional.pad`` (the pad value is public)."""
        out = F.pad(self.share, tuple(pad))
        if value:
            mask = F.pad(torch.zeros_like(self.share, dtype=torch.bool), tuple(pad), value=True)
            if self.party.rank == 0:
                enc = ring.encode(value, self.frac_bits)
                out = torch.where(mask, enc.to(out.device), out)
        return self._wrap(out)

    def __getitem__(self, index: Any) -> SecretTensor:
        if isinstance(index, SecretTensor):
            raise TypeError("indexing with a secret index is not supported")
        return self._wrap(self.share[index])

    def __setitem__(self, index: Any, value: SecretTensor | Public) -> None:
        share = self.share.clone()
        if isinstance(value, SecretTensor):
            self._check_same_party(value)
            if value.frac_bits != self.frac_bits:
                raise ValueError("assigned SecretTensor has a different frac_bits")
            share[index] = value.share
        else:
            enc = self._encode(value, self.frac_bits)
            share[index] = enc if self.party.rank == 0 else torch.zeros_like(enc)
        self.share = share

    def fix_mask(self, mask_id: str) -> FixedSecretTensor:
        """Open this secret once under the dealer's reusable mask ``mask_id`` (one round).

        For an operand of many products, e.g. a served model's weight: every later
        ``x @ fixed``, ``x.conv2d(fixed)`` or ``x * fixed`` opens only ``x``. The
        dealer issues each ``mask_id`` once (asking again raises), so use a fresh id
        per value (a session id and the parameter's name).
        """
        operand = beaver.open_fixed(self.party, self.share, mask_id)
        return FixedSecretTensor(operand, self.party, self.frac_bits, self.dtype)

    # -- reveal ------------------------------------------------------------------------
    def reveal(self, to: int | None = None, *, dtype: torch.dtype | None = None
               ) -> torch.Tensor | None:
        """Decode the secret: to both parties (``to=None``) or only to party ``to``.

        One round. The party that does not receive the value gets ``None``.
        The result is float64 by default (exact for every fixed-point value; float32
        would lose precision above 256 with 16 fractional bits); ``dtype`` overrides it.
        """
        dtype = dtype or self.dtype
        if to is None:
            value = self.party.open(self.share)
        elif to in (0, 1):
            if self.party.rank == to:
                other = self.party.recv()
                if not isinstance(other, torch.Tensor) or other.shape != self.shape:
                    raise ValueError("the peer revealed a value of a different shape")
                value = self.share + other.to(self.device)
            else:
                self.party.send(self.share)
                return None
        else:
            raise ValueError(f"reveal(to=...) must be None, 0 or 1, got {to}")
        if not dtype.is_floating_point:
            return ring.decode(value, self.frac_bits, torch.float64).round().to(dtype) \
                if self.frac_bits else value.to(dtype)
        return ring.decode(value, self.frac_bits, dtype)

    def get_plain_text(self) -> torch.Tensor:
        """Alias of ``reveal()`` (CrypTen's name)."""
        return self.reveal()

    def open_masked(self, mask_share: torch.Tensor) -> torch.Tensor:
        """Open ``x + r`` to both parties for a shared mask ``r`` (one round): the public
        ring value, the building block of FSS gates."""
        return self.party.open(self.share + mask_share)

    # -- non-linear hooks (implemented in veil.mpc.nonlinear) --------------------------
    # Keyword options (``method="ariann"``, ``return_drelu=``, ``return_onehot=``) are
    # forwarded to the gate; see veil.mpc.nonlinear.
    def __lt__(self, other: SecretTensor | Public) -> SecretTensor:
        return _gate("__lt__")(self, other)

    def __le__(self, other: SecretTensor | Public) -> SecretTensor:
        return _gate("__le__")(self, other)

    def __gt__(self, other: SecretTensor | Public) -> SecretTensor:
        return _gate("__gt__")(self, other)

    def __ge__(self, other: SecretTensor | Public) -> SecretTensor:
        return _gate("__ge__")(self, other)

    def eq(self, other: SecretTensor | Public) -> SecretTensor:
        """``1{self == other}`` as a secret 0/1 tensor (one DPF per element, one round)."""
        if other is None or isinstance(other, str | bytes | FixedSecretTensor):
            raise TypeError(f"cannot compare a SecretTensor with {type(other).__name__}")
        return _gate("eq")(self, other)

    def ne(self, other: SecretTensor | Public) -> SecretTensor:
        """``1{self != other}``: one minus :meth:`eq` (one round)."""
        return 1 - self.eq(other)

    # ``==`` and ``!=`` are the equality gate (as documented), never Python identity; a
    # SecretTensor stays hashable by identity, so it can still key a dict.
    def __eq__(self, other: SecretTensor | Public) -> SecretTensor:  # type: ignore[override]
        return self.eq(other)

    def __ne__(self, other: SecretTensor | Public) -> SecretTensor:  # type: ignore[override]
        return self.ne(other)

    __hash__ = object.__hash__

    def drelu(self, **options: Any) -> SecretTensor:
        return _gate("drelu")(self, **options)

    def relu(self, **options: Any) -> Any:
        return _gate("relu")(self, **options)

    def abs(self, **options: Any) -> SecretTensor:
        return _gate("abs")(self, **options)

    __abs__ = abs

    def maximum(self, other: SecretTensor | Public, **options: Any) -> SecretTensor:
        return _gate("maximum")(self, other, **options)

    def minimum(self, other: SecretTensor | Public, **options: Any) -> SecretTensor:
        return _gate("minimum")(self, other, **options)

    def max(self, dim: int | None = None, keepdim: bool = False, **options: Any) -> Any:
        return _gate("max")(self, dim=dim, keepdim=keepdim, **options)

    def argmax(self, dim: int | None = None, keepdim: bool = False,
               **options: Any) -> SecretTensor:
        return _gate("argmax")(self, dim=dim, keepdim=keepdim, **options)

    def max_pool2d(self, kernel_size: ring.IntPair, stride: ring.IntPair | None = None,
                   padding: ring.IntPair = 0, **options: Any) -> Any:
        return _gate("max_pool2d")(self, kernel_size, stride=stride, padding=padding,
                                   **options)

    # -- torch interoperability ----------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        impl = _TORCH_FUNCTIONS.get(func)
        if impl is None:
            name = getattr(func, "__name__", str(func))
            raise TypeError(f"{name} is not supported on SecretTensor")
        return impl(*args, **kwargs)


def cat(tensors: Sequence[SecretTensor], dim: int = 0) -> SecretTensor:
    """Concatenate SecretTensors of the same party along ``dim`` (local)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one SecretTensor")
    if not all(isinstance(t, SecretTensor) for t in tensors):
        raise TypeError("cat: all inputs must be SecretTensors (share public values first)")
    first = tensors[0]
    f = max(t.frac_bits for t in tensors)
    for t in tensors[1:]:
        first._check_same_party(t)
    shares = [t.share << (f - t.frac_bits) for t in tensors]
    return first._wrap(torch.cat(shares, dim=dim), f)


def stack(tensors: Sequence[SecretTensor], dim: int = 0) -> SecretTensor:
    """Stack SecretTensors of the same party along a new ``dim`` (local)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one SecretTensor")
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


def conv2d(input: SecretTensor | Public, weight: SecretTensor | Public,
           bias: SecretTensor | Public | None = None, stride: ring.IntPair = 1,
           padding: ring.IntPair = 0) -> SecretTensor:
    """``torch.nn.functional.conv2d`` where the input, the weight, or both are secret."""
    if isinstance(input, SecretTensor):
        return input.conv2d(weight, bias, stride, padding)
    if not isinstance(weight, SecretTensor):
        raise TypeError("conv2d: at least one of input and weight must be a SecretTensor")
    exact = weight._exact_int(input)
    if exact is not None and isinstance(exact, torch.Tensor):
        out = weight._wrap(ring.conv2d(exact, weight.share, stride, padding))
    else:
        out = weight._times_public(
            input, lambda share, m: ring.conv2d(m, share, stride, padding))
    return _add_channel_bias(out, bias)


class FixedSecretTensor:
    """A secret opened once under a reusable dealer mask (see :meth:`SecretTensor.fix_mask`).

    It is only a right-hand operand of products with a :class:`SecretTensor`
    (``x @ w``, ``x.conv2d(w)``, ``x * w``), each costing one round that opens
    ``x - a`` only. Nothing about the value is revealed: what is public is the
    value minus a uniform mask that the dealer never issues twice.
    """

    __slots__ = ("operand", "party", "frac_bits", "dtype")

    def __init__(self, operand: beaver.FixedOperand, party: Party, frac_bits: int,
                 dtype: torch.dtype) -> None:
        self.operand = operand
        self.party = party
        self.frac_bits = frac_bits
        self.dtype = dtype

    @property
    def shape(self) -> torch.Size:
        return self.operand.shape

    @property
    def mask_id(self) -> str:
        return self.operand.mask_id

    def __repr__(self) -> str:
        return (f"FixedSecretTensor(shape={tuple(self.shape)}, mask_id={self.mask_id!r}, "
                f"party={self.party.rank})")

    def __eq__(self, other: object) -> bool:
        raise TypeError("a FixedSecretTensor is only an operand of products; compare the "
                        "SecretTensor it was made from")

    __ne__ = __eq__
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a FixedSecretTensor is secret")


def _add_channel_bias(out: SecretTensor, bias: SecretTensor | Public | None) -> SecretTensor:
    """Add a per-output-channel bias of shape (O,) to an (N, O, H, W) result."""
    if bias is None:
        return out
    if not isinstance(bias, SecretTensor):
        bias = torch.as_tensor(bias)
    return out + bias.reshape(-1, 1, 1)


def _matmul(a, b):
    return a @ b


_TORCH_FUNCTIONS = {
    torch.cat: cat,
    torch.concat: cat,
    torch.stack: stack,
    torch.matmul: _matmul,
    torch.sum: lambda x, *a, **k: x.sum(*a, **k),
    torch.mean: lambda x, *a, **k: x.mean(*a, **k),
    torch.reshape: lambda x, shape: x.reshape(shape),
    torch.flatten: lambda x, *a, **k: x.flatten(*a, **k),
    torch.transpose: lambda x, d0, d1: x.transpose(d0, d1),
    torch.permute: lambda x, dims: x.permute(*dims),
    torch.square: lambda x: x.square(),
    torch.neg: lambda x: -x,
    torch.eq: lambda x, y: x.eq(y) if isinstance(x, SecretTensor) else y.eq(x),
    torch.ne: lambda x, y: x.ne(y) if isinstance(x, SecretTensor) else y.ne(x),
    F.conv2d: conv2d,
    F.linear: lambda x, w, b=None: x.linear(w, b),
    F.avg_pool2d: lambda x, kernel_size, stride=None, padding=0, **k: x.avg_pool2d(
        kernel_size, stride, padding),
    F.relu: lambda x, inplace=False: x.relu(),
    F.max_pool2d: lambda x, kernel_size, stride=None, padding=0, **k: x.max_pool2d(
        kernel_size, stride, padding),
    F.pad: lambda x, pad, mode="constant", value=0.0: x.pad(pad, value or 0.0),
}
