"""Function secret sharing: batched DPF and DCF on a fixed-key AES PRG, and the
ring gates built on them (exact DReLU/sign, comparisons, ReLU, equality).

See ``docs/fss.md``. The secret-tensor gates live in :mod:`veil.mpc.nonlinear`.
"""

from veil.fss.dcf import dcf_eval, dcf_gen
from veil.fss.dpf import dpf_eval, dpf_gen
from veil.fss.key import LAMBDA, KeyReuseError, TreeKey, key_bits

__all__ = [
    "LAMBDA",
    "KeyReuseError",
    "TreeKey",
    "dcf_eval",
    "dcf_gen",
    "dpf_eval",
    "dpf_gen",
    "key_bits",
]
