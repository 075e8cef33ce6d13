import numpy as np
import pytest
import torch

from veil.attacks.membership import lira_offline, lira_online, run_attacks
from veil.attacks.membership.shadows import balanced_membership
from veil.attacks.metrics import evaluate_scores
from veil.attacks.scores import ScoreOracle


def _memorising_recipe(x, y):
    """Full-batch Adam on an MLP that memorises random labels (only memorisation helps)."""
    counter = iter(range(1000))

    def train(indices):
        g = torch.Generator().manual_seed(next(counter))
        with torch.random.fork_rng():
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(),
                                        torch.nn.Linear(64, 4))
        idx = torch.as_tensor(indices)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        return model.eval()

    return train


@pytest.fixture(scope="module")
def task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 16, generator=g)
    y = torch.randint(0, 4, (240,), generator=g)   # random labels: nothing to generalise
    return x, y


@pytest.fixture(scope="module")
def shadow_report(task):
    x, y = task
    train = _memorising_recipe(x, y)
    rng = np.random.default_rng(1)
    members = np.zeros(len(x), bool)
    members[rng.permutation(len(x))[:120]] = True
    target = train(np.flatnonzero(members))
    return run_attacks(ScoreOracle(target), x, y, members, train, num_shadows=8, seed=2), train


def test_lira_detects_membership_of_a_memorising_model(shadow_report):
    report, _ = shadow_report
    assert report.results["lira"].auc > 0.9
    assert report.results["lira_offline"].auc > 0.8
    assert report.results["threshold"].auc > 0.8
    assert set(report.to_dict()["attacks"]) == {"threshold", "shadow", "lira", "lira_offline"}


def test_lira_is_at_chance_on_a_model_that_never_saw_the_data(task, shadow_report):
    report, train = shadow_report
    x, y = task
    g = torch.Generator().manual_seed(5)
    other_x = torch.randn(120, 16, generator=g)
    other_y = torch.randint(0, 4, (120,), generator=g)
    outsider = _memorising_recipe(other_x, other_y)(np.arange(120))
    fake_members = np.zeros(len(x), bool)
    fake_members[np.random.default_rng(3).permutation(len(x))[:120]] = True
    # Reuse the shadows already trained on the pool: only the target changes.
    rep = run_attacks(ScoreOracle(outsider), x, y, fake_members, train,
                      shadows=report.shadows)
    for name in ("lira", "lira_offline", "threshold"):
        assert abs(rep.results[name].auc - 0.5) < 0.12, name


def test_lira_synthetic_gaussians_separate():
    rng = np.random.default_rng(0)
    mask = balanced_membership(16, 400, rng)
    shadow = np.where(mask, 2.0, 0.0) + rng.normal(size=mask.shape)
    members = rng.random(400) < 0.5
    target = np.where(members, 2.0, 0.0) + rng.normal(size=400)
    for fix in (True, False):
        on = evaluate_scores(lira_online(target, shadow, mask, fix), members)
        off = evaluate_scores(lira_offline(target, shadow, mask, fix), members)
        assert on.auc > 0.85 and off.auc > 0.85


def test_lira_uses_per_example_difficulty():
    # Examples differ wildly in their baseline confidence; the threshold cannot cope, LiRA can.
    rng = np.random.default_rng(1)
    n = 2000
    base = rng.normal(0, 5, n)
    mask = balanced_membership(16, n, rng)
    shadow = base + np.where(mask, 1.0, 0.0) + 0.3 * rng.normal(size=mask.shape)
    members = rng.random(n) < 0.5
    target = base + np.where(members, 1.0, 0.0) + 0.3 * rng.normal(size=n)
    lira = evaluate_scores(lira_online(target, shadow, mask), members)
    naive = evaluate_scores(target, members)
    assert lira.auc > 0.95 and naive.auc < 0.6
    assert lira.tpr_at_fpr[0.01] > 0.5 > naive.tpr_at_fpr[0.01]


def test_lira_augmentations_add_evidence():
    rng = np.random.default_rng(2)
    mask = balanced_membership(8, 1000, rng)
    members = rng.random(1000) < 0.5
    shadow = np.where(mask, 0.5, 0.0)[..., None] + rng.normal(size=(8, 1000, 4))
    target = np.where(members, 0.5, 0.0)[:, None] + rng.normal(size=(1000, 4))
    one = evaluate_scores(lira_online(target[:, :1], shadow[..., :1], mask), members).auc
    four = evaluate_scores(lira_online(target, shadow, mask), members).auc
    assert four > one + 0.05


def test_lira_bad_input():
    mask = np.array([[True, True], [False, False]])
    with pytest.raises(ValueError, match="no 'in' shadow|no 'out'"):
        lira_online(np.zeros(2), np.zeros((2, 2)), mask[[1, 1]])
    with pytest.raises(ValueError, match="shapes disagree"):
        lira_online(np.zeros(3), np.zeros((2, 2)), mask)
    with pytest.raises(ValueError, match="finite"):
        lira_offline(np.array([np.nan, 0]), np.zeros((2, 2)), mask)
    with pytest.raises(ValueError, match=">= 2"):
        lira_online(np.zeros(2), np.zeros((2, 2)), mask, fix_variance=False)
