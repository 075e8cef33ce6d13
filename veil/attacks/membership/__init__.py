"""Membership inference: threshold, shadow models, LiRA (Carlini et al.)."""

from veil.attacks.membership.lira import lira_offline, lira_online
from veil.attacks.membership.run import ATTACKS, MembershipReport, run_attacks
from veil.attacks.membership.shadow import ShadowAttack
from veil.attacks.membership.shadows import (
    ShadowSet,
    balanced_membership,
    hflip,
    identity,
    query,
    shift,
    train_shadows,
)
from veil.attacks.membership.threshold import threshold_scores

__all__ = [
    "ATTACKS", "MembershipReport", "ShadowAttack", "ShadowSet", "balanced_membership", "hflip",
    "identity", "lira_offline", "lira_online", "query", "run_attacks", "shift",
    "threshold_scores", "train_shadows",
]
