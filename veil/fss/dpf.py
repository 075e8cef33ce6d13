"""Distributed point functions (Boyle, Gilboa, Ishai 2016), batched.

``dpf_gen`` shares ``f(x) = beta if x == alpha else 0`` on ``n``-bit inputs with
outputs in ``(Z_{2^ell})^m``; keys are ``n(λ + 2) + λ + m·ell`` bits each.

Example
-------
>>> import numpy as np
>>> from veil.fss.dpf import dpf_gen, dpf_eval
>>> k0, k1 = dpf_gen(np.array([7], dtype=np.uint64), beta=3, n=8, ell=8)
>>> x = np.array([7], dtype=np.uint64)
>>> int(((dpf_eval(k0, x) + dpf_eval(k1, x)) & 255)[0, 0])
3
"""

from __future__ import annotations

import numpy as np

from veil.csprng import CSPRNG
from veil.fss import tree
from veil.fss.dcf import _check_alpha, _check_beta
from veil.fss.key import TreeKey


def dpf_gen(
    alpha: np.ndarray, beta, n: int, ell: int, rng: CSPRNG | None = None, leaf: int = 0
) -> tuple[TreeKey, TreeKey]:
    """Key pairs for ``N`` point functions ``x == alpha[k] -> beta[k]`` (see :func:`dcf_gen`)."""
    alpha = _check_alpha(alpha, n)
    return tree.gen("dpf", alpha, _check_beta(beta, alpha.shape[0], ell), n, ell, rng, leaf)


def dpf_eval(key: TreeKey, x: np.ndarray) -> np.ndarray:
    """This party's shares ``(N, m)`` uint64 of ``beta·1{x == alpha}``; consumes the key."""
    if key.kind != "dpf":
        raise ValueError(f"expected a DPF key, got {key.kind}")
    return tree.evaluate(key, x)
