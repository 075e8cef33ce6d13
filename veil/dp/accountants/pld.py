"""Privacy loss distributions (PLD) of the Poisson-subsampled Gaussian, composed by FFT.

For each neighbouring direction ("remove": P is the mixture (1-q)N(0,σ²) + qN(1,σ²)
and Q = N(0,σ²); "add": the roles swapped) the privacy loss L = log(P(x)/Q(x)) is
monotone in x, so the hockey-stick curve δ(ε) = P(L > ε) - e^ε Q(L > ε) has a closed
form. We discretise it on the grid ε_i = i·h with the *connect-the-dots* rule
(Doroshenko et al. 2022): the discrete PLD whose δ(ε), as a function of e^ε, is the
piecewise-linear interpolation of the true curve at the grid points. δ is convex in
e^ε, so this dominates the true PLD (a certified upper bound) while staying tight.
The mass beyond the grid goes to +∞ (counted in δ) and mass below it is moved up to
the lowest grid point; both are pessimistic.

Composition is the convolution of the loss PMFs, done by repeated squaring with FFTs;
after each product the tails below ``TAIL`` are folded (up-tail to +∞, low tail up to
the new lowest point), again pessimistically. ε(δ) is then solved exactly between
grid points. Different (σ, q) phases compose by convolving their PLDs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal, special

from veil.dp.accountants.base import Accountant, check_delta

DEFAULT_INTERVAL = 1e-4
TAIL = 1e-15
_FFT_NOISE = 1e-15
_SIGMA_SPAN = 8.5  # x-range in std devs: mass outside is < 1e-17
_MAX_LOSS = 64.0
_FULL_SUPPORT = 2**21  # k-fold sums with fewer grid points need no Chernoff window


def _norm_sf(z: np.ndarray) -> np.ndarray:
    return special.ndtr(-z)


def _clean_floor(pmf: np.ndarray, with_dropped: bool = False):
    """Remove FFT round-off (~1e-16 of the peak per bin) pessimistically.

    A noise floor that never sums below TAIL would stop the tails from being trimmed.
    Each bin under the floor gives its mass to the nearest kept bin *above* it (a larger
    loss: pessimistic, and local, so long compositions stay tight); only bins above the
    last kept one are dropped (the caller counts them at +∞). Sending every such bin to
    +∞ lost ~1e-12 per composition, doubled by every squaring: ε = ∞ for 1e5 steps at
    δ = 1e-8 where dp-accounting gives 4.47.
    """
    floor = _FFT_NOISE * float(pmf.max())
    small = pmf < floor
    pmf = np.clip(pmf, 0.0, None)
    kept = np.flatnonzero(~small)
    moved = np.flatnonzero(small & (pmf > 0))
    target = np.searchsorted(kept, moved, side="right")
    inside = target < len(kept)
    dropped = float(pmf[moved[~inside]].sum())
    up = np.bincount(kept[target[inside]], weights=pmf[moved[inside]], minlength=len(pmf))
    pmf[small] = 0.0
    pmf += up
    return (pmf, dropped) if with_dropped else pmf


def _chernoff_index(p: np.ndarray, idx: np.ndarray, k: int, *, lower: bool) -> int:
    """Index bound of the k-fold sum of ``idx ~ p`` with at most TAIL mass beyond it.

    P[S >= u] <= exp(k·log E[e^{tX}] - t·u) for t > 0 (t < 0 for the lower tail),
    minimised over t on a log grid refined once around its best point. When the whole
    support of the sum is small it is used as it is.
    """
    span = k * (len(p) - 1)
    if span < _FULL_SUPPORT:
        return 0 if lower else span
    keep = p > 0
    logp, x = np.log(p[keep]), idx[keep].astype(np.float64)
    sign = -1.0 if lower else 1.0

    def bound(t: float) -> float:
        z = logp + sign * t * x
        m = float(z.max())
        return (k * (m + math.log(float(np.exp(z - m).sum()))) - math.log(TAIL)) / (sign * t)

    grid = np.geomspace(1e-9, 10.0, 40)
    vals = [bound(t) for t in grid]
    best = int(np.argmin(vals) if not lower else np.argmax(vals))
    fine = np.geomspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 40)
    vals += [bound(t) for t in fine]
    if lower:
        return max(0, int(math.floor(max(vals))))
    return min(span, int(math.ceil(min(vals))))


@dataclass
class DiscretePLD:
    """PMF on losses ``(offset + i)·h`` plus a point mass at +∞."""

    pmf: np.ndarray
    offset: int
    interval: float
    inf_mass: float

    def compose(self, other: DiscretePLD) -> DiscretePLD:
        pmf = signal.fftconvolve(self.pmf, other.pmf)
        pmf, dropped = _clean_floor(pmf, with_dropped=True)
        inf_mass = 1.0 - (1.0 - self.inf_mass) * (1.0 - other.inf_mass) + dropped
        return DiscretePLD(pmf, self.offset + other.offset, self.interval, inf_mass)._truncate()

    def _truncate(self) -> DiscretePLD:
        pmf = self.pmf
        cum = np.cumsum(pmf)
        lo = int(np.searchsorted(cum, TAIL, side="right"))
        rev = np.cumsum(pmf[::-1])
        hi_cut = int(np.searchsorted(rev, TAIL, side="right"))
        hi = max(len(pmf) - hi_cut, 1)
        lo = min(lo, hi - 1)
        low_mass = cum[lo - 1] if lo > 0 else 0.0
        up_mass = rev[hi_cut - 1] if hi_cut > 0 else 0.0
        new = pmf[lo:hi].copy()
        new[0] += low_mass
        return DiscretePLD(new, self.offset + lo, self.interval, self.inf_mass + up_mass)

    def self_compose(self, k: int) -> DiscretePLD:
        """The ``k``-fold composition, in one FFT (the pmf's transform raised to ``k``).

        Repeated squaring would round (and fold tails) ~2·log2(k) times, each time losing
        ~1e-16 of the peak per bin; raising the transform to the power k rounds once. The
        window of the result is [lo, hi] from Chernoff bounds, outside of which at most
        ``TAIL`` of the mass lies on either side (the upper part is counted at +∞).
        """
        if k < 1 or int(k) != k:
            raise ValueError("k must be a positive integer")
        k = int(k)
        if k == 1:
            return self
        fin = 1.0 - self.inf_mass
        p = np.clip(self.pmf, 0.0, None)
        if not p.sum() > 0:  # all the mass is at +∞ already
            return DiscretePLD(np.zeros(1), k * self.offset, self.interval, 1.0)
        p = p / p.sum()
        idx = np.arange(len(p))
        lo = _chernoff_index(p, idx, k, lower=True)
        hi = _chernoff_index(p, idx, k, lower=False)
        # circular convolution: n must hold [lo, hi] and the support of one more term
        n = int(2 ** math.ceil(math.log2(hi - lo + len(p) + 1)))
        spec = np.fft.rfft(p, n) ** k
        out = np.fft.irfft(spec, n)
        # absolute index m (relative to k·offset) sits at m mod n
        pmf = out[np.arange(lo, hi + 1) % n]
        pmf = _clean_floor(pmf)
        up_tail = TAIL if hi < k * (len(p) - 1) else 0.0
        pmf = pmf * fin**k
        # what fell below lo (at most TAIL) moves up to the lowest point: pessimistic
        pmf[0] += max(0.0, fin**k - up_tail - float(pmf.sum()))
        inf_mass = 1.0 - fin**k + up_tail
        return DiscretePLD(pmf, k * self.offset + lo, self.interval, inf_mass)._truncate()

    def losses(self) -> np.ndarray:
        return (self.offset + np.arange(len(self.pmf))) * self.interval

    def get_delta(self, epsilon: float) -> float:
        l = self.losses()
        above = l > epsilon
        d = np.sum(self.pmf[above] * -np.expm1(epsilon - l[above])) + self.inf_mass
        return float(min(1.0, max(0.0, d)))

    def get_epsilon(self, delta: float) -> float:
        if self.inf_mass >= delta:
            return math.inf
        l = self.losses()
        keep = l > 0  # ε >= 0 only involves positive losses (and no overflow in e^{-l})
        lp, pp = l[keep], self.pmf[keep]
        if len(lp) == 0 or self.get_delta(0.0) <= delta:
            return 0.0
        # On (l_{i-1}, l_i]: δ(ε) = S1_i - e^ε S2_i + inf, with S the suffix sums from i.
        # S2 = Σ p_j e^{-l_j} is kept in log space: losses can be large (small σ).
        s1 = np.cumsum(pp[::-1])[::-1]
        with np.errstate(divide="ignore"):
            log_s2 = np.logaddexp.accumulate((np.log(pp) - lp)[::-1])[::-1]
        d_at = np.append(s1[1:] - np.exp(lp[:-1] + log_s2[1:]), 0.0) + self.inf_mass
        idx = int(np.argmax(d_at <= delta))
        prev = float(lp[idx - 1]) if idx > 0 else 0.0
        num = s1[idx] + self.inf_mass - delta
        eps = math.log(num) - log_s2[idx] if num > 0 and np.isfinite(log_s2[idx]) else lp[idx]
        return min(float(lp[idx]), max(prev, float(eps)))


def _delta_curve(eps: np.ndarray, sigma: float, q: float, direction: str) -> np.ndarray:
    """Exact hockey-stick δ(ε) of one subsampled Gaussian, vectorised over ε."""
    s2 = sigma**2
    e = np.exp(eps)
    if direction == "remove":  # L(x) = log(1 - q + q exp((2x - 1) / 2σ²)), increasing
        with np.errstate(divide="ignore", invalid="ignore"):
            x = s2 * np.log((e - (1 - q)) / q) + 0.5
        x = np.where(e <= 1 - q, -np.inf, x)
        d = (1 - q) * _norm_sf(x / sigma) + q * _norm_sf((x - 1) / sigma) - e * _norm_sf(
            x / sigma
        )
    else:  # add: L(x) = -log(1 - q + q exp((2x - 1) / 2σ²)), decreasing
        with np.errstate(divide="ignore", invalid="ignore"):
            x = s2 * np.log((np.exp(-eps) - (1 - q)) / q) + 0.5
        below = np.exp(-eps) > 1 - q
        x = np.where(below, x, -np.inf)
        cdf0 = special.ndtr(x / sigma)
        cdf1 = special.ndtr((x - 1) / sigma)
        d = cdf0 - e * ((1 - q) * cdf0 + q * cdf1)
    return np.clip(d, 0.0, 1.0)


def _loss_range(sigma: float, q: float, direction: str) -> tuple[float, float]:
    xs = np.array([-_SIGMA_SPAN * sigma, 1 + _SIGMA_SPAN * sigma])
    with np.errstate(divide="ignore"):  # log(1 - q + q e^z) in log space: no overflow
        loss = np.logaddexp(np.log1p(-q), math.log(q) + (2 * xs - 1) / (2 * sigma**2))
    if direction == "add":
        loss = -loss[::-1]
    # A single step's losses beyond _MAX_LOSS go to +∞ (the top grid point's δ is
    # counted there: pessimistic); tiny σ would otherwise need billions of grid points.
    return max(float(loss[0]), -_MAX_LOSS), min(float(loss[1]), _MAX_LOSS)


def subsampled_gaussian_pld(
    sigma: float, q: float, direction: str, interval: float = DEFAULT_INTERVAL
) -> DiscretePLD:
    """Connect-the-dots discretisation of one Poisson-subsampled Gaussian."""
    lo, hi = _loss_range(sigma, q, direction)
    i0, i1 = math.floor(lo / interval), math.ceil(hi / interval)
    if i1 <= i0:
        i1 = i0 + 1
    grid = np.arange(i0, i1 + 1) * interval
    delta = _delta_curve(grid, sigma, q, direction)
    ex = np.exp(grid)
    slopes = np.diff(delta) / np.diff(ex)  # slope of δ against e^ε on each segment
    # Mass at grid point i: e^{ε_i} (slope right - slope left); flat (slope 0) beyond the end.
    right = np.append(slopes, 0.0)
    left = np.insert(slopes, 0, np.nan)
    pmf = ex * (right - left)
    inf_mass = float(delta[-1])
    pmf[0] = 0.0
    pmf = np.clip(pmf, 0.0, None)
    pmf[0] = max(0.0, 1.0 - inf_mass - pmf[1:].sum())  # rest of the mass, at the bottom
    return DiscretePLD(pmf, i0, interval, inf_mass)._truncate()


class PLDAccountant(Accountant):
    """Tight accountant via privacy loss distributions (add-or-remove-one adjacency).

    Parameters
    ----------
    interval:
        Discretisation step of the loss grid (``1e-4`` like ``dp-accounting``).

    Example
    -------
    >>> acc = PLDAccountant()
    >>> acc.step(noise_multiplier=1.0, sample_rate=0.01, steps=1000)
    >>> 1.0 < acc.get_epsilon(1e-5) < 3.0
    True
    """

    name = "pld"

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        super().__init__()
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.interval = float(interval)
        self._cache: dict[tuple, DiscretePLD] = {}

    def _composed(self, direction: str) -> DiscretePLD | None:
        key = (direction, tuple(self.history))
        if key in self._cache:
            return self._cache[key]
        total: DiscretePLD | None = None
        for sigma, q, k in self.history:
            if q == 0 or k == 0 or sigma == 0:
                continue
            one = subsampled_gaussian_pld(sigma, q, direction, self.interval).self_compose(k)
            total = one if total is None else total.compose(one)
        self._cache = {key: total}  # history only grows: keep the latest
        return total

    def get_epsilon(self, delta: float) -> float:
        check_delta(delta)
        if self._noiseless():
            return math.inf
        eps = 0.0
        for direction in ("remove", "add"):
            pld = self._composed(direction)
            if pld is not None:
                eps = max(eps, pld.get_epsilon(delta))
        return eps

    def get_delta(self, epsilon: float) -> float:
        """The δ of the composition at a given ε."""
        if self._noiseless():
            return 1.0
        d = 0.0
        for direction in ("remove", "add"):
            pld = self._composed(direction)
            if pld is not None:
                d = max(d, pld.get_delta(epsilon))
        return d


class PRVAccountant(PLDAccountant):
    """Opacus' ``"prv"`` (Gopi, Lee, Wutschitz 2021): the privacy random variable *is* the
    privacy loss, so this is the PLD computation under Opacus' name."""

    name = "prv"
