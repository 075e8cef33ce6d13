"""Ring gates from FSS keys: exact sign / DReLU with selection payloads, and equality.

Party-local building blocks, no communication: the dealer's ``*_keygen`` makes
both parties' single-use material; online, each party masks its shares
(``*_mask``), the two parties open the masked values in ONE round (the caller's
transport does that), and each party finishes locally (``*_finish``).

**Sign gate (BCG+21 DReLU, exact over the whole ring).** For ``x`` in
``Z_{2^n}`` with mask ``r``, the parties open ``x̂ = x + r``. Writing ``'`` for
the low ``n-1`` bits, ``MSB(x) = MSB(x̂) ⊕ MSB(r) ⊕ 1{x̂' < r'}``, so
``d = DReLU(x) = 1{x >= 0} = u ⊕ e`` with the public ``u = 1 ⊕ MSB(x̂)`` and the
secret ``e = MSB(r) ⊕ 1{x̂' < r'}``. One DCF on ``n-1`` bits with threshold
``r'`` gives shares of ``c = 1{x̂' < r'}`` times a *vector* payload; with
``m = MSB(r)`` and ``e = m + c(1 - 2m)`` the dealer sets the payload to
``(1 - 2m)·v`` and hands out shares of ``m·v`` for the vector ``v = (1, r, r_w)``,
so the parties get shares of ``e·v`` and then, locally (``u`` is public),
``d·v = u·v + (1 - 2u)·e·v``: shares of ``d``, ``d·r`` and ``d·r_w``. That gives in
the same single round:

* ``d`` itself (DReLU; the comparisons are ``d`` or ``1 - d`` of a difference);
* ``d·x = x̂·d - d·r`` (ReLU, one round: a spline gate in the sense of BCG+21 §4);
* ``d·w = ŵ·d - d·r_w`` for extra secret operands ``w`` opened in the same
  round with their own masks (the selection in max / max-pool / argmax trees).

With ``ell = 1`` the output group is ``Z_2`` and the same formulas give XOR
shares of DReLU: the 4,190-bit key of BCG+21 for 32-bit inputs.

**AriaNN's comparison (``method="ariann"``).** AriaNN opens ``x̂ = x + r`` on
``bits`` = 32 low bits and evaluates its DIF ``1{x̂ <= r}``, which equals
``1{x <= 0}`` only when ``x + r`` does not wrap: wrong with probability
``|x| / 2^bits`` per comparison, and meaningless for ``|x| >= 2^(bits-1)``.
Reproduced here (as ``d = 1 - 1{x̂ <= r} = 1{x > 0}``) for comparison with the
paper; never the default.

**Equality (DPF).** Open ``ẑ = z + r``; ``z = 0`` iff ``ẑ = r``: one DPF with
``α = r``.

Example
-------
>>> import numpy as np
>>> from veil.fss import gates
>>> m0, m1 = gates.sign_keygen(3, relu=True)
>>> x = np.array([5, -7, 0], dtype=np.int64).view(np.uint64)
>>> x0 = np.array([11, 22, 33], dtype=np.uint64); x1 = x - x0   # additive shares
>>> xh = gates.sign_mask(m0, x0)[0] + gates.sign_mask(m1, x1)[0]  # the one opening
>>> o0, o1 = gates.sign_finish(m0, 0, xh), gates.sign_finish(m1, 1, xh)
>>> (o0["d"] + o1["d"]).tolist(), (o0["dx"] + o1["dx"]).view(np.int64).tolist()
([1, 0, 1], [5, 0, 0])
"""

from __future__ import annotations

import numpy as np

from veil.csprng import CSPRNG, default_generator
from veil.fss.dcf import dcf_eval, dcf_gen
from veil.fss.dpf import dpf_eval, dpf_gen
from veil.fss.key import KeyReuseError, TreeKey, key_bits

ONE = np.uint64(1)
METHODS = ("exact", "ariann")
ARIANN_BITS = 32


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)


def _u64(rng: CSPRNG, shape: tuple[int, ...], bits: int) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    raw = np.frombuffer(rng.random_bytes(8 * count), dtype=np.uint64).reshape(shape)
    return raw & _mask(bits)


