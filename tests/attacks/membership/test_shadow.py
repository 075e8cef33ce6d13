import numpy as np
import pytest
import torch

from veil.attacks.membership import (
    ShadowAttack,
    balanced_membership,
    hflip,
    shift,
    threshold_scores,
)
from veil.attacks.membership.shadows import ShadowSet, query
from veil.attacks.metrics import evaluate_scores


@pytest.mark.parametrize("k, n", [(2, 2), (4, 7), (16, 33)])
def test_balanced_membership_halves_every_column(k, n):
    m = balanced_membership(k, n, np.random.default_rng(0))
    assert m.shape == (k, n) and (m.sum(0) == k // 2).all()


@pytest.mark.parametrize("k, n", [(3, 10), (0, 10), (4, 1)])
def test_balanced_membership_rejects(k, n):
    with pytest.raises(ValueError):
        balanced_membership(k, n, np.random.default_rng(0))


def test_augmentations():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(hflip(x)[0, 0, 0], torch.tensor([3.0, 2, 1, 0]))
    s = shift(1, 0)(x)
    assert torch.equal(s[0, 0, :, 1:], x[0, 0, :, :3]) and torch.equal(s[0, 0, :, 0], x[0, 0, :, 0])
    assert shift(0, 0)(x) is x
    assert torch.equal(shift(0, -1)(x)[0, 0, :3], x[0, 0, 1:])


def test_query_checks_the_score_function():
    with pytest.raises(ValueError, match="shape"):
        query(lambda z: torch.ones(len(z) + 1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="augmentation"):
        query(lambda z: z, torch.zeros(3, 2), ())


def test_shadowset_shapes():
    with pytest.raises(ValueError):
        ShadowSet(np.zeros((2, 5), bool), torch.zeros(2, 1, 4, 3))


def _probs(conf: np.ndarray, labels: np.ndarray, c: int = 3) -> torch.Tensor:
    p = np.full(conf.shape + (c,), 0.0)
    p[...] = ((1 - conf) / (c - 1))[..., None]
    np.put_along_axis(p, np.broadcast_to(labels, conf.shape)[..., None], conf[..., None], -1)
    return torch.as_tensor(p)


def test_shadow_attack_learns_per_class_rules():
    rng = np.random.default_rng(0)
    k, n = 6, 600
    labels = rng.integers(0, 3, n)
    mask = balanced_membership(k, n, rng)
    # Members are more confident, by a class-dependent margin.
    margin = np.array([0.05, 0.2, 0.4])[labels]
    conf = np.clip(0.5 + np.where(mask, margin, 0) + 0.02 * rng.normal(size=(k, n)), 0.34, 0.999)
    attack = ShadowAttack().fit(_probs(conf, labels), torch.as_tensor(labels), mask)
    assert set(attack.models) == {0, 1, 2}
    members = rng.random(n) < 0.5
    tconf = np.clip(0.5 + np.where(members, margin, 0) + 0.02 * rng.normal(size=n), 0.34, 0.999)
    r = evaluate_scores(attack.score(_probs(tconf, labels), torch.as_tensor(labels)), members)
    assert r.auc > 0.9
    with pytest.raises(RuntimeError):
        ShadowAttack().score(_probs(tconf, labels), torch.as_tensor(labels))


def test_threshold_signals():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    for signal in ("loss", "confidence"):
        s = threshold_scores(p, y, signal)
        assert list(np.argsort(-s)) == [0, 1, 2]
    with pytest.raises(ValueError):
        threshold_scores(p, y, "entropy")
