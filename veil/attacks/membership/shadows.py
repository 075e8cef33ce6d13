"""Shadow models: fresh models trained by the attacker on random halves of a data pool.

Every example of the pool is a member of exactly half of the shadow models (the
balanced design of Carlini et al. 2022), so each example gets as many "in" as "out"
models. The shadow models are then queried on every pool example, once per
augmentation, through the same scores-only interface as the target.

Example
-------
>>> import numpy as np
>>> from veil.attacks.membership.shadows import balanced_membership
>>> m = balanced_membership(4, 10, np.random.default_rng(0))
>>> m.shape, m.sum(0).tolist() == [2] * 10
((4, 10), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from veil.attacks.scores import ScoreFn

TrainFn = Callable[[np.ndarray], torch.nn.Module]
"""A training recipe: ``train_fn(indices) -> model`` trains a fresh model on ``pool[indices]``."""

Augmentation = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The trivial augmentation: the query itself."""
    return x


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal mirror of an image batch ``(N, C, H, W)``."""
    return torch.flip(x, dims=(-1,))


def shift(dx: int, dy: int) -> Augmentation:
    """Translate an image batch by ``(dx, dy)`` pixels, filling with the border value."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        pad = max(abs(dx), abs(dy))
        if pad == 0:
            return x
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]

    apply.__name__ = f"shift({dx},{dy})"
    return apply


def balanced_membership(num_models: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(num_models, n)`` boolean matrix where each column has exactly half True.

    Raises
    ------
    ValueError: for fewer than 2 or an odd number of models (halves must be exact).
    """
    if num_models < 2 or num_models % 2:
        raise ValueError(f"need an even number (>= 2) of shadow models, got {num_models}")
    if n < 2:
        raise ValueError("the pool needs at least 2 examples")
    keys = rng.random((num_models, n))
    order = np.argsort(keys, axis=0)
    mask = np.zeros((num_models, n), dtype=bool)
    np.put_along_axis(mask, order[: num_models // 2], True, axis=0)
    return mask


def query(score_fn: ScoreFn, x: torch.Tensor,
          augmentations: Sequence[Augmentation] = (identity,)) -> torch.Tensor:
    """Probabilities for every augmentation of every example: ``(A, N, C)`` float64."""
    if not augmentations:
        raise ValueError("need at least one augmentation (use identity)")
    out = []
    for aug in augmentations:
        p = torch.as_tensor(score_fn(aug(x)), dtype=torch.float64)
        if p.dim() != 2 or len(p) != len(x):
            raise ValueError(f"score function returned shape {tuple(p.shape)} for {len(x)} inputs")
        out.append(p)
    return torch.stack(out)


@dataclass
class ShadowSet:
    """Shadow models' membership and their scores on the pool.

    Attributes
    ----------
    in_mask: ``(K, N)`` bool, ``in_mask[k, i]`` iff shadow ``k`` trained on example ``i``.
    probs: ``(K, A, N, C)`` float64 probabilities, per shadow and augmentation.
    """

    in_mask: np.ndarray
    probs: torch.Tensor

    def __post_init__(self) -> None:
        k, n = self.in_mask.shape
        if self.probs.dim() != 4 or self.probs.shape[0] != k or self.probs.shape[2] != n:
            raise ValueError(f"probs {tuple(self.probs.shape)} do not match in_mask {(k, n)}")


def train_shadows(
    train_fn: TrainFn,
    x: torch.Tensor,
    num_models: int,
    oracle: Callable[[torch.nn.Module], ScoreFn],
    augmentations: Sequence[Augmentation] = (identity,),
    rng: np.random.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> ShadowSet:
    """Train ``num_models`` shadow models on balanced random halves of the pool ``x``.

    Parameters
    ----------
    train_fn: the training recipe, ``train_fn(indices) -> model``.
    x: the pool's inputs (indices passed to ``train_fn`` refer to it).
    oracle: turns a trained model into a score function (e.g. :class:`ScoreOracle`).
    progress: called with 1 after each shadow model.
    """
    rng = rng if rng is not None else np.random.default_rng()
    mask = balanced_membership(num_models, len(x), rng)
    probs = []
    for k in range(num_models):
        model = train_fn(np.flatnonzero(mask[k]))
        probs.append(query(oracle(model), x, augmentations))
        if progress:
            progress(1)
    return ShadowSet(mask, torch.stack(probs))
