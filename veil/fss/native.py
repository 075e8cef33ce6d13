"""OpenSSL's AES-128-ECB callable from the numba kernels, so a whole tree walk runs without the GIL.

The fused kernels of :mod:`veil.fss.kernels` do one tree level per call, and the
AES of each level went through the ``cryptography`` package, which holds the
GIL. With the two parties of ``veil.run(transport="local")`` as threads of one
process, each level then hands the GIL back and forth several times per party
(~6 000 handoffs per 1e5 evaluations), and two concurrent evaluations ran slower
than the same two one after the other. Here the system ``libcrypto`` (OpenSSL 3)
is called directly from compiled code (``EVP_EncryptUpdate``, the same AES-NI
code path), so :func:`veil.fss.kernels.eval_walk` can walk all ``n`` levels of a
chunk in one GIL-free call.

Optional: :data:`AVAILABLE` is False when numba or ``libcrypto`` is missing (or
``VEIL_FSS_NATIVE_AES=0``), and :mod:`veil.fss.tree` then keeps the per-level
path. The fixed keys are the public ones of :func:`veil.fss.prg.fixed_key`, so
the outputs are bit-identical to :class:`veil.fss.prg.MMO` (checked at load).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import numpy as np

from veil.fss.prg import fixed_key, per_thread

_LIB = None
_P = ctypes.c_void_p


def _load():
    global _LIB
    if os.environ.get("VEIL_FSS_NATIVE_AES", "1") == "0":
        return None
    try:
        import llvmlite.binding as llb
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is optional
        return None
    try:  # the usual soname first: find_library runs ldconfig in a subprocess
        name = "libcrypto.so.3"
        lib = ctypes.CDLL(name)
    except OSError:  # pragma: no cover - depends on the system
        name = ctypes.util.find_library("crypto")
        if not name:
            return None
        lib = None
    try:
        lib = lib or ctypes.CDLL(name)
        lib.OpenSSL_version_num.restype = ctypes.c_ulong
        if lib.OpenSSL_version_num() < 0x30000000:  # pragma: no cover
            return None
        lib.EVP_CIPHER_CTX_new.restype = _P
        lib.EVP_CIPHER_CTX_free.argtypes = [_P]
        lib.EVP_aes_128_ecb.restype = _P
        lib.EVP_EncryptInit_ex.argtypes = [_P, _P, _P, ctypes.c_char_p, ctypes.c_char_p]
        lib.EVP_CIPHER_CTX_set_padding.argtypes = [_P, ctypes.c_int]
        # numba's ExternalFunction resolves EVP_EncryptUpdate by name in this library.
        llb.load_library_permanently(name)
    except (OSError, AttributeError):  # pragma: no cover - depends on the system
        return None
    _LIB = lib
    return lib


class EcbContexts:
    """One OpenSSL AES-128-ECB encryption context per fixed key ``first .. first+count-1``.

    ``ptrs`` is a uint64 array of the ``EVP_CIPHER_CTX*`` (for the kernels). A
    context must not be used by two threads at once: use :func:`contexts`.
    """

    def __init__(self, count: int, first: int = 0) -> None:
        lib = _LIB
        if lib is None:
            raise RuntimeError("native AES is not available")
        self._ctx: list[int] = []
        try:
            for j in range(count):
                ctx = lib.EVP_CIPHER_CTX_new()
                if not ctx:
                    raise MemoryError("EVP_CIPHER_CTX_new failed")
                self._ctx.append(ctx)
                if lib.EVP_EncryptInit_ex(ctx, lib.EVP_aes_128_ecb(), None,
                                          fixed_key(first + j), None) != 1:
                    raise RuntimeError("EVP_EncryptInit_ex failed")
                lib.EVP_CIPHER_CTX_set_padding(ctx, 0)
        except BaseException:
            self.close()
            raise
        self.ptrs = np.array(self._ctx, dtype=np.uint64)

    def close(self) -> None:
        lib = _LIB
        while self._ctx:
            ctx = self._ctx.pop()
            if lib is not None:
                lib.EVP_CIPHER_CTX_free(ctx)

    def __del__(self) -> None:
        self.close()


def contexts(count: int, first: int = 0) -> EcbContexts:
    """This thread's cached contexts for fixed keys ``first .. first+count-1``."""
    return per_thread(EcbContexts, count, first)


def _self_test() -> bool:
    from veil.fss import kernels
    from veil.fss.prg import MMO

    seeds = np.arange(14, dtype=np.uint64).reshape(7, 2) * np.uint64(0x9E3779B97F4A7C15)
    ctx = contexts(2, 0)
    out = np.empty((2, 8, 2), np.uint64)
    if kernels.ecb_blocks(ctx.ptrs, seeds, out, np.zeros(1, np.int32)) != 0:
        return False
    prg = MMO(2, 0)
    ref = np.empty((2, 8, 2), np.uint64)
    for j in range(2):
        prg.encrypt_into(seeds, j, ref[j])
    return bool((out[:, :7] == ref[:, :7]).all())


AVAILABLE = _load() is not None
if AVAILABLE:
    try:
        AVAILABLE = _self_test()
    except Exception:  # pragma: no cover - any failure means: use the per-level path
        AVAILABLE = False
