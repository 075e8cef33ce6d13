"""Exact samplers (distribution tests), mechanisms, DP statistics and the budget."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from veil.csprng import CSPRNG
from veil.dp.budget import BudgetExceededError, PrivacyBudget
from veil.dp.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    dp_count,
    dp_histogram,
    dp_mean,
    dp_sum,
    gaussian_sigma,
)
from veil.dp.samplers import bernoulli_exp, discrete_gaussian, discrete_laplace


def _chi2_pvalue(samples, pmf, support):
    counts = np.array([(samples == k).sum() for k in support] + [0.0])
    expected = np.array([pmf(k) for k in support])
    expected = np.append(expected, max(0.0, 1 - expected.sum())) * len(samples)
    counts[-1] = len(samples) - counts[:-1].sum()
    keep = expected > 5
    # fold the rare cells into one so the chi-square approximation holds
    c = np.append(counts[keep], counts[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    if e[-1] == 0:
        c, e = c[:-1], e[:-1]
    return stats.chisquare(c, e * c.sum() / e.sum()).pvalue


def test_bernoulli_exp_frequencies():
    gen = CSPRNG(b"b" * 16)
    for num, den in [(1, 3), (5, 2), (0, 1), (7, 7)]:
        draws = bernoulli_exp(np.full(40000, num, dtype=object), np.full(40000, den, dtype=object),
                              gen)
        p = math.exp(-num / den)
        assert abs(draws.mean() - p) < 5 * math.sqrt(p * (1 - p) / 40000) + 1e-12


@pytest.mark.parametrize("scale", [Fraction(1, 2), Fraction(3), Fraction(7, 3)])
def test_discrete_laplace_matches_its_pmf(scale):
    z = discrete_laplace(scale, 60000, CSPRNG(b"l" * 16))
    a = math.exp(-1 / float(scale))

    def pmf(k):
        return (1 - a) / (1 + a) * a ** abs(k)

    assert _chi2_pvalue(z, pmf, range(-40, 41)) > 1e-4
    assert z.mean() == pytest.approx(0.0, abs=5 * math.sqrt(2 * a) / (1 - a) / math.sqrt(60000))


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(9), Fraction(401, 10)])
def test_discrete_gaussian_matches_its_pmf(sigma2):
    z = discrete_gaussian(sigma2, 40000, CSPRNG(b"g" * 16))
    support = range(-60, 61)
    weights = {k: math.exp(-k * k / (2 * float(sigma2))) for k in range(-400, 401)}
    total = sum(weights.values())
    assert _chi2_pvalue(z, lambda k: weights[k] / total, support) > 1e-4


def test_samplers_refuse_bad_parameters():
    with pytest.raises(ValueError):
        discrete_laplace(Fraction(0), 3)
    with pytest.raises(ValueError):
        discrete_gaussian(Fraction(-1), 3)
    with pytest.raises(ValueError):
        discrete_gaussian(Fraction(10**12, 7), 3)


def test_outputs_live_on_the_grid():
    mech = LaplaceMechanism(epsilon=1.0, sensitivity=1.0, granularity=2.0**-4)
    out = mech.randomise(np.full(1000, 0.3))
    assert np.all((out * 16) == np.round(out * 16))
    assert mech.sensitivity_units == 16
    g = GaussianMechanism(1.0, 1e-5, 1.0, granularity=2.0**-4)
    assert g.sigma >= gaussian_sigma(1.0, 1.0, 1e-5) * (1 - 1e-9)
    outg = g.randomise(np.zeros(20000))
    assert np.std(outg) == pytest.approx(g.sigma, rel=0.03)


def test_laplace_noise_scale():
    mech = LaplaceMechanism(epsilon=0.5, sensitivity=2.0, granularity=2.0**-6)
    out = mech.randomise(np.zeros(40000))
    assert np.std(out) == pytest.approx(mech.std, rel=0.03)
    assert mech.std == pytest.approx(math.sqrt(2) * 2.0 / 0.5, rel=0.01)


def test_statistics_clamp_and_are_unbiased():
    gen = CSPRNG(b"s" * 16)
    values = np.array([10.0, 20.0, 30.0, 1e9])  # the outlier is clamped to 100
    sums = [dp_sum(values, 0, 100, epsilon=5.0, generator=gen) for _ in range(300)]
    assert np.mean(sums) == pytest.approx(160.0, abs=4 * 100 / 5.0 * math.sqrt(2) / math.sqrt(300))
    means = [dp_mean(values, 0, 100, epsilon=50.0, generator=gen) for _ in range(100)]
    assert np.mean(means) == pytest.approx(40.0, abs=3.0)
    assert all(0 <= m <= 100 for m in means)
    counts = [dp_count(values, epsilon=1.0, mechanism="gaussian", delta=1e-6, generator=gen)
              for _ in range(200)]
    assert np.mean(counts) == pytest.approx(4.0, abs=1.5)
    h, edges = dp_histogram([1, 2, 2, 3, 99], bins=3, range=(0.5, 3.5), epsilon=100.0,
                            generator=gen)
    assert edges.tolist() == [0.5, 1.5, 2.5, 3.5] and h.tolist() == [1, 2, 2]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        dp_sum([1.0, float("nan")], 0, 1, epsilon=1.0)
    with pytest.raises(ValueError):
        dp_sum([1.0], 2, 1, epsilon=1.0)
    with pytest.raises(ValueError):
        dp_count([1.0], epsilon=0.0)
    with pytest.raises(ValueError, match="range"):
        dp_histogram([1.0], bins=3, epsilon=1.0)
    with pytest.raises(ValueError):
        dp_count([1.0], epsilon=1.0, mechanism="exponential")


def test_budget_refuses_overspending_before_drawing():
    budget = PrivacyBudget(epsilon=1.0, delta=1e-6)
    dp_count([1, 2, 3], epsilon=0.5, budget=budget)
    dp_mean([1, 2, 3], 0, 10, epsilon=0.5, budget=budget)
    with pytest.raises(BudgetExceededError):
        dp_sum([1, 2, 3], 0, 10, epsilon=0.01, budget=budget)
    assert budget.remaining_epsilon == pytest.approx(0.0)
    b2 = PrivacyBudget(epsilon=10.0, delta=1e-6)
    dp_count([1], epsilon=1.0, mechanism="gaussian", delta=1e-6, budget=b2)
    with pytest.raises(BudgetExceededError):
        dp_count([1], epsilon=1.0, mechanism="gaussian", delta=1e-6, budget=b2)
    assert [label for label, *_ in b2.log] == ["count"]


def test_mean_with_and_without_bob_on_a_real_column():
    from sklearn.datasets import load_diabetes

    ages = load_diabetes(scaled=False).data[:, 0]  # 442 real patients
    with_bob = np.append(ages, 90.0)
    gen = CSPRNG(b"m" * 16)
    a = np.array([dp_mean(ages, 18, 90, epsilon=1.0, generator=gen) for _ in range(300)])
    b = np.array([dp_mean(with_bob, 18, 90, epsilon=1.0, generator=gen) for _ in range(300)])
    # Bob moves the exact mean by 0.09 years; the noise (std ~0.23) hides it, yet each
    # release stays within a year of the truth.
    assert abs(with_bob.mean() - ages.mean()) < 0.1
    assert 0.15 < a.std() < 0.4 and 0.15 < b.std() < 0.4
    assert abs(a.mean() - ages.mean()) < 0.1 and np.all(np.abs(a - ages.mean()) < 1.5)


@pytest.mark.parametrize("kwargs", [
    dict(epsilon=float("nan")), dict(epsilon=-1.0), dict(epsilon=0.5, mechanism="cauchy"),
    dict(epsilon=0.5, mechanism="gaussian", delta=0.0), dict(epsilon=0.5, granularity=0.0),
    dict(epsilon=0.5, lower=3.0, upper=1.0)])
def test_dp_mean_validates_before_spending(kwargs):
    budget = PrivacyBudget(1.0, 1e-5)
    args = dict(lower=0.0, upper=5.0) | kwargs
    with pytest.raises(ValueError):
        dp_mean([1.0, 2.0, 3.0], budget=budget, **args)
    assert budget.remaining_epsilon == 1.0 and budget.remaining_delta == 1e-5
