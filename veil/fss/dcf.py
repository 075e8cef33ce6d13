"""Distributed comparison functions (Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar,
Rathee, Eurocrypt 2021), batched.

``dcf_gen`` shares the function ``f(x) = beta if x < alpha else 0`` on ``n``-bit
inputs with outputs in ``(Z_{2^ell})^m`` between two parties; each party's
``dcf_eval`` returns additive shares (mod ``2^ell``) of ``f(x)``. Keys are
``n(λ + m·ell + 2) + λ + m·ell`` bits each (see :func:`veil.fss.key.key_bits`).

Example
-------
>>> import numpy as np
>>> from veil.fss.dcf import dcf_gen, dcf_eval
>>> alpha = np.array([5, 200], dtype=np.uint64)
>>> k0, k1 = dcf_gen(alpha, beta=1, n=8, ell=1)
>>> x = np.array([4, 201], dtype=np.uint64)
>>> ((dcf_eval(k0, x) + dcf_eval(k1, x)) & 1)[:, 0].tolist()   # [4 < 5, 201 < 200]
[1, 0]
"""

from __future__ import annotations

import numpy as np

from veil.csprng import CSPRNG
from veil.fss import tree
from veil.fss.key import TreeKey


def _check_alpha(alpha: np.ndarray, n: int) -> np.ndarray:
    alpha = np.asarray(alpha)
    if alpha.ndim != 1:
        raise ValueError(f"alpha must be 1-D, got shape {alpha.shape}")
    if alpha.dtype != np.uint64:
        if not np.issubdtype(alpha.dtype, np.integer):
            raise ValueError(f"alpha must be an integer array, got {alpha.dtype}")
        alpha = alpha.astype(np.uint64)
    if not 1 <= n <= 64:
        raise ValueError(f"input width n must be in 1..64, got {n}")
    if n < 64 and (alpha >> np.uint64(n)).any():
        raise ValueError(f"alpha exceeds the {n}-bit domain")
    return np.ascontiguousarray(alpha)


def _check_beta(beta, num: int, ell: int) -> np.ndarray:
    if not 1 <= ell <= 64:
        raise ValueError(f"output width ell must be in 1..64, got {ell}")
    b = np.asarray(beta)
    if not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"beta must be integers, got {b.dtype}")
    b = b.astype(np.int64).view(np.uint64) if b.dtype.kind == "i" else b.astype(np.uint64)
    if b.ndim == 0:
        b = np.full((num, 1), b, dtype=np.uint64)
    elif b.ndim == 1:
        b = np.broadcast_to(b[None, :], (num, b.shape[0]))
    if b.ndim != 2 or b.shape[0] != num or b.shape[1] < 1:
        raise ValueError(f"beta must be a scalar, (m,) or (N, m) with N={num}; got {b.shape}")
    return np.ascontiguousarray(b)


def dcf_gen(
    alpha: np.ndarray, beta, n: int, ell: int, rng: CSPRNG | None = None, leaf: int = 0
) -> tuple[TreeKey, TreeKey]:
    """Key pairs for ``N`` comparison functions ``x < alpha[k] -> beta[k]``.

    Parameters
    ----------
    alpha:
        ``(N,)`` unsigned thresholds with ``n`` significant bits.
    beta:
        Payload: scalar, vector ``(m,)`` or per key ``(N, m)``, reduced mod ``2^ell``
        (signed integers are taken two's complement).
    n, ell:
        Input and output bit widths (1..64).
    rng:
        Randomness for the root seeds (default: this thread's CSPRNG).
    """
    alpha = _check_alpha(alpha, n)
    return tree.gen("dcf", alpha, _check_beta(beta, alpha.shape[0], ell), n, ell, rng, leaf)


def dcf_eval(key: TreeKey, x: np.ndarray) -> np.ndarray:
    """This party's shares ``(N, m)`` uint64 of ``beta·1{x < alpha}`` (mod ``2^ell``).

    Consumes the key batch: a second evaluation raises ``KeyReuseError``.
    """
    if key.kind != "dcf":
        raise ValueError(f"expected a DCF key, got {key.kind}")
    return tree.evaluate(key, x)
