"""Quadratic functional encryption (Dufour-Sans, Gay, Pointcheval, ePrint 2018/206).

A holder of the master secret key issues a *functional key* for an integer
matrix ``Q``; whoever holds it learns ``x^T Q x`` from an encryption of ``x``,
and nothing else about ``x``. The scheme works in the BLS12-381 pairing groups
``(G1, G2, GT)`` with generators ``g1, g2`` and ``g_T = e(g1, g2)``:

* ``setup(n)``: ``s, t`` uniform in ``Z_r^n``; ``msk = (s, t)``,
  ``mpk = (g1^s, g2^t)``.
* ``encrypt(mpk, x)``: fresh ``gamma`` and a fresh invertible 2x2 ``W``;
  ``a_i = W^-T (x_i, gamma s_i)``, ``b_i = W (x_i, -t_i)``; the ciphertext is
  ``(g1^gamma, g1^a_i, g2^b_i)``. Then ``<a_i, b_j> = x_i x_j - gamma s_i t_j``.
* ``keygen(msk, Q)``: ``g2^(s^T Q t)``.
* ``decrypt``: ``e(g1^gamma, sk) * prod_ij e(g1^a_i, g2^b_j)^Q_ij = g_T^(x^T Q x)``,
  then a discrete logarithm (:mod:`veil.fe.dlog`).

Decryption of a general ``Q`` is arranged as ``prod_i e(g1^a_i, sum_j Q_ij g2^b_j)``
(``2n`` pairings and one small-coefficient multi-exponentiation per row); the
quadratic network of :mod:`veil.fe.projection` needs far fewer.

Example
-------
>>> import numpy as np
>>> from veil import fe
>>> mpk, msk = fe.setup(3)
>>> ct = fe.encrypt(mpk, np.array([1, 2, 3]))
>>> Q = np.array([[1, 0, 0], [0, -2, 0], [1, 0, 1]])
>>> sk = fe.keygen(msk, Q)
>>> fe.decrypt(mpk, ct, sk, bound=1000)     # 1 - 8 + 3 + 9
5
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pymcl import G1, G2, GT, pairing

from veil import config
from veil.csprng import CSPRNG, default_generator
from veil.fe.dlog import DiscreteLog
from veil.fe.group import (
    G1_GEN,
    G2_GEN,
    ORDER,
    fingerprint,
    fr,
    gt_power,
    lincomb,
    random_nonzero_scalar,
    random_scalars,
)

#: Largest |x_i| accepted by ``encrypt`` (inputs are small integers, e.g. pixels).
MAX_INPUT = 2**31 - 1
#: Largest |Q_ij| accepted by ``keygen``.
MAX_COEFF = 2**31 - 1
#: Default decryption bound: 2^27, the range the guide recommends for outputs.
DEFAULT_BOUND = 2**27


class FEError(ValueError):
    """Invalid input to a functional-encryption operation."""


class KeyMismatchError(FEError):
    """A ciphertext or functional key made under another master public key."""


@dataclass(frozen=True)
class MasterPublicKey:
    """``g1^s_i`` and ``g2^t_i`` for ``i < n``; ``id`` is a digest that names the key."""

    s_g1: tuple[G1, ...]
    t_g2: tuple[G2, ...]
    id: str = field(default="", compare=False)

    @property
    def n(self) -> int:
        return len(self.s_g1)

    @staticmethod
    def build(s_g1: list[G1], t_g2: list[G2]) -> MasterPublicKey:
        if len(s_g1) != len(t_g2) or not s_g1:
            raise FEError("a master public key needs n >= 1 elements in G1 and in G2")
        if any(p.is_zero() for p in s_g1) or any(q.is_zero() for q in t_g2):
            raise FEError("invalid master public key: an element is the group identity")
        key_id = fingerprint(*(p.serialize() for p in s_g1), *(q.serialize() for q in t_g2))
        return MasterPublicKey(tuple(s_g1), tuple(t_g2), key_id)


@dataclass(frozen=True, repr=False)
class MasterSecretKey:
    """The secret vectors ``s, t`` (integers mod ``r``) and the id of the matching public key."""

    s: tuple[int, ...]
    t: tuple[int, ...]
    mpk_id: str

    @property
    def n(self) -> int:
        return len(self.s)

    def __repr__(self) -> str:  # never print secrets
        return f"MasterSecretKey(n={self.n}, mpk_id={self.mpk_id!r})"


@dataclass(frozen=True)
class Ciphertext:
    """``g1^gamma``, ``g1^a_i`` (2 per input) and ``g2^b_i`` (2 per input)."""

    gamma_g1: G1
    a: tuple[tuple[G1, G1], ...]
    b: tuple[tuple[G2, G2], ...]
    mpk_id: str

    @property
    def n(self) -> int:
        return len(self.a)


@dataclass(frozen=True)
class FunctionalKey:
    """``g2^(s^T Q t)`` together with the (public) matrix ``Q``."""

    key: G2
    Q: np.ndarray
    mpk_id: str


def _as_int_vector(x: object, n: int | None, name: str, limit: int) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim != 1:
        raise FEError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise FEError(f"{name} has length {arr.shape[0]}, the key expects {n}")
    return _as_int_array(arr, name, limit)


def _as_int_array(arr: np.ndarray, name: str, limit: int) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise FEError(f"{name} contains NaN or infinity")
        if not (arr == np.round(arr)).all():
            raise FEError(f"{name} must hold integers, got non-integral floats")
    elif arr.dtype.kind not in "iub":
        raise FEError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size and np.abs(arr.astype(np.float64)).max() > limit:
        raise FEError(f"{name} has an entry beyond +-{limit}")
    return arr.astype(np.int64)


def setup(n: int, rng: CSPRNG | None = None) -> tuple[MasterPublicKey, MasterSecretKey]:
    """Master keys for inputs of length ``n``.

    Example
    -------
    >>> mpk, msk = setup(784)    # doctest: +SKIP
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise FEError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    rng = rng or default_generator()
    s, t = random_scalars(n, rng), random_scalars(n, rng)
    mpk = MasterPublicKey.build([G1_GEN * fr(v) for v in s], [G2_GEN * fr(v) for v in t])
    return mpk, MasterSecretKey(tuple(s), tuple(t), mpk.id)


