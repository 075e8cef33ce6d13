"""Laplace and Gaussian mechanisms, and DP statistics (count, sum, mean, histogram).

Real values are released on a grid of step ``granularity`` (a power of two by
default, so grid points are exact doubles): the query value is rounded to the grid,
exact integer noise (:mod:`veil.dp.samplers`) is added in grid units, and the result
is scaled back. Rounding may move neighbouring values further apart by up to one grid
step, so the sensitivity in grid units is ``ceil(Δ / granularity)``; this is what the
noise is calibrated to. The output can only take grid values, whatever the input, so
Mironov's floating-point attack has nothing to exploit.

- Laplace: discrete Laplace of scale ``ceil(Δ/g)/ε`` gives ε-DP.
- Gaussian: discrete Gaussian of variance σ² gives ½(Δ/σ)²-zCDP (Canonne et al. 2020),
  hence (ε, δ)-DP with ε = ρ + 2√(ρ log(1/δ)); σ is calibrated from (ε, δ) that way.

Example
-------
>>> import numpy as np
>>> ages = np.array([34, 45, 29, 61, 50])
>>> m = dp_mean(ages, lower=18, upper=90, epsilon=1.0)
>>> 0 <= m <= 90
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from veil.csprng import CSPRNG, default_generator
from veil.dp.budget import PrivacyBudget
from veil.dp.samplers import (
    discrete_gaussian,
    discrete_laplace,
    rational_at_least,
    rational_at_most,
)

DEFAULT_GRANULARITY = 2.0**-10


def _finite(values, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or inf")
    return arr


def _check_eps(epsilon: float) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")


def _check_granularity(g: float) -> None:
    if not (g > 0 and math.isfinite(g)):
        raise ValueError("granularity must be positive")


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """σ such that the Gaussian mechanism (via zCDP) is (ε, δ)-DP.

    Example
    -------
    >>> round(gaussian_sigma(1.0, 1.0, 1e-5), 3)
    4.901
    """
    _check_eps(epsilon)
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    log_d = math.log(1 / delta)
    rho = (math.sqrt(log_d + epsilon) - math.sqrt(log_d)) ** 2
    return sensitivity / math.sqrt(2 * rho)


class LaplaceMechanism:
    """ε-DP release of real values with sensitivity Δ (L1), via discrete Laplace noise.

    Example
    -------
    >>> mech = LaplaceMechanism(epsilon=0.5, sensitivity=1.0, granularity=1.0)
    >>> float(mech.randomise(10.0)) % 1.0
    0.0
    """

    def __init__(self, epsilon: float, sensitivity: float, granularity: float =
                 DEFAULT_GRANULARITY, generator: CSPRNG | None = None) -> None:
        _check_eps(epsilon)
        _check_granularity(granularity)
        if not (sensitivity > 0 and math.isfinite(sensitivity)):
            raise ValueError("sensitivity must be positive")
        self.epsilon, self.sensitivity, self.granularity = epsilon, sensitivity, granularity
        self.sensitivity_units = math.ceil(sensitivity / granularity - 1e-12)
        # scale in grid units, rounded UP (ε rounded down): never less noise than asked.
        self.scale = self.sensitivity_units / rational_at_most(epsilon)
        self.generator = generator or default_generator()

    @property
    def std(self) -> float:
        """Standard deviation of the noise (in the value's units)."""
        a = math.exp(-1 / float(self.scale))
        return math.sqrt(2 * a) / (1 - a) * self.granularity

    def randomise(self, value):
        """Noisy value(s), on the grid."""
        arr = _finite(value, "value")
        ints = np.floor(arr / self.granularity + 0.5).astype(np.int64)
        noise = discrete_laplace(self.scale, ints.size, self.generator).reshape(ints.shape)
        out = (ints + noise) * self.granularity
        return out if out.shape else float(out)


class GaussianMechanism:
    """(ε, δ)-DP release of real values with L2 sensitivity Δ, via discrete Gaussian noise.

    Example
    -------
    >>> mech = GaussianMechanism(epsilon=1.0, delta=1e-5, sensitivity=1.0)
    >>> round(mech.sigma, 2)
    4.9
    """

    def __init__(self, epsilon: float, delta: float, sensitivity: float,
                 granularity: float = DEFAULT_GRANULARITY,
                 generator: CSPRNG | None = None) -> None:
        _check_granularity(granularity)
        if not (sensitivity > 0 and math.isfinite(sensitivity)):
            raise ValueError("sensitivity must be positive")
        self.epsilon, self.delta, self.granularity = epsilon, delta, granularity
        self.sensitivity = sensitivity
        units = math.ceil(sensitivity / granularity - 1e-12)
        # Calibrate in grid units with the rounded-up sensitivity, round σ² up.
        sigma_units = gaussian_sigma(units, epsilon, delta)
        denominator = 1000
        while True:
            self.sigma2_units = rational_at_least(sigma_units**2, denominator)
            t = math.isqrt(self.sigma2_units.numerator // self.sigma2_units.denominator) + 1
            if 2 * self.sigma2_units.numerator * self.sigma2_units.denominator * t * t < 2**55:
                break
            if denominator == 1:
                raise ValueError("σ too large in grid units: use a coarser granularity")
            denominator //= 10
        self.sigma = math.sqrt(self.sigma2_units) * granularity
        self.generator = generator or default_generator()

    def randomise(self, value):
        arr = _finite(value, "value")
        ints = np.floor(arr / self.granularity + 0.5).astype(np.int64)
        noise = discrete_gaussian(self.sigma2_units, ints.size, self.generator)
        out = (ints + noise.reshape(ints.shape)) * self.granularity
        return out if out.shape else float(out)


def _mechanism(kind: str, epsilon: float, delta: float, sensitivity: float, granularity: float,
               generator: CSPRNG | None):
    if kind == "laplace":
        return LaplaceMechanism(epsilon, sensitivity, granularity, generator)
    if kind == "gaussian":
        return GaussianMechanism(epsilon, delta, sensitivity, granularity, generator)
    raise ValueError(f"mechanism must be 'laplace' or 'gaussian', got {kind!r}")


def _spend(budget: PrivacyBudget | None, epsilon: float, delta: float, label: str) -> None:
    if budget is not None:
        budget.spend(epsilon, delta if delta else 0.0, label)


def _clamp(values, lower: float, upper: float) -> np.ndarray:
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise ValueError(f"need finite bounds with lower <= upper, got [{lower}, {upper}]")
    return np.clip(_finite(values).ravel(), lower, upper)


def dp_count(values, epsilon: float, *, mechanism: str = "laplace", delta: float = 0.0,
             budget: PrivacyBudget | None = None, generator: CSPRNG | None = None) -> int:
    """Noisy number of records (sensitivity 1: one person added or removed).

    Example
    -------
    >>> isinstance(dp_count([1, 2, 3], epsilon=1.0), int)
    True
    """
    mech = _mechanism(mechanism, epsilon, delta, 1.0, 1.0, generator)
    _spend(budget, epsilon, delta, "count")
    return int(mech.randomise(float(len(_finite(values).ravel()))))


def dp_sum(values, lower: float, upper: float, epsilon: float, *, mechanism: str = "laplace",
           delta: float = 0.0, granularity: float = DEFAULT_GRANULARITY,
           budget: PrivacyBudget | None = None, generator: CSPRNG | None = None) -> float:
    """Noisy sum of values clamped to ``[lower, upper]`` (sensitivity max(|lower|, |upper|)).

    Example
    -------
    >>> s = dp_sum([1.0, 2.0, 100.0], lower=0, upper=10, epsilon=1.0)   # 100 counts as 10
    >>> isinstance(s, float)
    True
    """
    x = _clamp(values, lower, upper)
    sens = max(abs(lower), abs(upper)) or granularity
    mech = _mechanism(mechanism, epsilon, delta, sens, granularity, generator)
    _spend(budget, epsilon, delta, "sum")
    return float(mech.randomise(float(x.sum())))


def dp_mean(values, lower: float, upper: float, epsilon: float, *, mechanism: str = "laplace",
            delta: float = 0.0, granularity: float = DEFAULT_GRANULARITY,
            budget: PrivacyBudget | None = None, generator: CSPRNG | None = None) -> float:
    """Noisy mean: a noisy sum of values shifted to be centred on the interval, over a
    noisy count, each with half the budget; the result is clamped to ``[lower, upper]``.

    Centring halves the sum's sensitivity to ``(upper - lower) / 2``.
    """
    x = _clamp(values, lower, upper)
    mid, half = (lower + upper) / 2, (upper - lower) / 2
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
    gen = generator or default_generator()
    e2, d2 = epsilon / 2, delta / 2
    # Build (and so validate) both mechanisms before any budget is spent.
    sum_mech = _mechanism(mechanism, e2, d2, half or granularity, granularity, gen)
    count_mech = _mechanism(mechanism, e2, d2, 1.0, 1.0, gen)
    _spend(budget, epsilon, delta, "mean")
    s = sum_mech.randomise(float((x - mid).sum()))
    n = count_mech.randomise(float(x.size))
    if n < 1:
        return float(mid)
    return float(np.clip(mid + s / n, lower, upper))


def dp_histogram(values, bins: int | Sequence[float], epsilon: float, *,
                 range: tuple[float, float] | None = None, mechanism: str = "laplace",
                 delta: float = 0.0, budget: PrivacyBudget | None = None,
                 generator: CSPRNG | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noisy bin counts (each record falls in one bin: L1 sensitivity 1, L2 sensitivity 1).

    Bin edges must be data-independent: give explicit edges, or ``bins`` with ``range``.
    Values outside the edges are clamped into the first/last bin. Negative noisy counts
    are kept (clipping at 0 would bias sums); clip them yourself for display.

    Example
    -------
    >>> counts, edges = dp_histogram([1, 2, 2, 3], bins=3, range=(0.5, 3.5), epsilon=1.0)
    >>> counts.shape, edges.shape
    ((3,), (4,))
    """
    if isinstance(bins, int):
        if range is None:
            raise ValueError("give range=(lo, hi) with an integer number of bins: bin edges "
                             "computed from the data would leak it")
        edges = np.linspace(range[0], range[1], bins + 1)
    else:
        edges = _finite(bins, "bin edges")
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a strictly increasing 1-d sequence")
    x = _clamp(values, edges[0], edges[-1])
    counts, _ = np.histogram(x, bins=edges)
    mech = _mechanism(mechanism, epsilon, delta, 1.0, 1.0, generator)
    _spend(budget, epsilon, delta, "histogram")
    return np.asarray(mech.randomise(counts.astype(np.float64))).astype(np.int64), edges
