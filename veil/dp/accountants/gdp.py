"""Gaussian DP accountant (Dong, Roth, Su 2019; Bu et al. 2020), as Opacus' ``"gdp"``.

K steps of the Poisson-subsampled Gaussian are approximated, by the central limit
theorem, by one Gaussian mechanism with ``μ = q·sqrt(K·(e^{1/σ²} − 1))`` (phases add in
μ²). This is an **approximation, not an upper bound**: it can under-estimate ε when
q·sqrt(K) is not small; Opacus offers it and so does Veil, for comparison only
(prefer ``"pld"`` or ``"rdp"``).

Example
-------
>>> acc = GaussianAccountant()
>>> acc.step(noise_multiplier=1.1, sample_rate=256 / 60000, steps=2340)
>>> round(acc.get_epsilon(1e-5), 2)
0.86
"""

from __future__ import annotations

import math

from scipy import optimize, special

from veil.dp.accountants.base import Accountant, check_delta


def _delta(eps: float, mu: float) -> float:
    """δ(ε) of μ-GDP: Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2)."""
    return float(special.ndtr(-eps / mu + mu / 2)
                 - math.exp(eps) * special.ndtr(-eps / mu - mu / 2))


class GaussianAccountant(Accountant):
    """μ-GDP by the central limit theorem (an approximation; see the module note)."""

    name = "gdp"

    def mu(self) -> float:
        return math.sqrt(sum(q * q * k * math.expm1(sigma**-2)
                             for sigma, q, k in self.history if q > 0 and k > 0))

    def get_epsilon(self, delta: float) -> float:
        check_delta(delta)
        if self._noiseless():
            return math.inf
        mu = self.mu()
        if mu == 0 or _delta(0.0, mu) <= delta:
            return 0.0
        hi = 1.0
        while _delta(hi, mu) > delta:
            hi *= 2
            if hi > 1e6:
                return math.inf
        return float(optimize.brentq(lambda e: _delta(e, mu) - delta, 0.0, hi, xtol=1e-12))
