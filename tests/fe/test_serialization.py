"""Versioned serialisation: round trips, validation, refusal of foreign ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest

from veil import fe
from veil.fe.serialization import MAGIC, SerializationError


def test_round_trips(keys4, solver, tmp_path):
    mpk, msk = keys4
    x = np.array([7, 0, 255, 3])
    Q = np.arange(16).reshape(4, 4) - 5
    P, D = np.array([[1, 0], [2, -1], [0, 1], [1, 1]]), np.array([[1, 0, 2], [-1, 3, 0]])
    items = {"mpk": mpk, "msk": msk, "ct": fe.encrypt(mpk, x), "sk": fe.keygen(msk, Q),
             "pk": fe.keygen_projected(msk, P, D)}
    for name, item in items.items():
        fe.dump(item, tmp_path / name)
    mpk2 = fe.load(tmp_path / "mpk")
    assert mpk2 == mpk and mpk2.id == mpk.id
    msk2 = fe.load(tmp_path / "msk", mpk=mpk2)
    assert msk2.s == msk.s and msk2.t == msk.t
    ct2 = fe.load(tmp_path / "ct", mpk=mpk2)
    sk2 = fe.load(tmp_path / "sk", mpk=mpk2)
    pk2 = fe.load(tmp_path / "pk", mpk=mpk2)
    assert fe.decrypt(mpk2, ct2, sk2, bound=10**6, solver=solver) == int(x @ Q @ x)
    # keys made from the reloaded master secret key work on the old ciphertext
    assert fe.decrypt(mpk2, ct2, fe.keygen(msk2, Q), bound=10**6, solver=solver) == int(x @ Q @ x)
    assert fe.decrypt_projected(mpk2, ct2, pk2, bound=10**6,
                                solver=solver) == items["pk"].plaintext(x).tolist()


def test_foreign_ciphertext_refused_on_load(keys4, other_keys4):
    ct = fe.encrypt(other_keys4[0], np.arange(4))
    with pytest.raises(fe.KeyMismatchError):
        fe.loads(fe.dumps(ct), mpk=keys4[0])
    with pytest.raises(fe.KeyMismatchError):
        fe.loads(fe.dumps(other_keys4[0]), mpk=keys4[0])


def test_corrupt_inputs_are_refused(keys4):
    mpk, msk = keys4
    data = fe.dumps(fe.encrypt(mpk, np.arange(4)))
    with pytest.raises(SerializationError, match="magic"):
        fe.loads(b"NOTVEIL" + data[7:])
    with pytest.raises(SerializationError, match="version"):
        fe.loads(MAGIC + b"\x09\x00" + data[8:])
    with pytest.raises(SerializationError, match="truncated"):
        fe.loads(data[:-10])
    with pytest.raises(SerializationError, match="trailing"):
        fe.loads(data + b"\x00")
    flipped = bytearray(data)
    flipped[-50] ^= 0xFF   # inside the last G2 element
    with pytest.raises(SerializationError, match="invalid G2"):
        fe.loads(bytes(flipped))
    with pytest.raises(TypeError):
        fe.dumps("not a key")


def test_tampered_public_key_refused(keys4, other_keys4):
    mpk = keys4[0]
    data = fe.dumps(mpk)
    head_end = data.index(b"}") + 1
    # swap in a valid element from another key: the id no longer matches the contents
    other = other_keys4[0].s_g1[0].serialize()
    tampered = data[:head_end] + other + data[head_end + 48:]
    with pytest.raises(SerializationError, match="id does not match"):
        fe.loads(tampered)
