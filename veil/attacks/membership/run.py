"""Run every membership-inference attack against one target and evaluate it.

Given black-box access to a target (a score function), the pool of candidate
examples with the ground truth of which ones the target trained on, and a training
recipe that imitates the target's, :func:`run_attacks` trains the shadow models once
and evaluates the threshold baseline, the shadow-model attack of Shokri et al. and
LiRA (online and offline) on the same shadows.

Example
-------
>>> from veil.attacks.membership import run_attacks          # doctest: +SKIP
>>> report = run_attacks(oracle, x, y, members, train_fn, num_shadows=16)  # doctest: +SKIP
>>> report.results["lira"].tpr_at_fpr[0.01]                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from veil.attacks.membership.lira import lira_offline, lira_online
from veil.attacks.membership.shadow import ShadowAttack
from veil.attacks.membership.shadows import (
    Augmentation,
    ShadowSet,
    TrainFn,
    identity,
    query,
    train_shadows,
)
from veil.attacks.membership.threshold import threshold_scores
from veil.attacks.metrics import DEFAULT_FPRS, MembershipResult, evaluate_scores
from veil.attacks.scores import ScoreFn, ScoreOracle, logit_confidence

ATTACKS = ("threshold", "shadow", "lira", "lira_offline")


@dataclass
class MembershipReport:
    """Results of all attacks on one target.

    Attributes
    ----------
    results: ``{attack name: MembershipResult}``.
    scores: ``{attack name: per-example membership scores}``.
    seconds: ``{"shadows": training time, attack name: scoring time}``.
    shadows: the shadow models' membership and scores (pass them to another call of
        :func:`run_attacks` to attack a second target with the same recipe).
    """

    results: dict[str, MembershipResult]
    scores: dict[str, np.ndarray] = field(repr=False)
    seconds: dict[str, float]
    shadows: ShadowSet = field(repr=False)

    def to_dict(self, curve: bool = False) -> dict:
        """``{"attacks": {name: metrics}, "seconds": {...}}``."""
        return {"attacks": {k: v.to_dict(curve) for k, v in self.results.items()},
                "seconds": self.seconds}


def _confidences(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Logit-scaled confidence for ``(..., A, N, C)`` probabilities -> ``(..., N, A)``."""
    lead = probs.shape[:-2]
    n, c = probs.shape[-2:]
    flat = probs.reshape(-1, n, c)
    conf = torch.stack([logit_confidence(p, labels) for p in flat])
    return conf.reshape(*lead, n).movedim(-2, -1).numpy() if lead else conf[0].numpy()


def run_attacks(
    target: ScoreFn,
    x: torch.Tensor,
    y: torch.Tensor,
    members: np.ndarray,
    train_fn: TrainFn,
    num_shadows: int = 16,
    augmentations: Sequence[Augmentation] = (identity,),
    oracle: Callable[[torch.nn.Module], ScoreFn] = ScoreOracle,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    shadows: ShadowSet | None = None,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> MembershipReport:
    """Attack ``target`` on the pool ``(x, y)`` and score the attacks against ``members``.

    Parameters
    ----------
    target: scores-only access to the target, ``x -> probabilities``.
    x, y: the pool of candidate examples and their labels.
    members: ``(N,)`` booleans, the ground truth (only used for evaluation).
    train_fn: the attacker's training recipe, ``train_fn(indices into x) -> model``.
    num_shadows: shadow models to train (even; 16 in the reference experiment).
    augmentations: queries per example for LiRA (first one must be the plain input).
    oracle: turns a shadow model into a score function.
    shadows: reuse already-trained shadows (then ``train_fn`` is not called).
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    members = np.asarray(members, dtype=bool)
    if len(x) != len(y) or members.shape != (len(x),):
        raise ValueError(f"pool has {len(x)} inputs, {len(y)} labels, {members.shape} members")
    seconds: dict[str, float] = {}
    if shadows is None:
        t0 = time.perf_counter()
        shadows = train_shadows(train_fn, x, num_shadows, oracle, augmentations,
                                np.random.default_rng(seed), progress)
        seconds["shadows"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    target_probs = query(target, x, augmentations)                  # (A, N, C)
    seconds["query_target"] = time.perf_counter() - t0

    scores: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    scores["threshold"] = threshold_scores(target_probs[0], y)
    seconds["threshold"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    attack = ShadowAttack().fit(shadows.probs[:, 0], y, shadows.in_mask)
    scores["shadow"] = attack.score(target_probs[0], y)
    seconds["shadow"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tconf = _confidences(target_probs, y)                           # (N, A)
    sconf = _confidences(shadows.probs, y)                          # (K, N, A)
    scores["lira"] = lira_online(tconf, sconf, shadows.in_mask)
    seconds["lira"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores["lira_offline"] = lira_offline(tconf, sconf, shadows.in_mask)
    seconds["lira_offline"] = time.perf_counter() - t0

    results = {name: evaluate_scores(s, members, fprs) for name, s in scores.items()}
    return MembershipReport(results, scores, seconds, shadows)
