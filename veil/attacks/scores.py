"""Black-box access to a classifier: a callable from inputs to class probabilities.

Every attack in :mod:`veil.attacks` that does not need gradients talks to the target
only through a *score oracle*: ``x -> probabilities``. :class:`ScoreOracle` wraps a
PyTorch classifier into such a callable (batched, no gradients, float64 output) and
exposes nothing else; any other callable with the same contract (a remote API, a
rounded-confidence service) works the same.

The membership signals used by the attacks are computed here from probabilities:
the cross-entropy loss and the logit-scaled confidence of Carlini et al. (2022),
``log p_y - log sum_{j != y} p_j``, summed over the other classes rather than taken
as ``1 - p_y`` so that it stays finite when ``p_y`` rounds to one.

Example
-------
>>> import torch
>>> from veil.attacks.scores import ScoreOracle, logit_confidence
>>> oracle = ScoreOracle(torch.nn.Linear(4, 3))
>>> p = oracle(torch.zeros(5, 4))
>>> p.shape, logit_confidence(p, torch.zeros(5, dtype=torch.long)).shape
(torch.Size([5, 3]), torch.Size([5]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""``x -> probabilities`` of shape ``(N, classes)``."""

_TINY = 1e-300


class ScoreOracle:
    """Scores-only view of a classifier: ``oracle(x)`` returns softmax probabilities.

    Parameters
    ----------
    model:
        Any module mapping a batch to logits.
    batch_size:
        Queries are evaluated in chunks of this size.
    round_to:
        If set, round every probability to this many decimals (the countermeasure of
        Fredrikson et al. 2015 against black-box model inversion).
    """

    def __init__(self, model: torch.nn.Module, batch_size: int = 1024,
                 round_to: int | None = None) -> None:
        self._model = model
        self._batch = int(batch_size)
        self._round = round_to
        self.queries = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        was_training = self._model.training
        self._model.eval()
        try:
            params = list(self._model.parameters())
            dtype = params[0].dtype if params else x.dtype
            out = [
                torch.softmax(self._model(x[i:i + self._batch].to(dtype)).double(), dim=1)
                for i in range(0, len(x), self._batch)
            ]
        finally:
            self._model.train(was_training)
        self.queries += len(x)
        p = torch.cat(out) if out else torch.empty(0, 0, dtype=torch.float64)
        if self._round is not None:
            p = torch.round(p, decimals=self._round)
        return p


def _check_probs(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs, dtype=torch.float64)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"need probabilities (N, C) and labels (N,), got "
                         f"{tuple(probs.shape)} and {tuple(labels.shape)}")
    if not torch.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or inf")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError("labels out of range for the number of classes")
    return probs, labels


def logit_confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's membership signal ``log(p_y / (1 - p_y))`` computed stably (float64)."""
    probs, labels = _check_probs(probs, labels)
    py = probs.gather(1, labels[:, None]).squeeze(1)
    others = probs.scatter(1, labels[:, None], 0.0).sum(1)
    return torch.log(py.clamp_min(_TINY)) - torch.log(others.clamp_min(_TINY))


def cross_entropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy loss ``-log p_y`` (float64)."""
    probs, labels = _check_probs(probs, labels)
    return -torch.log(probs.gather(1, labels[:, None]).squeeze(1).clamp_min(_TINY))
