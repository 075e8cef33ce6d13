"""The likelihood-ratio attack, LiRA (Carlini, Chien, Nasr, Song, Terzis, Tramer 2022).

For each example the attacker fits Gaussians to the logit-scaled confidence that the
shadow models trained *with* it ("in") and *without* it ("out") assign to it, then
scores the target's confidence by the likelihood ratio (online) or by how far it sits
above the "out" distribution alone (offline: no shadow model ever trains on the
candidate, so it can be used on examples arriving after the shadows were trained).

With augmentations (several queries per example, e.g. mirrored and shifted images)
each augmentation gets its own Gaussian and the log-likelihoods add up (a diagonal
multivariate Gaussian). With few shadow models a variance shared by all examples
("fixed variance") is more stable than per-example variances, as the paper notes; it
is the default.

Example
-------
>>> import numpy as np
>>> from veil.attacks.membership.lira import lira_online
>>> rng = np.random.default_rng(0)
>>> in_mask = np.tile([[True], [False]], (8, 50))            # 16 shadows, 50 examples
>>> shadow = np.where(in_mask, 3.0, 0.0) + rng.normal(size=(16, 50))
>>> target = np.r_[np.full(25, 3.0), np.zeros(25)]           # first 25 are members
>>> s = lira_online(target[:, None], shadow[..., None], in_mask)
>>> bool(s[:25].min() > s[25:].max())
True
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

_MIN_STD = 1e-6


def _validate(target: np.ndarray, shadow: np.ndarray, in_mask: np.ndarray) -> tuple:
    target = np.asarray(target, dtype=np.float64)
    shadow = np.asarray(shadow, dtype=np.float64)
    in_mask = np.asarray(in_mask, dtype=bool)
    if target.ndim == 1:
        target = target[:, None]
    if shadow.ndim == 2:
        shadow = shadow[..., None]
    k, n, a = shadow.shape
    if target.shape != (n, a) or in_mask.shape != (k, n):
        raise ValueError(
            f"shapes disagree: target {target.shape} (N, A), shadow {shadow.shape} (K, N, A), "
            f"in_mask {in_mask.shape} (K, N)"
        )
    if not (np.isfinite(target).all() and np.isfinite(shadow).all()):
        raise ValueError("confidences must be finite")
    return target, shadow, in_mask


def _fit(shadow: np.ndarray, mask: np.ndarray, fix_variance: bool, what: str):
    """Per-example mean and std over the shadows selected by ``mask`` (K, N)."""
    count = mask.sum(0)
    if (count == 0).any():
        raise ValueError(f"{int((count == 0).sum())} examples have no '{what}' shadow model")
    w = mask[..., None]
    mean = (shadow * w).sum(0) / count[:, None]
    resid2 = ((shadow - mean) ** 2) * w
    if fix_variance:
        std = np.sqrt(resid2.sum((0, 1)) / count.sum())[None, :]
        std = np.broadcast_to(std, mean.shape)
    else:
        if (count < 2).any():
            raise ValueError(f"per-example variance needs >= 2 '{what}' models per example")
        std = np.sqrt(resid2.sum(0) / (count[:, None] - 1))
    return mean, np.maximum(std, _MIN_STD)


def lira_online(target: np.ndarray, shadow: np.ndarray, in_mask: np.ndarray,
                fix_variance: bool = True) -> np.ndarray:
    """Online LiRA membership scores: ``log N(s; in) - log N(s; out)``, summed over augmentations.

    Parameters
    ----------
    target: ``(N,)`` or ``(N, A)`` logit-scaled confidences of the target model.
    shadow: ``(K, N)`` or ``(K, N, A)`` the same for each shadow model.
    in_mask: ``(K, N)`` which shadow trained on which example.
    fix_variance: one variance per augmentation shared by all examples (default).
    """
    target, shadow, in_mask = _validate(target, shadow, in_mask)
    mu_in, sd_in = _fit(shadow, in_mask, fix_variance, "in")
    mu_out, sd_out = _fit(shadow, ~in_mask, fix_variance, "out")
    ll = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
    return ll.sum(1)


def lira_offline(target: np.ndarray, shadow: np.ndarray, in_mask: np.ndarray,
                 fix_variance: bool = True) -> np.ndarray:
    """Offline LiRA: one-sided test against the "out" Gaussians only.

    The score is ``log Pr[Z < s]`` for ``Z ~ N(mu_out, sd_out^2)``, summed over
    augmentations: large when the target is more confident than models that never saw
    the example. Only the "out" entries of ``shadow`` are used.
    """
    target, shadow, in_mask = _validate(target, shadow, in_mask)
    mu_out, sd_out = _fit(shadow, ~in_mask, fix_variance, "out")
    return norm.logcdf(target, mu_out, sd_out).sum(1)
