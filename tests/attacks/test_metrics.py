import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.attacks.metrics import evaluate_scores, tpr_at_fpr


def test_perfect_attack():
    members = np.r_[np.ones(1500, bool), np.zeros(1500, bool)]
    r = evaluate_scores(members.astype(float), members)
    assert r.auc == 1.0 and r.balanced_accuracy == 1.0
    assert r.tpr_at_fpr == {0.001: 1.0, 0.01: 1.0}
    assert r.reasons == {}


def test_inverted_attack_has_zero_auc():
    members = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    r = evaluate_scores(-members.astype(float), members)
    assert r.auc == 0.0
    assert r.tpr_at_fpr[0.01] == 0.0
    assert r.balanced_accuracy == 0.5           # the best threshold is "everyone is a member"


def test_random_attack_is_at_chance():
    rng = np.random.default_rng(0)
    members = rng.random(40000) < 0.5
    r = evaluate_scores(rng.random(40000), members)
    assert abs(r.auc - 0.5) < 0.01
    assert abs(r.tpr_at_fpr[0.01] - 0.01) < 0.006
    assert r.tpr_at_fpr[0.001] < 0.005
    assert r.balanced_accuracy < 0.52


def test_too_few_nonmembers_gives_none_with_reason():
    members = np.r_[np.ones(50, bool), np.zeros(500, bool)]
    r = evaluate_scores(np.arange(550.0)[::-1], members)
    assert r.tpr_at_fpr[0.001] is None and "500 non-members" in r.reasons[0.001]
    assert r.tpr_at_fpr[0.01] == 1.0
    d = r.to_dict()
    assert d["tpr_at_0.1%_fpr"] is None and d["tpr_at_1%_fpr"] == 1.0
    assert "tpr_at_0.1%_fpr" in d["notes"]


def test_hand_checked_roc_point():
    # 4 non-members, 4 members; one member below every non-member.
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5, 0.4, 0.3])
    members = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    r = evaluate_scores(scores, members)
    assert r.auc == pytest.approx(12 / 16)
    assert r.balanced_accuracy == pytest.approx(0.875)     # threshold 0.7: TPR 3/4, TNR 1
    fpr, tpr = r.fpr, r.tpr
    assert tpr_at_fpr(fpr, tpr, 0.25, 4) == (0.75, None)


def test_infinite_scores_keep_their_order():
    r = evaluate_scores(np.array([np.inf, 1.0, -np.inf, 0.0]), np.array([1, 1, 0, 0]))
    assert r.auc == 1.0


@pytest.mark.parametrize("scores, members, match", [
    (np.array([0.1, np.nan]), np.array([1, 0]), "NaN"),
    (np.array([0.1, 0.2]), np.array([1, 1]), "both"),
    (np.array([0.1, 0.2, 0.3]), np.array([1, 0]), "labels"),
    (np.array([0.1, 0.2]), np.array([2, 0]), "0/1"),
])
def test_bad_input(scores, members, match):
    with pytest.raises(ValueError, match=match):
        evaluate_scores(scores, members)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=2, max_size=40))
def test_auc_equals_mann_whitney(pairs):
    scores = np.array([p[0] for p in pairs], dtype=float)
    members = np.array([p[1] for p in pairs])
    if members.all() or not members.any():
        return
    pos, neg = scores[members], scores[~members]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    r = evaluate_scores(scores, members)
    assert math.isclose(r.auc, wins / (len(pos) * len(neg)), abs_tol=1e-12)
    assert 0.5 <= r.balanced_accuracy <= 1.0
