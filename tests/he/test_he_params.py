"""Parameter selection: 128-bit security per the HE standard, refusal of anything weaker."""

from __future__ import annotations

import pytest
from torch import nn

from veil.he import (
    CKKSParameters,
    InsecureParametersError,
    Square,
    choose_parameters,
    convert,
    plan,
)
from veil.he.ckks import CKKSContext
from veil.he.params import MAX_LOG_Q_128


@pytest.mark.parametrize("depth", range(1, 12))
def test_chosen_parameters_are_secure_and_deep_enough(depth):
    p = choose_parameters(depth)
    assert p.total_bits <= MAX_LOG_Q_128[p.poly_modulus_degree]
    assert p.depth == depth and p.security_bits == 128
    assert p.coeff_mod_bit_sizes[-1] >= max(p.coeff_mod_bit_sizes[:-1])
    CKKSContext(p)  # SEAL's own tc128 check agrees


def test_more_slots_means_a_larger_ring():
    assert choose_parameters(2, slots=8192).poly_modulus_degree == 16384


@pytest.mark.parametrize("n,bits", [
    (8192, (60, 40, 40, 40, 60)),        # 240 bits > 218
    (4096, (40, 30, 40)),                 # 110 bits > 109
    (16384, (60,) + (50,) * 8 + (60,)),   # 520 bits > 438
])
def test_insecure_parameters_are_refused(n, bits):
    p = CKKSParameters(n, bits, 30)
    with pytest.raises(InsecureParametersError, match="128-bit security"):
        p.check()
    with pytest.raises(InsecureParametersError):
        CKKSContext(p)


def test_malformed_parameters_are_refused():
    with pytest.raises(InsecureParametersError, match="poly_modulus_degree"):
        CKKSParameters(1000, (30, 20, 30), 20).check()
    with pytest.raises(InsecureParametersError, match="special"):
        CKKSParameters(8192, (50, 40, 40), 40).check()
    with pytest.raises(InsecureParametersError, match="20-60 bits"):
        CKKSParameters(8192, (61, 40, 61), 40).check()


def test_too_deep_a_model_for_the_given_parameters_is_refused():
    g = convert(nn.Sequential(nn.Linear(4, 4), Square(), nn.Linear(4, 4), Square(),
                              nn.Linear(4, 2)), (4,))
    shallow = CKKSParameters(8192, (40, 30, 30, 60), 30)
    with pytest.raises(InsecureParametersError, match="needs 5 multiplicative levels"):
        plan(g, "vector", shallow)


def test_no_parameters_for_an_absurd_depth():
    with pytest.raises(InsecureParametersError, match="reduce the model's depth"):
        choose_parameters(60)
