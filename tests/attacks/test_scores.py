import numpy as np
import pytest
import torch

from veil.attacks.scores import ScoreOracle, cross_entropy, logit_confidence


def test_logit_confidence_matches_definition():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    expected = torch.log(torch.tensor([0.7 / 0.3, 1.0]))
    assert torch.allclose(logit_confidence(p, y), expected.double())
    assert torch.allclose(cross_entropy(p, y), -torch.log(torch.tensor([0.7, 0.5])).double())


def test_logit_confidence_stays_finite_when_py_rounds_to_one():
    logits = torch.tensor([[60.0, 0.0, 0.0]], dtype=torch.float64)
    p = torch.softmax(logits, 1)
    assert p[0, 0] == 1.0
    s = logit_confidence(p, torch.tensor([0]))
    assert torch.isfinite(s).all() and s.item() == pytest.approx(60 - np.log(2), abs=1e-6)


def test_oracle_returns_probabilities_only():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 4)
    model.train()
    oracle = ScoreOracle(model, batch_size=3)
    p = oracle(torch.randn(10, 5))
    assert p.shape == (10, 4) and p.dtype == torch.float64 and not p.requires_grad
    assert torch.allclose(p.sum(1), torch.ones(10, dtype=torch.float64))
    assert model.training and oracle.queries == 10


def test_oracle_rounding():
    oracle = ScoreOracle(torch.nn.Linear(3, 3), round_to=1)
    p = oracle(torch.randn(6, 3))
    assert torch.allclose(p * 10, torch.round(p * 10))


@pytest.mark.parametrize("p, y", [
    (torch.tensor([[0.5, 0.5]]), torch.tensor([2])),
    (torch.tensor([[0.5, float("nan")]]), torch.tensor([0])),
    (torch.tensor([0.5, 0.5]), torch.tensor([0])),
])
def test_bad_probabilities(p, y):
    with pytest.raises(ValueError):
        logit_confidence(p, y)
