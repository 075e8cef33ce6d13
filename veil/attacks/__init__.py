"""Privacy attacks that measure what a model or an update leaks.

* :mod:`veil.attacks.membership` — membership inference: loss threshold, shadow models
  with per-class attack models (Shokri et al. 2017), LiRA online/offline (Carlini et al. 2022).
* :mod:`veil.attacks.inversion` — model inversion (Fredrikson et al. 2015), white and black box.
* :mod:`veil.attacks.gradient_inversion` — DLG and Inverting Gradients on FedSGD/FedAvg updates.
* :mod:`veil.attacks.metrics` — ROC, AUC, balanced accuracy, TPR at low FPR.
* :mod:`veil.attacks.scores` — scores-only (black-box) access to a classifier.

Experiment drivers (reference targets and their training, DP-SGD retraining, the
experiments behind ``veil attack`` and the bench, plots and tables) live above the
attacks, in :mod:`veil.audit`.
"""

from veil.attacks.metrics import MembershipResult, evaluate_scores
from veil.attacks.scores import ScoreOracle, cross_entropy, logit_confidence

__all__ = ["MembershipResult", "ScoreOracle", "cross_entropy", "evaluate_scores",
           "logit_confidence"]