def _random_invertible_2x2(rng: CSPRNG) -> tuple[tuple[int, int], tuple[int, int]]:
    while True:
        w00, w01, w10, w11 = random_scalars(4, rng)
        if (w00 * w11 - w01 * w10) % ORDER:
            return (w00, w01), (w10, w11)


def _small_multiples(base, values: np.ndarray) -> dict[int, object]:
    """``{v: base * v}`` for each distinct input value (pixels take few values)."""
    return {int(v): base * fr(int(v)) for v in np.unique(values)}


def encrypt(mpk: MasterPublicKey, x: object, rng: CSPRNG | None = None) -> Ciphertext:
    """Encrypt the integer vector ``x`` (length ``mpk.n``) under ``mpk``.

    Cost: ``2n`` full scalar multiplications in ``G1`` and ``2n`` in ``G2``; the
    ``x_i`` terms reuse one multiple per distinct input value.
    """
    xs = _as_int_vector(x, mpk.n, "x", MAX_INPUT)
    rng = rng or default_generator()
    gamma = random_nonzero_scalar(rng)
    (w00, w01), (w10, w11) = _random_invertible_2x2(rng)
    det_inv = pow((w00 * w11 - w01 * w10) % ORDER, -1, ORDER)
    # W^-1 = det^-1 [[w11, -w01], [-w10, w00]]; a_i[c] = Winv[0][c] x_i + Winv[1][c] gamma s_i
    vinv = ((w11 * det_inv) % ORDER, (-w01 * det_inv) % ORDER,
            (-w10 * det_inv) % ORDER, (w00 * det_inv) % ORDER)
    u = (vinv[0], vinv[1])                                   # coefficients of x_i
    v = (vinv[2] * gamma % ORDER, vinv[3] * gamma % ORDER)   # coefficients of s_i
    ux = [_small_multiples(G1_GEN * fr(c), xs) for c in u]
    vf = [fr(c) for c in v]
    # b_i[c] = W[c][0] x_i - W[c][1] t_i
    wx = [_small_multiples(G2_GEN * fr(c), xs) for c in (w00, w10)]
    wf = [fr(-w01), fr(-w11)]
    a, b = [], []
    for i, xi in enumerate(xs.tolist()):
        s_i, t_i = mpk.s_g1[i], mpk.t_g2[i]
        a.append((ux[0][xi] + s_i * vf[0], ux[1][xi] + s_i * vf[1]))
        b.append((wx[0][xi] + t_i * wf[0], wx[1][xi] + t_i * wf[1]))
    return Ciphertext(G1_GEN * fr(gamma), tuple(a), tuple(b), mpk.id)


