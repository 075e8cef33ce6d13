"""The projection trick: decrypting a quadratic network ``y_l = sum_j D_jl (p_j^T x)^2``.

Ryffel, Dufour-Sans, Gay, Bach, Pointcheval (NeurIPS 2019). The network's
``L`` outputs are quadratic forms ``Q_l = P diag(D_l) P^T`` that share the
projection ``P`` (``n x k``). Because the ciphertext is linear in the input,
the decryptor can turn the ciphertext of ``x`` into a ciphertext of ``P^T x``
on its own: ``A_j = sum_i P_ij a_i`` in ``G1`` and ``B_j = sum_i P_ij b_i`` in
``G2`` (small-coefficient multi-exponentiations). Then

``e(A_j, B_j) = g_T^((p_j^T x)^2 - gamma (p_j^T s)(p_j^T t))``

and output ``l`` is ``e(g1^gamma, sk_l) * prod_j e(A_j, B_j)^D_jl`` with
``sk_l = g2^(sum_j D_jl (p_j^T s)(p_j^T t))``: ``2k + L`` pairings for all
outputs instead of ``~2n`` per output, and one ``G2`` element per output key.

Example
-------
>>> import numpy as np
>>> from veil import fe
>>> mpk, msk = fe.setup(4)
>>> P = np.array([[1, 0], [2, -1], [0, 1], [1, 1]]); D = np.array([[1, 0, 2], [-1, 3, 0]])
>>> key = fe.keygen_projected(msk, P, D)
>>> x = np.array([1, 2, 3, 4])
>>> fe.decrypt_projected(mpk, fe.encrypt(mpk, x), key, bound=10**4)
[56, 75, 162]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from pymcl import G1, G2, GT, pairing

from veil.fe.dlog import DiscreteLog
from veil.fe.group import G2_GEN, ORDER, fr, gt_multi_power, lincomb
from veil.fe.scheme import (
    DEFAULT_BOUND,
    MAX_COEFF,
    Ciphertext,
    FEError,
    MasterPublicKey,
    MasterSecretKey,
    _as_int_array,
    check_match,
    discrete_log,
)


@dataclass(frozen=True)
class ProjectedKey:
    """Functional keys for the ``L`` outputs of a quadratic network with projection ``P``.

    ``P`` (``n x k``) and ``D`` (``k x L``) are public to the key holder; ``keys`` holds
    one ``G2`` element per output.
    """

    P: np.ndarray
    D: np.ndarray
    keys: tuple[G2, ...]
    mpk_id: str

    @property
    def n(self) -> int:
        return self.P.shape[0]

    @property
    def k(self) -> int:
        return self.P.shape[1]

    @property
    def outputs(self) -> int:
        return self.D.shape[1]

    def plaintext(self, x: np.ndarray) -> np.ndarray:
        """The same function in the clear (exact int64; the oracle for tests)."""
        x = np.asarray(x, dtype=np.int64)
        h = x @ self.P
        return (h * h) @ self.D


@dataclass
class DecryptTimings:
    """Seconds spent in each phase of :func:`decrypt_projected` (accumulated)."""

    projection: float = 0.0
    pairings: float = 0.0
    combine: float = 0.0
    dlog: float = 0.0
    calls: int = field(default=0)

    def as_dict(self) -> dict[str, float]:
        return {"projection_s": self.projection, "pairings_s": self.pairings,
                "combine_s": self.combine, "dlog_s": self.dlog, "calls": self.calls}


def _check_network(P: object, D: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    Pa = np.asarray(P.detach().cpu().numpy() if hasattr(P, "detach") else P)
    Da = np.asarray(D.detach().cpu().numpy() if hasattr(D, "detach") else D)
    if Pa.ndim != 2 or Pa.shape[0] != n or Pa.shape[1] < 1:
        raise FEError(f"P must have shape ({n}, k) with k >= 1, got {Pa.shape}")
    if Da.ndim != 2 or Da.shape[0] != Pa.shape[1] or Da.shape[1] < 1:
        raise FEError(f"D must have shape ({Pa.shape[1]}, L) with L >= 1, got {Da.shape}")
    return _as_int_array(Pa, "P", MAX_COEFF), _as_int_array(Da, "D", MAX_COEFF)


def keygen_projected(msk: MasterSecretKey, P: object, D: object) -> ProjectedKey:
    """Keys for ``y_l = sum_j D[j, l] (P[:, j] . x)^2``, one ``G2`` element per output."""
    Pa, Da = _check_network(P, D, msk.n)
    ps, pt = [], []
    for j in range(Pa.shape[1]):
        col = Pa[:, j]
        idx = np.nonzero(col)[0]
        ps.append(sum(int(col[i]) * msk.s[i] for i in idx) % ORDER)
        pt.append(sum(int(col[i]) * msk.t[i] for i in idx) % ORDER)
    keys = []
    for ell in range(Da.shape[1]):
        value = sum(int(Da[j, ell]) * ps[j] * pt[j] for j in range(Pa.shape[1])) % ORDER
        keys.append(G2_GEN * fr(value))
    return ProjectedKey(Pa.copy(), Da.copy(), tuple(keys), msk.mpk_id)


def project(ct: Ciphertext, P: np.ndarray) -> tuple[list[tuple[G1, G1]], list[tuple[G2, G2]]]:
    """The ciphertext of ``P^T x`` (components ``A_j``, ``B_j``) from the ciphertext of ``x``."""
    zero1, zero2 = G1(), G2()
    a0 = [ai[0] for ai in ct.a]
    a1 = [ai[1] for ai in ct.a]
    b0 = [bi[0] for bi in ct.b]
    b1 = [bi[1] for bi in ct.b]
    A, B = [], []
    for j in range(P.shape[1]):
        col = P[:, j].tolist()
        A.append((lincomb(a0, col, zero1), lincomb(a1, col, zero1)))
        B.append((lincomb(b0, col, zero2), lincomb(b1, col, zero2)))
    return A, B


def _pair(p: G1, q: G2) -> GT:
    return GT() if p.is_zero() or q.is_zero() else pairing(p, q)


def decrypt_projected_to_gt(
    mpk: MasterPublicKey, ct: Ciphertext, key: ProjectedKey, timings: DecryptTimings | None = None
) -> list[GT]:
    """``g_T ** y_l`` for every output (before the discrete logarithms)."""
    check_match(mpk, ct, key)
    if key.n != ct.n:
        raise FEError(f"key expects {key.n} inputs, ciphertext has {ct.n}")
    t0 = time.perf_counter()
    A, B = project(ct, key.P)
    t1 = time.perf_counter()
    E = [_pair(A[j][0], B[j][0]) * _pair(A[j][1], B[j][1]) for j in range(key.k)]
    masks = [pairing(ct.gamma_g1, k) for k in key.keys]
    t2 = time.perf_counter()
    out = [masks[ell] * gt_multi_power(E, key.D[:, ell].tolist()) for ell in range(key.outputs)]
    t3 = time.perf_counter()
    if timings is not None:
        timings.projection += t1 - t0
        timings.pairings += t2 - t1
        timings.combine += t3 - t2
    return out


def decrypt_projected(
    mpk: MasterPublicKey,
    ct: Ciphertext,
    key: ProjectedKey,
    bound: int = DEFAULT_BOUND,
    solver: DiscreteLog | None = None,
    timings: DecryptTimings | None = None,
) -> list[int]:
    """All ``L`` outputs ``y_l = sum_j D_jl (p_j^T x)^2`` of the network, each ``|y_l| <= bound``.

    Raises
    ------
    KeyMismatchError: ``ct`` or ``key`` belongs to another public key.
    DiscreteLogRangeError: an output is outside ``[-bound, bound]``.
    """
    values = decrypt_projected_to_gt(mpk, ct, key, timings)
    solver = solver or discrete_log()
    t0 = time.perf_counter()
    ys = [solver.solve(v, bound) for v in values]
    if timings is not None:
        timings.dlog += time.perf_counter() - t0
        timings.calls += 1
    return ys
