"""Microsoft SEAL's CKKS (through TenSEAL's ``sealapi`` bindings): context, keys, serialisation.

:class:`CKKSContext` builds a SEAL context that SEAL itself checks against
128-bit security (``sec_level_type.tc128``) on top of
:meth:`~veil.he.params.CKKSParameters.check`. Keys and ciphertexts serialise to
bytes with SEAL's own format (zstd-compressed); :func:`pack` / :func:`unpack`
frame several such blobs with a JSON header, the format of every file and
message of :mod:`veil.he`. Encryption randomness comes from SEAL's
Blake2xb PRNG seeded from the OS (a CSPRNG).

Example
-------
>>> from veil.he.params import choose_parameters
>>> ctx = CKKSContext(choose_parameters(depth=2))
>>> ctx.slots == 8192 // 2, ctx.levels
(True, 3)
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from veil.he.params import CKKSParameters, InsecureParametersError

MAGIC = b"VEILHE1\n"


class CKKSContext:
    """SEAL context, encoder and evaluator for one parameter set.

    Attributes
    ----------
    params: the :class:`~veil.he.params.CKKSParameters`.
    context: the SEAL context; ``encoder``, ``evaluator``: SEAL's CKKS encoder and evaluator.
    levels: number of parameter levels in the modulus chain (depth + 1).
    """

    def __init__(self, params: CKKSParameters):
        params.check()
        self.params = params
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(params.poly_modulus_degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_modulus_degree,
                                                         list(params.coeff_mod_bit_sizes)))
        self.context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.context.parameters_set():
            raise InsecureParametersError(f"SEAL refuses the parameters: "
                                          f"{self.context.parameters_error_message()}")
        self.encoder = seal.CKKSEncoder(self.context)
        self.evaluator = seal.Evaluator(self.context)
        self._chain = []
        data = self.context.first_context_data()
        while data is not None:
            self._chain.append(data)
            data = data.next_context_data()
        self.levels = len(self._chain)

    @property
    def slots(self) -> int:
        return self.encoder.slot_count()

    @property
    def scale(self) -> float:
        return float(2 ** self.params.scale_bits)

    def parms_id(self, level: int):
        """The parameter id after ``level`` rescales."""
        if not 0 <= level < self.levels:
            raise ValueError(f"the computation needs level {level}, the parameters have "
                             f"{self.levels - 1} (the model is deeper than the parameters)")
        return self._chain[level].parms_id()

    def level_of(self, ct: seal.Ciphertext) -> int:
        return self.levels - 1 - self.context.get_context_data(ct.parms_id()).chain_index()

    def last_prime(self, level: int) -> float:
        """The prime dropped by the next rescale at ``level`` (used as the plaintext scale, so
        that a product rescales back to exactly the ciphertext's scale)."""
        return float(self._chain[level].parms().coeff_modulus()[-1].value())

    def encode(self, values: np.ndarray | float, level: int, scale: float) -> seal.Plaintext:
        pt = seal.Plaintext()
        if isinstance(values, np.ndarray):
            self.encoder.encode(values.astype(np.float64).tolist(), self.parms_id(level),
                                scale, pt)
        else:
            self.encoder.encode(float(values), self.parms_id(level), scale, pt)
        return pt

    def to_bytes(self) -> bytes:
        return json.dumps(self.params.to_dict()).encode()


# --------------------------------------------------------------------------- serialisation

def dump(obj: Any) -> bytes:
    """SEAL's serialisation of ``obj`` (key, ciphertext) as bytes."""
    fd, path = tempfile.mkstemp(prefix="veil-he-")
    os.close(fd)
    try:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def load(cls: type, ctx: CKKSContext, data: bytes) -> Any:
    """The inverse of :func:`dump` (``cls`` is a SEAL type such as ``seal.Ciphertext``)."""
    fd, path = tempfile.mkstemp(prefix="veil-he-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        obj = cls()
        try:
            obj.load(ctx.context, path)
        except Exception as exc:
            raise ValueError(f"not a valid {cls.__name__} for these CKKS parameters: "
                             f"{exc}") from exc
        return obj
    finally:
        os.unlink(path)


def pack(header: dict, blobs: list[bytes]) -> bytes:
    """``MAGIC | len(header) | header JSON | (len | blob)*``."""
    head = json.dumps({**header, "blobs": len(blobs)}).encode()
    parts = [MAGIC, struct.pack("<I", len(head)), head]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)


def unpack(data: bytes) -> tuple[dict, list[bytes]]:
    """The inverse of :func:`pack`; a clear error for anything else."""
    if not data.startswith(MAGIC):
        raise ValueError("not a Veil HE file or message (bad magic)")
    pos = len(MAGIC)
    try:
        (n,) = struct.unpack_from("<I", data, pos)
        header = json.loads(data[pos + 4:pos + 4 + n])
        pos += 4 + n
        blobs = []
        for _ in range(int(header["blobs"])):
            (m,) = struct.unpack_from("<Q", data, pos)
            blobs.append(data[pos + 8:pos + 8 + m])
            if len(blobs[-1]) != m:
                raise ValueError("truncated")
            pos += 8 + m
    except (struct.error, ValueError, KeyError) as exc:
        raise ValueError(f"corrupt Veil HE data: {exc}") from exc
    return header, blobs
