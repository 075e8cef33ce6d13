"""The data owner's side of HE inference: keys, encryption, decryption.

The :class:`Client` generates the secret key and never lets it go: what it
hands the server is :meth:`Client.public_keys` (public, relinearisation and only
the Galois keys the :class:`~veil.he.plan.HESpec` needs), whose serialisation
has no secret key in it.

Example
-------
>>> import numpy as np
>>> from torch import nn
>>> from veil.he.convert import convert
>>> from veil.he.plan import plan
>>> spec = plan(convert(nn.Linear(4, 2), (4,)), "vector")
>>> client = Client(spec)
>>> x = np.array([[0.5, -1.0, 2.0, 0.25]])
>>> enc = client.encrypt(x)
>>> bool(np.allclose(client.decrypt(enc, features=4), x, atol=1e-4))
True
>>> PublicKeys.from_bytes(client.public_keys().to_bytes()).spec == spec
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from veil.he.ckks import CKKSContext, dump, load, pack, unpack
from veil.he.plan import HESpec


@dataclass
class PublicKeys:
    """What the server evaluates with: no secret key.

    Attributes
    ----------
    spec: the deployment description; ``ctx``: its CKKS context.
    public_key, relin_keys, galois_keys: SEAL keys (``galois_keys`` is ``None`` when the
        layout rotates nothing).
    """

    spec: HESpec
    ctx: CKKSContext
    public_key: seal.PublicKey
    relin_keys: seal.RelinKeys
    galois_keys: seal.GaloisKeys | None

    def to_bytes(self) -> bytes:
        blobs = [dump(self.public_key), dump(self.relin_keys)]
        if self.galois_keys is not None:
            blobs.append(dump(self.galois_keys))
        return pack({"kind": "he-public-keys", "spec": self.spec.to_dict()}, blobs)

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKeys:
        header, blobs = unpack(data)
        if header.get("kind") != "he-public-keys":
            raise ValueError(f"expected HE public keys, got {header.get('kind')!r}")
        spec = HESpec.from_dict(header["spec"])
        ctx = CKKSContext(spec.params)
        gk = load(seal.GaloisKeys, ctx, blobs[2]) if len(blobs) > 2 else None
        return cls(spec, ctx, load(seal.PublicKey, ctx, blobs[0]),
                   load(seal.RelinKeys, ctx, blobs[1]), gk)


@dataclass
class EncryptedBatch:
    """Ciphertexts of a batch of images (or of their outputs).

    ``cts[g]`` is one group: in the ``vector`` layout one ciphertext (one image, ``g``-th),
    in the ``batch`` layout one ciphertext per feature for up to N/2 images.
    """

    layout: str
    n: int
    features: int
    period: int
    cts: list[list[seal.Ciphertext]]

    def to_bytes(self) -> bytes:
        sizes = [len(g) for g in self.cts]
        blobs = [dump(ct) for g in self.cts for ct in g]
        return pack({"kind": "he-ciphertexts", "layout": self.layout, "n": self.n,
                     "features": self.features, "period": self.period, "groups": sizes}, blobs)

    @classmethod
    def from_bytes(cls, ctx: CKKSContext, data: bytes) -> EncryptedBatch:
        header, blobs = unpack(data)
        if header.get("kind") != "he-ciphertexts":
            raise ValueError(f"expected HE ciphertexts, got {header.get('kind')!r}")
        it = iter(blobs)
        cts = [[load(seal.Ciphertext, ctx, next(it)) for _ in range(k)]
               for k in header["groups"]]
        return cls(header["layout"], int(header["n"]), int(header["features"]),
                   int(header["period"]), cts)


class Client:
    """Key owner: generates keys for ``spec``, encrypts inputs, decrypts outputs."""

    def __init__(self, spec: HESpec, _secret_key: seal.SecretKey | None = None):
        self.spec = spec
        self.ctx = CKKSContext(spec.params)
        keygen = seal.KeyGenerator(self.ctx.context) if _secret_key is None else \
            seal.KeyGenerator(self.ctx.context, _secret_key)
        self._secret_key = keygen.secret_key()
        self._public_key = seal.PublicKey()
        keygen.create_public_key(self._public_key)
        self._relin = seal.RelinKeys()
        keygen.create_relin_keys(self._relin)
        self._galois = None
        if spec.galois_steps:
            n2 = 2 * spec.params.poly_modulus_degree
            self._galois = seal.GaloisKeys()
            keygen.create_galois_keys([pow(3, s, n2) for s in spec.galois_steps], self._galois)
        self._encryptor = seal.Encryptor(self.ctx.context, self._public_key)
        self._decryptor = seal.Decryptor(self.ctx.context, self._secret_key)

    def public_keys(self) -> PublicKeys:
        """The keys the server needs (public, relinearisation, Galois), without the secret key."""
        return PublicKeys(self.spec, self.ctx, self._public_key, self._relin, self._galois)

    # -- files (the secret key stays on the client's disk, mode 0600)
    def save(self, path: str | os.PathLike) -> None:
        data = pack({"kind": "he-secret-key", "spec": self.spec.to_dict()},
                    [dump(self._secret_key)])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Client:
        with open(path, "rb") as f:
            header, blobs = unpack(f.read())
        if header.get("kind") != "he-secret-key":
            raise ValueError(f"{path} is not a Veil HE secret key file")
        spec = HESpec.from_dict(header["spec"])
        return cls(spec, load(seal.SecretKey, CKKSContext(spec.params), blobs[0]))

    # -- data
    def encrypt(self, x: np.ndarray) -> EncryptedBatch:
        """Encrypt a ``(batch, in_features)`` array in the spec's layout."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.spec.in_features:
            raise ValueError(f"expected {self.spec.in_features} features per image, "
                             f"got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        slots = self.ctx.slots
        if self.spec.layout == "vector":
            p = self.spec.period
            padded = np.zeros((len(x), p))
            padded[:, :x.shape[1]] = x
            cts = [[self._encrypt_values(np.tile(row, slots // p))] for row in padded]
            return EncryptedBatch("vector", len(x), x.shape[1], p, cts)
        groups = []
        for start in range(0, len(x), slots):
            chunk = x[start:start + slots]
            groups.append([self._encrypt_values(chunk[:, j]) for j in range(x.shape[1])])
        return EncryptedBatch("batch", len(x), x.shape[1], 0, groups)

    def _encrypt_values(self, values: np.ndarray) -> seal.Ciphertext:
        pt = self.ctx.encode(values, 0, self.ctx.scale)
        ct = seal.Ciphertext(self.ctx.context)
        self._encryptor.encrypt(pt, ct)
        return ct

    def decrypt(self, enc: EncryptedBatch, features: int | None = None) -> np.ndarray:
        """Decrypt to ``(batch, features)`` (``features`` defaults to the model's outputs)."""
        features = self.spec.out_features if features is None else features
        if enc.layout == "vector":
            return np.stack([self._decrypt_values(g[0])[:features] for g in enc.cts])
        cols = []
        for g in enc.cts:
            cols.append(np.stack([self._decrypt_values(ct) for ct in g[:features]], axis=1))
        return np.concatenate(cols)[:enc.n, :features]

    def _decrypt_values(self, ct: seal.Ciphertext) -> np.ndarray:
        pt = seal.Plaintext()
        try:
            self._decryptor.decrypt(ct, pt)
        except Exception as exc:
            raise ValueError(f"cannot decrypt: {exc}") from exc
        return np.asarray(self.ctx.encoder.decode_double(pt))
