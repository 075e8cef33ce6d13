"""The encrypted pipeline computes exactly the integer model (through real encryption)."""

from __future__ import annotations

import numpy as np
import pytest

from veil import fe
from veil.fe.pipeline import EncryptedClassifier, authority_keys, evaluate_encrypted
from veil.fe.quadnet import IntQuadNet


def test_encrypted_outputs_equal_integer_model(trained, mnist_small, big_solver):
    _, net = trained
    _, _, xt, yt = mnist_small
    keys = authority_keys(net)
    report = evaluate_encrypted(net, xt[:3], yt[:3], keys=keys, solver=big_solver)
    assert report.exact_matches == 3            # decryption == plaintext integer outputs
    assert report.correct == report.plaintext_correct
    d = report.as_dict()
    assert d["images"] == 3 and d["decrypt_phases_s_mean"]["pairings_s"] > 0


def test_out_of_bound_output_is_a_clear_error(trained, mnist_small, big_solver):
    _, net = trained
    _, _, xt, _ = mnist_small
    tight = IntQuadNet.from_dict(net.to_dict())
    tight.bound = 1
    mpk, _, key = authority_keys(tight)
    server = EncryptedClassifier(mpk, key, tight, big_solver)
    with pytest.raises(fe.DiscreteLogRangeError):
        server.classify(fe.encrypt(mpk, tight.encode(xt[:1])[0]))


def test_classifier_refuses_mismatched_material(trained, big_solver):
    _, net = trained
    mpk, _, key = authority_keys(net)
    other_mpk, _ = fe.setup(net.P.shape[0])
    with pytest.raises(ValueError, match="another public key"):
        EncryptedClassifier(other_mpk, key, net, big_solver)
    changed = IntQuadNet.from_dict(net.to_dict())
    changed.D = changed.D + 1
    with pytest.raises(ValueError, match="do not match"):
        EncryptedClassifier(mpk, key, changed, big_solver)
    unbounded = IntQuadNet.from_dict(net.to_dict())
    unbounded.bound = 0
    with pytest.raises(ValueError, match="bound"):
        EncryptedClassifier(mpk, key, unbounded, big_solver)
    assert np.array_equal(key.P, net.P)