def _check_matrix(Q: object, n: int) -> np.ndarray:
    arr = np.asarray(Q.detach().cpu().numpy() if hasattr(Q, "detach") else Q)
    if arr.shape != (n, n):
        raise FEError(f"Q must have shape ({n}, {n}), got {arr.shape}")
    return _as_int_array(arr, "Q", MAX_COEFF)


def _bilinear_mod(u: tuple[int, ...], Q: np.ndarray, v: tuple[int, ...]) -> int:
    """``u^T Q v mod r`` with exact integer arithmetic, skipping zero rows."""
    total = 0
    for i in np.nonzero(Q.any(axis=1))[0]:
        row = Q[i]
        cols = np.nonzero(row)[0]
        total += u[i] * sum(int(row[j]) * v[j] for j in cols)
    return total % ORDER


def keygen(msk: MasterSecretKey, Q: object) -> FunctionalKey:
    """The functional key for ``x -> x^T Q x`` (``Q``: ``n x n`` integer matrix)."""
    Qa = _check_matrix(Q, msk.n)
    value = _bilinear_mod(msk.s, Qa, msk.t)
    return FunctionalKey(G2_GEN * fr(value), Qa.copy(), msk.mpk_id)


def check_match(mpk: MasterPublicKey, *items: Ciphertext | FunctionalKey) -> None:
    """Raise :class:`KeyMismatchError` unless every item was made under ``mpk``."""
    for item in items:
        if item.mpk_id != mpk.id:
            kind = "ciphertext" if isinstance(item, Ciphertext) else "functional key"
            raise KeyMismatchError(
                f"this {kind} was made under another master public key "
                f"({item.mpk_id[:12]}..., expected {mpk.id[:12]}...)"
            )
    for item in items:
        if isinstance(item, Ciphertext) and item.n != mpk.n:
            raise FEError(f"ciphertext has {item.n} inputs, the key expects {mpk.n}")


_SOLVERS: dict[int, DiscreteLog] = {}


def discrete_log(table_bits: int | None = None) -> DiscreteLog:
    """A process-wide :class:`DiscreteLog` (its table is loaded or built once).

    ``table_bits`` defaults to ``$VEIL_FE_TABLE_BITS`` or 20 (a 12 MiB table, built in
    a few seconds the first time, then cached on disk).
    """
    if table_bits is None:
        table_bits = config.fe_table_bits()
    if table_bits not in _SOLVERS:
        _SOLVERS[table_bits] = DiscreteLog(table_bits)
    return _SOLVERS[table_bits]


def decrypt_to_gt(mpk: MasterPublicKey, ct: Ciphertext, sk: FunctionalKey) -> GT:
    """``g_T ** (x^T Q x)`` (before the discrete logarithm)."""
    check_match(mpk, ct, sk)
    out = pairing(ct.gamma_g1, sk.key)
    zero2 = G2()
    Q = sk.Q
    for i in np.nonzero(Q.any(axis=1))[0]:
        row = Q[i].tolist()
        for c in (0, 1):
            col = lincomb([bj[c] for bj in ct.b], row, zero2)
            if not col.is_zero():
                out = out * pairing(ct.a[i][c], col)
    return out


def decrypt(
    mpk: MasterPublicKey,
    ct: Ciphertext,
    sk: FunctionalKey,
    bound: int = DEFAULT_BOUND,
    solver: DiscreteLog | None = None,
) -> int:
    """``x^T Q x``, provided ``|x^T Q x| <= bound``.

    Raises
    ------
    KeyMismatchError: ``ct`` or ``sk`` belongs to another public key.
    DiscreteLogRangeError: the value is outside ``[-bound, bound]``.
    """
    value = decrypt_to_gt(mpk, ct, sk)
    return (solver or discrete_log()).solve(value, bound)


__all__ = [
    "Ciphertext", "DEFAULT_BOUND", "FEError", "FunctionalKey", "KeyMismatchError",
    "MasterPublicKey", "MasterSecretKey", "check_match", "decrypt", "decrypt_to_gt",
    "discrete_log", "encrypt", "gt_power", "keygen", "setup",
]
