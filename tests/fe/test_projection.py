"""The projection path equals the plaintext network and the direct (one key per Q) path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from veil import fe


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=arrays(np.int64, 4, elements=st.integers(0, 255)),
       P=arrays(np.int64, (4, 3), elements=st.integers(-7, 7)),
       D=arrays(np.int64, (3, 2), elements=st.integers(-9, 9)))
def test_projection_matches_plaintext(keys4, big_solver, x, P, D):
    mpk, msk = keys4
    key = fe.keygen_projected(msk, P, D)
    expected = key.plaintext(x)
    bound = int(np.abs(expected).max())
    assert fe.decrypt_projected(mpk, fe.encrypt(mpk, x), key, bound=bound,
                                solver=big_solver) == expected.tolist()


def test_projection_equals_direct_path(keys4, solver):
    mpk, msk = keys4
    rng = np.random.default_rng(3)  # not-secret: test data
    x = rng.integers(0, 256, 4)
    P, D = rng.integers(-5, 6, (4, 3)), rng.integers(-4, 5, (3, 2))
    ct = fe.encrypt(mpk, x)
    timings = fe.DecryptTimings()
    projected = fe.decrypt_projected(mpk, ct, fe.keygen_projected(msk, P, D), bound=2**22,
                                     solver=solver, timings=timings)
    direct = [fe.decrypt(mpk, ct, fe.keygen(msk, P @ np.diag(D[:, ell]) @ P.T), bound=2**22,
                         solver=solver) for ell in range(D.shape[1])]
    assert projected == direct
    assert timings.calls == 1 and timings.pairings > 0


def test_large_coefficients_use_scalar_fallback(keys4, solver):
    mpk, msk = keys4
    P = np.array([[1000], [0], [-3], [2]])
    D = np.array([[1, -2]])
    x = np.array([3, 1, 4, 1])
    key = fe.keygen_projected(msk, P, D)
    assert fe.decrypt_projected(mpk, fe.encrypt(mpk, x), key, bound=10**8,
                                solver=solver) == key.plaintext(x).tolist()


def test_projected_key_checks(keys4, other_keys4, solver):
    mpk, msk = keys4
    with pytest.raises(fe.FEError, match="P must have shape"):
        fe.keygen_projected(msk, np.ones((3, 2), np.int64), np.ones((2, 1), np.int64))
    with pytest.raises(fe.FEError, match="D must have shape"):
        fe.keygen_projected(msk, np.ones((4, 2), np.int64), np.ones((3, 1), np.int64))
    key = fe.keygen_projected(msk, np.ones((4, 2), np.int64), np.ones((2, 1), np.int64))
    ct_other = fe.encrypt(other_keys4[0], np.arange(4))
    with pytest.raises(fe.KeyMismatchError):
        fe.decrypt_projected(mpk, ct_other, key, bound=100, solver=solver)
