"""Decryption against the plaintext twin x^T Q x, parameter validation, key separation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil import fe
from veil.fe.scheme import decrypt_to_gt

_settings = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(x=arrays(np.int64, 4, elements=st.integers(-300, 300)),
       Q=arrays(np.int64, (4, 4), elements=st.integers(-50, 50)))
def test_decrypt_matches_plaintext(keys4, solver, x, Q):
    mpk, msk = keys4
    ct = fe.encrypt(mpk, x)
    sk = fe.keygen(msk, Q)
    expected = int(x @ Q @ x)
    assert fe.decrypt(mpk, ct, sk, bound=abs(expected) + 1, solver=solver) == expected


def test_docstring_example_and_torch_input(solver):
    mpk, msk = fe.setup(3)
    ct = fe.encrypt(mpk, torch.tensor([1, 2, 3]))
    sk = fe.keygen(msk, torch.tensor([[1, 0, 0], [0, -2, 0], [1, 0, 1]]))
    assert fe.decrypt(mpk, ct, sk, bound=100, solver=solver) == 5


@pytest.mark.parametrize("n", [1, 2, 7])
def test_odd_sizes_and_edge_values(n, solver):
    mpk, msk = fe.setup(n)
    for x in (np.zeros(n, np.int64), np.ones(n, np.int64), -np.ones(n, np.int64),
              np.full(n, 255, np.int64)):
        Q = np.eye(n, dtype=np.int64)
        Q[0, -1] -= 3
        ct = fe.encrypt(mpk, x)
        expected = int(x @ Q @ x)
        assert fe.decrypt(mpk, ct, fe.keygen(msk, Q), bound=10**6, solver=solver) == expected


def test_zero_matrix_decrypts_to_zero(keys4, solver):
    mpk, msk = keys4
    ct = fe.encrypt(mpk, np.array([5, -1, 2, 9]))
    assert fe.decrypt(mpk, ct, fe.keygen(msk, np.zeros((4, 4), np.int64)), 0, solver) == 0


def test_range_limit_is_a_clear_error(keys4, solver):
    mpk, msk = keys4
    x = np.array([100, 0, 0, 0])
    ct = fe.encrypt(mpk, x)
    sk = fe.keygen(msk, np.diag([1, 0, 0, 0]))                       # value 10_000
    assert fe.decrypt(mpk, ct, sk, bound=10_000, solver=solver) == 10_000
    with pytest.raises(fe.DiscreteLogRangeError, match="outside"):
        fe.decrypt(mpk, ct, sk, bound=9_999, solver=solver)
    neg = fe.keygen(msk, np.diag([-1, 0, 0, 0]))                      # value -10_000
    assert fe.decrypt(mpk, ct, neg, bound=10_000, solver=solver) == -10_000
    with pytest.raises(fe.DiscreteLogRangeError):
        fe.decrypt(mpk, ct, neg, bound=9_999, solver=solver)


def test_fresh_randomness_per_ciphertext(keys4):
    mpk, _ = keys4
    x = np.array([1, 2, 3, 4])
    c1, c2 = fe.encrypt(mpk, x), fe.encrypt(mpk, x)
    assert c1.gamma_g1 != c2.gamma_g1
    assert all(p != q for p, q in zip(c1.a[0], c2.a[0], strict=True))


def test_ciphertext_under_another_key_is_refused(keys4, other_keys4, solver):
    mpk, msk = keys4
    mpk2, msk2 = other_keys4
    x = np.array([1, 2, 3, 4])
    ct = fe.encrypt(mpk2, x)
    sk = fe.keygen(msk, np.eye(4, dtype=np.int64))
    with pytest.raises(fe.KeyMismatchError, match="another master public key"):
        fe.decrypt(mpk, ct, sk, bound=1000, solver=solver)
    # Even with the id check bypassed (a forged id), the pairing product is garbage
    # and the discrete logarithm finds nothing in range: never a wrong value.
    forged = fe.Ciphertext(ct.gamma_g1, ct.a, ct.b, mpk.id)
    with pytest.raises(fe.DiscreteLogRangeError):
        fe.decrypt(mpk, forged, sk, bound=1000, solver=solver)
    # The right key decrypts it.
    sk2 = fe.keygen(msk2, np.eye(4, dtype=np.int64))
    assert fe.decrypt(mpk2, ct, sk2, bound=1000, solver=solver) == 30


def test_value_matches_gt_power(keys4):
    from veil.fe.group import GT_GEN, gt_power

    mpk, msk = keys4
    x = np.array([3, -1, 0, 2])
    Q = np.arange(16).reshape(4, 4) - 8
    assert decrypt_to_gt(mpk, fe.encrypt(mpk, x), fe.keygen(msk, Q)) == gt_power(
        GT_GEN, int(x @ Q @ x))


@pytest.mark.parametrize("bad, match", [
    (np.array([1, 2, 3]), "length 3"),
    (np.array([[1, 2], [3, 4]]), "1-D"),
    (np.array([1.5, 2, 3, 4]), "integers"),
    (np.array([np.nan, 2, 3, 4]), "NaN"),
    (np.array([2**40, 0, 0, 0]), "beyond"),
    (np.array(["a", "b", "c", "d"]), "integer array"),
])
def test_encrypt_rejects_bad_input(keys4, bad, match):
    with pytest.raises(fe.FEError, match=match):
        fe.encrypt(keys4[0], bad)


def test_keygen_and_setup_reject_bad_input(keys4):
    _, msk = keys4
    with pytest.raises(fe.FEError, match="shape"):
        fe.keygen(msk, np.eye(3, dtype=np.int64))
    with pytest.raises(fe.FEError, match="integers"):
        fe.keygen(msk, np.eye(4) * 0.5)
    for n in (0, -1, 2.5, "3"):
        with pytest.raises(fe.FEError):
            fe.setup(n)


def test_secret_key_repr_hides_secrets(keys4):
    _, msk = keys4
    assert str(msk.s[0]) not in repr(msk)
