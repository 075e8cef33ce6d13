"""Quadratic functional encryption (``veil.fe``) and partially encrypted inference.

A server holding functional keys learns ``x^T Q x`` from an encryption of ``x``
and nothing else; with the projection trick it evaluates the quadratic first
part of a network (Linear -> square -> Linear) on encrypted images.

Example
-------
>>> import numpy as np
>>> from veil import fe
>>> mpk, msk = fe.setup(3)
>>> ct = fe.encrypt(mpk, np.array([1, -2, 3]))
>>> sk = fe.keygen(msk, np.eye(3, dtype=np.int64))
>>> fe.decrypt(mpk, ct, sk, bound=100)
14
"""

from veil.fe.dlog import DiscreteLog, DiscreteLogRangeError
from veil.fe.projection import (
    DecryptTimings,
    ProjectedKey,
    decrypt_projected,
    keygen_projected,
)
from veil.fe.scheme import (
    DEFAULT_BOUND,
    Ciphertext,
    FEError,
    FunctionalKey,
    KeyMismatchError,
    MasterPublicKey,
    MasterSecretKey,
    decrypt,
    encrypt,
    keygen,
    setup,
)
from veil.fe.serialization import dump, dumps, load, loads

__all__ = [
    "DEFAULT_BOUND", "Ciphertext", "DecryptTimings", "DiscreteLog", "DiscreteLogRangeError",
    "FEError", "FunctionalKey", "KeyMismatchError", "MasterPublicKey", "MasterSecretKey",
    "ProjectedKey", "decrypt", "decrypt_projected", "dump", "dumps", "encrypt", "keygen",
    "keygen_projected", "load", "loads", "setup",
]
