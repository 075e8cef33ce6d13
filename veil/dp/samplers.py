"""Exact sampling of discrete Laplace and discrete Gaussian noise (Canonne, Kamath, Steinke 2020).

Why not ``scale * log(u)``? Mironov (2012) showed that textbook Laplace noise computed
in floating point leaks: the set of doubles ``f(x) + noise`` can reach depends on
``f(x)``, so some outputs identify the input exactly. Here every random decision is an
exact integer comparison on uniform integers from :mod:`veil.csprng`
(Bernoulli(n/d) = [U < n] with U uniform on {0..d-1}), so the output distribution
is exactly the intended one on the integers, with no floating point in the loop.
Real-valued queries use these samplers on a fixed grid (see :mod:`veil.dp.mechanisms`).

All loops are vectorised: each round works on the still-undecided samples only.

Example
-------
>>> from fractions import Fraction
>>> z = discrete_laplace(Fraction(3), 1000)          # P[z] ∝ exp(-|z| / 3)
>>> z.dtype, z.shape
(dtype('int64'), (1000,))
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from veil.csprng import CSPRNG, default_generator

_MAX_BOUND = 2**62


def _below(bounds: np.ndarray, gen: CSPRNG) -> np.ndarray:
    """Uniform integers in ``[0, bound_i)`` for each entry (rejection, no modulo bias)."""
    bounds = np.asarray(bounds, dtype=np.uint64)
    if bounds.size and (bounds.min() == 0 or bounds.max() > np.uint64(_MAX_BOUND)):
        raise ValueError("bounds must be in [1, 2^62]")
    out = np.empty(bounds.shape, dtype=np.uint64)
    limit = (np.uint64(2**63) // bounds) * bounds
    todo = np.arange(bounds.size)
    while todo.size:
        draw = np.frombuffer(gen.random_bytes(8 * todo.size), dtype=np.uint64) >> np.uint64(1)
        ok = draw < limit[todo]
        out[todo[ok]] = draw[ok] % bounds[todo[ok]]
        todo = todo[~ok]
    return out.astype(np.int64)


def _bernoulli(num: np.ndarray, den: np.ndarray, gen: CSPRNG) -> np.ndarray:
    """Bernoulli(num/den) for integer arrays with 0 <= num <= den."""
    return _below(den, gen) < num


def _bernoulli_exp_frac(num: np.ndarray, den: np.ndarray, gen: CSPRNG) -> np.ndarray:
    """Bernoulli(exp(-num/den)) for 0 <= num <= den (CKS Algorithm 1, γ <= 1)."""
    n = num.shape[0]
    k = np.ones(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        a = _bernoulli(num[idx], den[idx] * k[idx], gen)
        k[idx[a]] += 1
        active[idx[~a]] = False
    return k % 2 == 1


def bernoulli_exp(num: np.ndarray, den: np.ndarray, gen: CSPRNG | None = None) -> np.ndarray:
    """Bernoulli(exp(-γ)) with γ = num/den >= 0, exactly.

    ``num`` may be a numpy object array of Python ints (no overflow); ``den`` must fit
    in 2^55 so that the inner comparisons stay within 62 bits.
    """
    gen = gen or default_generator()
    num = np.asarray(num, dtype=object)
    den = np.asarray(den, dtype=object)
    whole = (num // den).astype(np.int64)
    rest = (num % den).astype(np.int64)
    den64 = den.astype(np.int64) * np.ones_like(rest)
    if den64.size and den64.max() > 2**55:
        raise ValueError("denominator too large for exact sampling")
    out = _bernoulli_exp_frac(rest, den64, gen)
    # exp(-m) = Bernoulli(exp(-1))^m: stop early for samples already at 0.
    for j in range(int(whole.max()) if whole.size else 0):
        idx = np.flatnonzero(out & (whole > j))
        if idx.size == 0:
            break
        ones = np.ones(idx.size, dtype=np.int64)
        out[idx] = _bernoulli_exp_frac(ones, ones, gen)
    return out


def _geometric_exp1(size: int, gen: CSPRNG) -> np.ndarray:
    """Number of successes before the first failure of Bernoulli(exp(-1)) trials."""
    v = np.zeros(size, dtype=np.int64)
    active = np.ones(size, dtype=bool)
    ones = np.ones(size, dtype=np.int64)
    while active.any():
        idx = np.flatnonzero(active)
        a = _bernoulli_exp_frac(ones[idx], ones[idx], gen)
        v[idx[a]] += 1
        active[idx[~a]] = False
    return v


def discrete_laplace(scale: Fraction | int, size: int, gen: CSPRNG | None = None) -> np.ndarray:
    """Samples with P[z] ∝ exp(-|z| / scale) on the integers (CKS Algorithm 2).

    Parameters
    ----------
    scale:
        A positive rational (``Fraction``) or integer.
    """
    gen = gen or default_generator()
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError("scale must be positive")
    t, s = scale.numerator, scale.denominator  # scale = t / s
    if t > 2**40 or s > 2**40:
        raise ValueError("scale numerator/denominator too large (limit 2^40)")
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        m = todo.size
        u = _below(np.full(m, t), gen)
        d = _bernoulli_exp_frac(u, np.full(m, t, dtype=np.int64), gen)
        v = _geometric_exp1(m, gen)
        x = u + t * v
        y = x // s
        b = _below(np.full(m, 2), gen) == 1
        ok = d & ~(b & (y == 0))
        out[todo[ok]] = np.where(b[ok], -y[ok], y[ok])
        todo = todo[~ok]
    return out


def discrete_gaussian(sigma2: Fraction | int, size: int, gen: CSPRNG | None = None) -> np.ndarray:
    """Samples with P[z] ∝ exp(-z² / (2σ²)) on the integers (CKS Algorithm 3).

    Parameters
    ----------
    sigma2:
        σ², a positive rational. Use :func:`rational_at_least` to turn a float into a
        rational that is never smaller (rounding noise up, never down).
    """
    gen = gen or default_generator()
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ValueError("sigma2 must be positive")
    p, q = sigma2.numerator, sigma2.denominator
    t = math.isqrt(p // q) + 1  # floor(σ) + 1
    den = 2 * p * q * t * t
    if den > 2**55:
        raise ValueError("σ² has too large a numerator/denominator for exact sampling; "
                         "use rational_at_least(σ², max_denominator) with a smaller denominator")
    out = np.empty(size, dtype=np.int64)
    todo = np.arange(size)
    while todo.size:
        y = discrete_laplace(Fraction(t), todo.size, gen)
        # γ = (|y| - σ²/t)² / (2σ²) = (|y|·q·t - p)² / (2·p·q·t²), exact in Python ints
        num = (np.abs(y).astype(object) * (q * t) - p) ** 2
        c = bernoulli_exp(num, np.full(todo.size, den, dtype=object), gen)
        out[todo[c]] = y[c]
        todo = todo[~c]
    return out


def rational_at_least(x: float, max_denominator: int = 1000) -> Fraction:
    """The smallest fraction with denominator ``max_denominator`` that is >= ``x``.

    Example
    -------
    >>> rational_at_least(0.1234, 100)
    Fraction(13, 100)
    """
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"need a positive finite number, got {x}")
    fx = Fraction(x)
    return Fraction(math.ceil(fx * max_denominator), max_denominator)


def rational_at_most(x: float, max_denominator: int = 10**6) -> Fraction:
    """The largest fraction with denominator ``max_denominator`` that is <= ``x`` (> 0)."""
    if not (x > 0 and math.isfinite(x)):
        raise ValueError(f"need a positive finite number, got {x}")
    r = Fraction(math.floor(Fraction(x) * max_denominator), max_denominator)
    if r <= 0:
        raise ValueError(f"{x} is too small for denominator {max_denominator}")
    return r