def _as_u64(a, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == np.int64:
        a = a.view(np.uint64)
    if a.dtype != np.uint64:
        raise TypeError(f"{name} must be int64 or uint64 ring elements, got {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def _take(material: dict, name: str, leaf: int = 0) -> TreeKey:
    """Pop the packed key out of ``material`` (single use) and unpack it."""
    parts = {k: material.pop("key_" + k, None) for k in ("seeds", "values", "bits")}
    if any(v is None for v in parts.values()):
        raise KeyReuseError(f"{name} material already used (or has no key): keys are single-use")
    n, ell, width = (int(v) for v in np.asarray(material["shape"])[:3])
    kind = "dpf" if name == "equality" else "dcf"
    return TreeKey.from_parts(parts, kind, int(material["party"]), n, ell, width, leaf)


def _claim_mask(material: dict, name: str) -> None:
    """Let the gate's input mask hide one value only (``x + r`` and ``x' + r`` reveal
    ``x - x'``): a second masking, or one after the gate finished, raises."""
    if material.get("masked") or "r" not in material or "key_seeds" not in material:
        raise KeyReuseError(f"{name} material already masked a value: its mask and key are "
                            "single-use")
    material["masked"] = True


def _drop_masks(material: dict) -> None:
    """Forget the gate's mask shares once used, so no later call can mask with them again."""
    for name in ("r", "rw", "c", "a", "e"):
        material.pop(name, None)


def _key_fields(key: TreeKey) -> dict[str, np.ndarray]:
    return {"key_" + k: v for k, v in key.to_parts().items()}


# -- sign / DReLU / select -------------------------------------------------------------------
#: Early-termination depth of the lean (1-bit) DCF: its leaf table is one AES block.
LEAN_LEAF = 7
#: Material layout version fields of the ``shape`` array (see :func:`sign_keygen`).
_SHAPE = ("n", "ell", "width", "ring_bits", "relu", "extra", "method", "bits", "lean", "leaf")


def lean_leaf(n: int) -> int:
    """Early-termination depth of a lean DCF on ``n`` bits: :data:`LEAN_LEAF`, or none
    when the tree is too shallow for a whole-word leaf table (``n < 6``)."""
    leaf = min(LEAN_LEAF, n)
    return leaf if leaf >= 6 else 0


def sign_width(extra: int = 0, relu: bool = False) -> int:
    """Payload components of a sign gate: ``d``, then ``d·r`` if ``relu``, then ``extra``."""
    return 1 + int(relu) + extra


def _check_bits(bits: int | None, ring_bits: int) -> int:
    bits = ring_bits if bits is None else int(bits)
    if not 2 <= bits <= ring_bits:
        raise ValueError(f"bits must be in 2..ring_bits={ring_bits}, got {bits}")
    return bits


def sign_key_bits(ring_bits: int = 64, ell: int | None = None, extra: int = 0,
                  relu: bool = False, method: str = "exact", bits: int | None = None,
                  lean: bool = False) -> int:
    """Bits of the DCF key of one sign gate (without the mask shares).

    Example
    -------
    >>> sign_key_bits(relu=True, bits=32, lean=True)   # a 31-bit DCF, 1-bit output, leaf 7
    3400
    """
    bits = _check_bits(bits, ring_bits)
    if lean:
        return key_bits("dcf", bits - 1, 1, 1, lean_leaf(bits - 1))
    ell = ring_bits if ell is None else ell
    n = bits - 1 if method == "exact" else min(ARIANN_BITS, ring_bits)
    return key_bits("dcf", n, ell, sign_width(extra, relu))


def sign_material_bytes(ring_bits: int = 64, extra: int = 0, relu: bool = False,
                        method: str = "exact", bits: int | None = None,
                        lean: bool = False) -> int:
    """Bytes one party holds per element for a sign gate: key and mask shares as shipped.

    Example
    -------
    >>> sign_material_bytes(relu=True), sign_material_bytes(relu=True, bits=32, lean=True)
    (2088, 450)
    """
    key = (sign_key_bits(ring_bits, None, extra, relu, method, bits, lean) + 7) // 8
    words = (ring_bits + 7) // 8
    if lean:  # r, rw; a, a·r, a·rw; the 1-bit share of MSB(r) in one byte
        return key + words * (1 + extra) + words * (1 + int(relu) + extra) + 1
    return key + words * (1 + extra) + words * sign_width(extra, relu)


def sign_keygen(
    count: int,
    extra: int = 0,
    relu: bool = False,
    ring_bits: int = 64,
    ell: int | None = None,
    method: str = "exact",
    rng: CSPRNG | None = None,
    bits: int | None = None,
    lean: bool = False,
) -> tuple[dict, dict]:
    """Dealer: material of ``count`` sign gates for both parties.

    Parameters
    ----------
    count:
        Number of elements.
    extra:
        Extra operands ``w`` per element whose product ``d·w`` is wanted.
    relu:
        Also produce ``d·x`` (ReLU).
    ring_bits:
        The ring of the shares, masks and outputs (2..64).
    ell:
        Output ring bits (default ``ring_bits``; 1 gives XOR shares of DReLU only).
    method:
        ``"exact"`` (BCG+21) or ``"ariann"`` (AriaNN's DIF on 32 bits; has errors).
    bits:
        Compare on the low ``bits`` bits only (default ``ring_bits``): exact whenever the
        compared value satisfies ``-2^(bits-1) <= x < 2^(bits-1)``, and the DCF then has
        ``bits - 1`` levels instead of ``ring_bits - 1``.
    lean:
        The two-round gate: a DCF with a 1-bit output and early termination
        (:data:`LEAN_LEAF`), then a second round opening one masked bit per element
        to select (``d``, ``d·x``, ``d·w``) with a dealer-shared random bit ``ρ``. About
        4x smaller keys than the one-round gate at ``bits = 32``.

    Returns
    -------
    Two dicts of numpy arrays: ``key_seeds``, ``key_values``, ``key_bits`` (the
    DCF keys, :meth:`TreeKey.to_parts`), ``r`` and ``rw`` (mask shares), ``c``
    (shares of ``m·v``; lean: XOR shares of ``m``), lean only ``a`` (shares of ``ρ``,
    ``ρ·r``, ``ρ·rw``), ``shape`` and ``party``.
    """
    rng = rng or default_generator()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 2 <= ring_bits <= 64:
        raise ValueError(f"ring_bits must be in 2..64, got {ring_bits}")
    bits = _check_bits(bits, ring_bits)
    if lean and (method != "exact" or ell is not None):
        raise ValueError("the lean sign gate is exact and outputs in the ring (no ell, method)")
    ell = ring_bits if ell is None else ell
    if not 1 <= ell <= 64 or ((relu or extra) and ell != ring_bits):
        raise ValueError("ell must be in 1..64, and equal ring_bits when products are wanted")
    if count < 0 or extra < 0:
        raise ValueError("count and extra must be non-negative")
    width = sign_width(extra, relu)
    omask = _mask(ell)
    rmask = _mask(ring_bits)
    r = _u64(rng, (count,), ring_bits)
    rw = _u64(rng, (count, extra), ring_bits)
    v = np.concatenate(
        [np.ones((count, 1), np.uint64)] + ([r[:, None]] if relu else []) + [rw], axis=1
    )
    leaf = 0
    if method == "exact":
        n = bits - 1
        msb = (r >> np.uint64(bits - 1)) & ONE
        alpha = r & _mask(n)
        beta = ((ONE - (msb << ONE))[:, None] * v) & omask
        const = (msb[:, None] * v) & omask
    else:
        n = min(ARIANN_BITS, ring_bits)
        # 1{y <= a} = 1 - 1{~y < ~a}: one DCF on complemented inputs, payload -v, constant v.
        alpha = ~r & _mask(n)
        beta = (np.uint64(0) - v) & omask
        const = v & omask
    secret = [("r", r, ring_bits), ("rw", rw, ring_bits)]
    if lean:
        leaf = lean_leaf(n)
        k0, k1 = dcf_gen(alpha, 1, n, 1, rng, leaf=leaf)
        rho = _u64(rng, (count,), 1)
        # shares of rho·v = (rho, rho·r, rho·rw): rho's low bits XOR-share rho itself
        secret += [("a", (rho[:, None] * v) & rmask, ring_bits), ("c", msb, 1)]
    else:
        k0, k1 = dcf_gen(alpha, beta, n, ell, rng)
        secret.append(("c", const, ell))
    shape = np.array([n, 1 if lean else ell, 1 if lean else width, ring_bits, int(relu), extra,
                      METHODS.index(method), bits, int(lean), leaf], dtype=np.int64)
    shares = [{**_key_fields(key), "party": party, "shape": shape.copy()}
              for party, key in ((0, k0), (1, k1))]
    for name, value, nb in secret:
        s0 = _u64(rng, value.shape, nb)
        s1 = (value - s0) & _mask(nb)
        if lean and name == "c":  # XOR shares of MSB(r), one byte each
            shares[0][name], shares[1][name] = s0.astype(np.uint8), (value ^ s0).astype(np.uint8)
        else:
            shares[0][name], shares[1][name] = s0.view(np.int64), s1.view(np.int64)
    return shares[0], shares[1]


def _params(material: dict) -> dict[str, int]:
    shape = [int(v) for v in material["shape"]]
    if len(shape) != len(_SHAPE):
        raise ValueError(f"sign material has a malformed shape record {shape}")
    return dict(zip(_SHAPE, shape, strict=True))


def is_lean(material: dict) -> bool:
    """Whether sign material is the two-round lean gate (see :func:`sign_keygen`)."""
    return bool(_params(material)["lean"])


def sign_mask(material: dict, x_share, w_shares=None) -> tuple[np.ndarray, np.ndarray]:
    """This party's masked shares to open: ``x_b + r_b`` and ``w_b + rw_b`` (uint64)."""
    p = _params(material)
    ring_bits, extra = p["ring_bits"], p["extra"]
    _claim_mask(material, "sign")
    count = material["r"].shape[0]
    x = _as_u64(x_share, "x share", (count,))
    rmask = _mask(ring_bits)
    xm = (x + material["r"].view(np.uint64)) & rmask
    if extra:
        w = _as_u64(w_shares, "w shares", (count, extra))
        wm = (w + material["rw"].view(np.uint64)) & rmask
    else:
        wm = np.zeros((count, 0), np.uint64)
    return xm, wm


def _public_msb(material: dict, party: int, x_hat) -> tuple[dict, np.ndarray, np.ndarray]:
    """Check the party, reduce ``x̂``; returns the parameters, ``x̂`` and ``u = 1 ⊕ MSB(x̂)``."""
    if party != int(material["party"]):
        raise ValueError(f"material belongs to party {int(material['party'])}, not {party}")
    p = _params(material)
    if "r" not in material:
        raise KeyReuseError("sign material already used: keys and masks are single-use")
    count = material["r"].shape[0]
    x_hat = _as_u64(x_hat, "x_hat", (count,)) & _mask(p["ring_bits"])
    u = ONE ^ ((x_hat >> np.uint64(p["bits"] - 1)) & ONE)
    return p, x_hat, u


def sign_select_bit(material: dict, party: int, x_hat) -> np.ndarray:
    """Lean gate, after the first opening: this party's bit to open in the second round.

    ``e_b ⊕ ρ_b`` (uint8), where ``e_b`` is its XOR share of ``MSB(r) ⊕ 1{x̂' < r'}``
    and ``ρ_b`` of the dealer's random bit; consumes the DCF key.
    """
    p, x_hat, _ = _public_msb(material, party, x_hat)
    if not p["lean"]:
        raise ValueError("sign_select_bit is for lean sign material (sign_keygen(lean=True))")
    key = _take(material, "sign", p["leaf"])
    e = dcf_eval(key, x_hat & _mask(p["n"]))[:, 0].astype(np.uint8)
    material["e"] = e ^ material.pop("c")
    return material["e"] ^ (material["a"][:, 0].view(np.uint64) & ONE).astype(np.uint8)


def sign_finish(material: dict, party: int, x_hat, w_hat=None,
                e_hat=None) -> dict[str, np.ndarray]:
    """Local end of the sign gate after the opening(s); consumes the material.

    ``e_hat``: for lean material, the opened bits of the second round (the XOR of
    both parties' :func:`sign_select_bit`). Returns this party's shares (uint64, mod
    ``2^ell``): ``d`` = DReLU(x) (``1{x > 0}`` for ``method="ariann"``), ``dx`` =
    ``d·x`` if the material has ``relu``, ``dw`` = ``d·w`` (``(N, extra)``).
    """
    p, x_hat, u = _public_msb(material, party, x_hat)
    n, ell, ring_bits = p["n"], p["ell"], p["ring_bits"]
    relu, extra = p["relu"], p["extra"]
    count = x_hat.shape[0]
    b = np.uint64(party)
    if p["lean"]:
        if "e" not in material or e_hat is None:
            raise ValueError("lean sign material needs sign_select_bit and the opened bits")
        omask = _mask(ring_bits)
        # d = p ⊕ ρ for the public p = u ⊕ ê, so d·v = p·v + (1 - 2p)·ρ·v (v = 1, r, rw)
        pub = u ^ (np.asarray(e_hat).astype(np.uint64) & ONE)
        vshare = _vshare(material, b, relu, omask)
        dv = (pub[:, None] * vshare
              + (ONE - (pub << ONE))[:, None] * material["a"].view(np.uint64)) & omask
        for name in ("a", "e"):
            material.pop(name)
    else:
        key = _take(material, "sign", 0)
        omask = _mask(ell)
        vshare = _vshare(material, b, relu, omask)
        if METHODS[p["method"]] == "exact":
            y = x_hat & _mask(n)
        else:
            # e = 1{x̂ <= r} (AriaNN's DIF, "x <= 0" unless x + r wraps); d = 1 ⊕ e = "x > 0"
            y = ~x_hat & _mask(n)
            u = np.ones(count, np.uint64)
        ev = dcf_eval(key, y) + material["c"].view(np.uint64)
        dv = (u[:, None] * vshare + (ONE - (u << ONE))[:, None] * ev) & omask
    _drop_masks(material)
    out = {"d": dv[:, 0]}
    d = dv[:, :1]
    col = 1
    if relu:
        out["dx"] = (x_hat[:, None] * d - dv[:, col:col + 1])[:, 0] & omask
        col += 1
    if extra:
        w_hat = _as_u64(w_hat, "w_hat", (count, extra)) & _mask(ring_bits)
        out["dw"] = (w_hat * d - dv[:, col:]) & omask
    return out


def _vshare(material: dict, b: np.uint64, relu: int, omask: np.uint64) -> np.ndarray:
    """This party's shares of ``v = (1, r, rw)`` (``r`` only with ``relu``)."""
    count = material["r"].shape[0]
    r_share = material["r"].view(np.uint64)[:, None] & omask
    rw_share = material["rw"].view(np.uint64) & omask
    return np.concatenate([np.full((count, 1), b)] + ([r_share] if relu else []) + [rw_share],
                          axis=1)


# -- equality ---------------------------------------------------------------------------------
def eq_keygen(count: int, ring_bits: int = 64, ell: int | None = None,
              rng: CSPRNG | None = None) -> tuple[dict, dict]:
    """Dealer: material of ``count`` equality-to-zero gates (one DPF each)."""
    rng = rng or default_generator()
    if not 1 <= ring_bits <= 64:
        raise ValueError(f"ring_bits must be in 1..64, got {ring_bits}")
    ell = ring_bits if ell is None else ell
    r = _u64(rng, (count,), ring_bits)
    k0, k1 = dpf_gen(r, 1, ring_bits, ell, rng)
    s0 = _u64(rng, (count,), ring_bits)
    shape = np.array([ring_bits, ell, 1, ring_bits], dtype=np.int64)
    m0 = {**_key_fields(k0), "party": 0, "shape": shape, "r": s0.view(np.int64)}
    m1 = {**_key_fields(k1), "party": 1, "shape": shape.copy(),
          "r": ((r - s0) & _mask(ring_bits)).view(np.int64)}
    return m0, m1


def eq_mask(material: dict, z_share) -> np.ndarray:
    """This party's masked share ``z_b + r_b`` to open."""
    _claim_mask(material, "equality")
    count = material["r"].shape[0]
    z = _as_u64(z_share, "z share", (count,))
    return (z + material["r"].view(np.uint64)) & _mask(int(material["shape"][3]))


def eq_finish(material: dict, party: int, z_hat) -> np.ndarray:
    """This party's shares of ``1{z == 0}`` (mod ``2^ell``); consumes the material."""
    if party != int(material["party"]):
        raise ValueError(f"material belongs to party {int(material['party'])}, not {party}")
    if "r" not in material:
        raise KeyReuseError("equality material already used: keys and masks are single-use")
    count = material["r"].shape[0]
    z_hat = _as_u64(z_hat, "z_hat", (count,)) & _mask(int(material["shape"][3]))
    key = _take(material, "equality")
    _drop_masks(material)
    return dpf_eval(key, z_hat)[:, 0]
