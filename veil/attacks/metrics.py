"""Membership-inference metrics as the field reports them (Carlini et al. 2022).

An attack outputs one *membership score* per example (higher means "more likely a
member"). The ROC curve sweeps every threshold; from it come the AUC, the balanced
accuracy (best accuracy over thresholds on a balanced set) and, the figures that
matter for privacy, the true-positive rate at a low false-positive rate.

A TPR at FPR ``f`` is only meaningful when at least one false positive is allowed,
i.e. when there are at least ``1/f`` non-members; below that the rate is reported as
``None`` together with the reason, never as a number.

Example
-------
>>> import numpy as np
>>> from veil.attacks.metrics import evaluate_scores
>>> scores = np.r_[np.ones(2000), np.zeros(2000)]
>>> members = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
>>> r = evaluate_scores(scores, members)
>>> r.auc, r.tpr_at_fpr[0.001]
(1.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01)


def _fpr_key(fpr: float) -> str:
    return f"tpr_at_{100 * fpr:g}%_fpr"


@dataclass
class MembershipResult:
    """ROC summary of one membership-inference attack on one target.

    Attributes
    ----------
    auc, balanced_accuracy:
        Area under the ROC curve; best ``(TPR + TNR) / 2`` over thresholds.
    tpr_at_fpr:
        ``{fpr: tpr or None}``; ``None`` where there are too few non-members.
    reasons:
        ``{fpr: why}`` for every ``None`` in ``tpr_at_fpr``.
    fpr, tpr:
        The full ROC curve (for plots).
    n_members, n_nonmembers:
        How many examples of each kind were scored.
    """

    auc: float
    balanced_accuracy: float
    tpr_at_fpr: dict[float, float | None]
    reasons: dict[float, str]
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    n_members: int = 0
    n_nonmembers: int = 0

    def to_dict(self, curve: bool = False) -> dict:
        """JSON-ready summary: keys ``auc``, ``balanced_accuracy``, ``tpr_at_0.1%_fpr``, ..."""
        out: dict = {"auc": self.auc, "balanced_accuracy": self.balanced_accuracy}
        for f, t in self.tpr_at_fpr.items():
            out[_fpr_key(f)] = t
        if self.reasons:
            out["notes"] = {_fpr_key(f): r for f, r in self.reasons.items()}
        out["n_members"], out["n_nonmembers"] = self.n_members, self.n_nonmembers
        if curve:
            out["roc"] = {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist()}
        return out


def _check(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    members = np.asarray(members).ravel()
    if members.dtype != bool:
        if not np.isin(members, (0, 1)).all():
            raise ValueError("members must be booleans or 0/1")
        members = members.astype(bool)
    if scores.shape != members.shape:
        raise ValueError(f"{scores.size} scores for {members.size} membership labels")
    if np.isnan(scores).any():
        raise ValueError("membership scores contain NaN")
    if members.all() or not members.any():
        raise ValueError("need both members and non-members to evaluate an attack")
    return scores, members


def tpr_at_fpr(
    fpr: np.ndarray, tpr: np.ndarray, target: float, n_nonmembers: int
) -> tuple[float | None, str | None]:
    """Highest TPR whose FPR does not exceed ``target`` on a ROC curve.

    Returns ``(None, reason)`` when ``n_nonmembers * target < 1``: with fewer than
    ``1/target`` non-members not even one false positive fits under the rate, so any
    figure would be an artefact of the sample size.
    """
    if not 0 < target < 1:
        raise ValueError(f"target FPR must be in (0, 1), got {target}")
    if n_nonmembers * target < 1:
        need = math.ceil(1 / target)
        return None, (
            f"{n_nonmembers} non-members cannot estimate a {100 * target:g}% FPR "
            f"(needs at least {need})"
        )
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()), None


def evaluate_scores(
    scores: np.ndarray, members: np.ndarray, fprs: tuple[float, ...] = DEFAULT_FPRS
) -> MembershipResult:
    """Evaluate membership scores against the ground truth.

    Parameters
    ----------
    scores:
        One score per example; higher means "member". Ties and ``±inf`` are fine.
    members:
        Booleans (or 0/1): which examples were in the target's training set.
    fprs:
        False-positive rates at which to report the TPR.

    Example
    -------
    >>> r = evaluate_scores(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0]))
    >>> r.auc, r.balanced_accuracy, r.tpr_at_fpr[0.01]
    (1.0, 1.0, None)
    """
    scores, members = _check(scores, members)
    # roc_curve cannot take infinities; a monotone squash keeps the order and ties.
    finite = np.arctan(scores) if np.isinf(scores).any() else scores
    fpr, tpr, _ = roc_curve(members, finite, drop_intermediate=False)
    auc = float(roc_auc_score(members, finite))
    n_neg = int((~members).sum())
    rates: dict[float, float | None] = {}
    reasons: dict[float, str] = {}
    for f in fprs:
        rates[f], why = tpr_at_fpr(fpr, tpr, f, n_neg)
        if why:
            reasons[f] = why
    balanced = float(np.max(0.5 * (tpr + 1 - fpr)))
    return MembershipResult(auc, balanced, rates, reasons, fpr, tpr, int(members.sum()), n_neg)
