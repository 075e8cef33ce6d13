"""The loss-threshold baseline (Yeom et al. 2018): members have a lower loss.

The membership score is minus the cross-entropy of the true label (or the
logit-scaled confidence); sweeping a threshold over it gives the ROC curve. No
shadow model is needed.

Example
-------
>>> import torch
>>> from veil.attacks.membership.threshold import threshold_scores
>>> p = torch.tensor([[0.99, 0.01], [0.6, 0.4]])
>>> threshold_scores(p, torch.tensor([0, 0])).argmax().item()
0
"""

from __future__ import annotations

import numpy as np
import torch

from veil.attacks.scores import cross_entropy, logit_confidence


def threshold_scores(probs: torch.Tensor, labels: torch.Tensor, signal: str = "loss") -> np.ndarray:
    """Membership scores of the threshold attack (higher = member).

    Parameters
    ----------
    probs: the target's probabilities ``(N, C)``.
    labels: true labels ``(N,)``.
    signal: ``"loss"`` (minus cross-entropy) or ``"confidence"`` (logit-scaled).
    """
    if signal == "loss":
        return (-cross_entropy(probs, labels)).numpy()
    if signal == "confidence":
        return logit_confidence(probs, labels).numpy()
    raise ValueError(f"signal must be 'loss' or 'confidence', got {signal!r}")
