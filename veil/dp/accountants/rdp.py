"""Rényi DP of the Poisson-subsampled Gaussian mechanism.

The RDP of order α is computed exactly for integer α and by the convergent series
of Mironov, Talwar and Zhang (2019, §3.3) for fractional α, in log space. The
conversion to (ε, δ) is Balle et al. (2020, Thm. 21), the one used by Opacus and
``dp-accounting``:  ε = RDP(α) + log((α-1)/α) - (log δ + log α)/(α - 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from veil.dp.accountants.base import Accountant, check_delta, check_mechanism

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
)


def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    if hi == -math.inf:
        return -math.inf
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b."""
    if b > a:
        raise ValueError("log of a negative number")
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    try:
        return math.log(math.expm1(a - b)) + b
    except OverflowError:
        return a


def _log_erfc(x: float) -> float:
    return math.log(2.0) + float(special.log_ndtr(-x * math.sqrt(2.0)))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for i in range(alpha + 1):
        log_coef = (
            math.log(special.binom(alpha, i)) + i * math.log(q) + (alpha - i) * math.log1p(-q)
        )
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    # Two series, for the mass left and right of z0 (where the two Gaussians cross).
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = special.binom(alpha, i)
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
    return _log_add(log_a0, log_a1)


def _rdp_one(q: float, sigma: float, alpha: float) -> float:
    if q == 0:
        return 0.0
    if q == 1.0:
        return alpha / (2 * sigma**2)
    if math.isinf(alpha):
        return math.inf
    if float(alpha).is_integer():
        return _log_a_int(q, sigma, int(alpha)) / (alpha - 1)
    return _log_a_frac(q, sigma, alpha) / (alpha - 1)


def compute_rdp(
    noise_multiplier: float, sample_rate: float, steps: int, orders: Sequence[float]
) -> np.ndarray:
    """RDP of ``steps`` compositions of the subsampled Gaussian, at each order.

    Example
    -------
    >>> float(compute_rdp(1.0, 1.0, 1, [2.0])[0])   # plain Gaussian: α / (2σ²)
    1.0
    """
    check_mechanism(noise_multiplier, sample_rate, steps)
    if any(a <= 1 for a in orders):
        raise ValueError("RDP orders must be > 1")
    return np.array([_rdp_one(sample_rate, noise_multiplier, a) for a in orders]) * steps


def rdp_to_epsilon(
    rdp: np.ndarray, orders: Sequence[float], delta: float
) -> tuple[float, float]:
    """Best (ε, α) over the orders for the given RDP curve (Balle et al. 2020)."""
    check_delta(delta)
    orders_arr = np.asarray(orders, dtype=np.float64)
    rdp = np.asarray(rdp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = (
            rdp
            + np.log1p(-1.0 / orders_arr)
            - (math.log(delta) + np.log(orders_arr)) / (orders_arr - 1)
        )
    # Where δ² > 1 - e^{-RDP}... the KL bound already gives ε = 0 (as dp-accounting does).
    eps = np.where(delta**2 + np.expm1(-rdp) > 0, 0.0, eps)
    eps = np.where(np.isnan(eps), np.inf, eps)
    idx = int(np.argmin(eps))
    return max(0.0, float(eps[idx])), float(orders_arr[idx])


class RDPAccountant(Accountant):
    """Rényi-DP accountant.

    Example
    -------
    >>> acc = RDPAccountant()
    >>> acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    >>> 1.0 < acc.get_epsilon(1e-5) < 3.0
    True
    """

    name = "rdp"

    def __init__(self, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        super().__init__()
        self.orders = tuple(float(a) for a in orders)
        self._cache: dict[tuple[float, float], np.ndarray] = {}

    def _rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for sigma, q, k in self.history:
            if sigma == 0:  # only q == 0 (never sampled) gets here: no privacy cost
                continue
            key = (sigma, q)
            if key not in self._cache:
                self._cache[key] = compute_rdp(sigma, q, 1, self.orders)
            total = total + k * self._cache[key]
        return total

    def get_epsilon(self, delta: float) -> float:
        return self.get_epsilon_and_order(delta)[0]

    def get_privacy_spent(self, *, delta: float, alphas=None) -> tuple[float, float]:
        """``(ε, best order α)`` over ``alphas`` (default: this accountant's orders), as
        in Opacus."""
        if alphas is None:
            return self.get_epsilon_and_order(delta)
        other = RDPAccountant(orders=alphas)
        other.history = list(self.history)
        return other.get_epsilon_and_order(delta)

    def get_epsilon_and_order(self, delta: float) -> tuple[float, float]:
        """(ε, best order α)."""
        if self._noiseless():
            check_delta(delta)
            return math.inf, math.nan
        return rdp_to_epsilon(self._rdp(), self.orders, delta)
