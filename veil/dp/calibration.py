"""Find the noise multiplier σ that meets a target (ε, δ) for a given training length."""

from __future__ import annotations

import math

from veil.dp.accountants import make_accountant


def epsilon_for(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float,
    accountant: str = "rdp",
) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps.

    Example
    -------
    >>> round(epsilon_for(1.1, 256 / 60000, 2340, 1e-5), 2)
    1.1
    """
    acc = make_accountant(accountant)
    acc.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return acc.get_epsilon(delta)


def noise_multiplier_for(
    target_epsilon: float, target_delta: float, sample_rate: float, steps: int,
    accountant: str = "rdp", tolerance: float = 0.01,
) -> float:
    """Smallest σ (up to ``tolerance`` in ε) whose ε is at most ``target_epsilon``.

    Bisection on log σ; the returned σ always satisfies the target (the upper end of
    the final bracket).

    Example
    -------
    >>> s = noise_multiplier_for(1.0, 1e-5, 256 / 60000, 2340)
    >>> epsilon_for(s, 256 / 60000, 2340, 1e-5) <= 1.0
    True
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"target_epsilon must be a positive number, got {target_epsilon}")
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if accountant.lower() != "rdp":
        # Tight accountants are slow at tiny σ; RDP is an upper bound on their ε, so its σ
        # brackets theirs from above.
        hi = noise_multiplier_for(target_epsilon, target_delta, sample_rate, steps, "rdp",
                                  tolerance)
    else:
        hi = 1.0
        while epsilon_for(hi, sample_rate, steps, target_delta, accountant) > target_epsilon:
            hi *= 2
            if hi > 1e4:
                raise ValueError(
                    f"no σ <= 1e4 reaches ε={target_epsilon} with q={sample_rate}, {steps} steps"
                )
    # Walk down until ε exceeds the target (or σ is negligible), then bisect.
    lo = hi / 2
    while epsilon_for(lo, sample_rate, steps, target_delta, accountant) <= target_epsilon:
        hi, lo = lo, lo / 2
        if lo < 1e-3:
            return hi
    while True:
        mid = math.sqrt(lo * hi)
        eps = epsilon_for(mid, sample_rate, steps, target_delta, accountant)
        if eps > target_epsilon:
            lo = mid
        else:
            hi = mid
            if target_epsilon - eps < tolerance * target_epsilon:
                return hi
        if hi / lo < 1 + 1e-6:
            return hi
