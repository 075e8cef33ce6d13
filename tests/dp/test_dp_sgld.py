"""DP-SGLD: the hidden-state bound, its limits, assumption checks, and a real fit."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from veil.dp.sgld import (
    SGLD,
    AssumptionError,
    DPLogisticRegression,
    HiddenStateAccountant,
    check_assumptions,
    sgld_epsilon,
    sgld_rdp,
    sigma_for_epsilon,
)

P = dict(lipschitz=1.5, strong_convexity=0.02, n=1000, sigma=0.05)


@pytest.mark.parametrize("alpha,lr,k", [(2.0, 0.5, 1), (5.5, 0.1, 300), (32.0, 1.0, 10**5)])
def test_rdp_is_the_formula(alpha, lr, k):
    L, lam, n, s = P["lipschitz"], P["strong_convexity"], P["n"], P["sigma"]
    direct = 4 * alpha * L**2 / (lam * n**2 * s**2) * (1 - math.exp(-lam * lr * k / 2))
    assert sgld_rdp(alpha, lr=lr, steps=k, **P) == pytest.approx(direct, rel=1e-12)


def test_limits_large_and_small_k():
    limit = 4 * 3.0 * P["lipschitz"] ** 2 / (P["strong_convexity"] * P["n"] ** 2 * P["sigma"] ** 2)
    assert sgld_rdp(3.0, lr=0.5, steps=10**7, **P) == pytest.approx(limit, rel=1e-12)
    # small K: linear in K (1 - e^{-x} ≈ x), i.e. composition-like growth at first
    small = sgld_rdp(3.0, lr=0.5, steps=2, **P)
    assert small == pytest.approx(limit * P["strong_convexity"] * 0.5 * 2 / 2, rel=1e-2)
    assert sgld_rdp(3.0, lr=0.5, steps=0, **P) == 0.0
    eps = [sgld_epsilon(1e-5, lr=0.5, steps=k, **P)[0] for k in (10, 100, 10**4, 10**6)]
    assert eps[0] < eps[1] < eps[2] <= eps[3] and eps[3] - eps[2] < 1e-6


def test_decreasing_steps_accumulate_time():
    lrs = [0.5 / (1 + k / 10) for k in range(200)]
    assert sgld_rdp(2.0, lr=lrs, **P) == pytest.approx(sgld_rdp(2.0, lr=sum(lrs), steps=1, **P))
    assert sgld_rdp(2.0, lr=lrs, **P) < sgld_rdp(2.0, lr=0.5, steps=200, **P)
    with pytest.raises(ValueError):
        sgld_rdp(2.0, lr=lrs, steps=3, **P)


def test_epsilon_conversion_is_the_optimum_over_alpha():
    eps, alpha = sgld_epsilon(1e-5, lr=0.5, steps=500, **P)
    grid = np.linspace(1.01, 2000, 400000)
    brute = min(sgld_rdp(a, lr=0.5, steps=500, **P) + math.log(1e5) / (a - 1) for a in grid[::50])
    assert eps == pytest.approx(brute, rel=1e-3) and eps <= brute + 1e-12
    assert sgld_rdp(alpha, lr=0.5, steps=500, **P) + math.log(1e5) / (alpha - 1) == \
        pytest.approx(eps)
    s = sigma_for_epsilon(2.0, 1e-5, lipschitz=1.5, strong_convexity=0.02, n=1000, lr=0.5,
                          steps=500)
    assert sgld_epsilon(1e-5, lipschitz=1.5, strong_convexity=0.02, n=1000, sigma=s, lr=0.5,
                        steps=500)[0] == pytest.approx(2.0)


@pytest.mark.parametrize("change", [
    dict(lr=2.5), dict(strong_convexity=0.0), dict(lipschitz=-1.0), dict(sigma=0.0),
    dict(n=0), dict(smoothness=None), dict(strong_convexity=5.0), dict(lr=[0.1, 0.6]),
])
def test_assumption_checks_fire(change):
    args = dict(lipschitz=1.0, strong_convexity=0.1, smoothness=2.0, n=100, sigma=0.1, lr=0.4)
    args.update(change)
    with pytest.raises(AssumptionError):
        check_assumptions(**args)


def test_optimizer_checks_step_size_and_domain_at_run_time():
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(AssumptionError):
        SGLD([w], lr=0.1, sigma=0.1, l2=0.1, radius=float("inf"), smoothness=1.0)
    with pytest.raises(AssumptionError):
        SGLD([w], lr=0.1, sigma=0.1, l2=0.0, radius=1.0, smoothness=1.0)
    opt = SGLD([w], lr=0.5, sigma=0.1, l2=0.1, radius=1.0, smoothness=1.0)
    w.sum().backward()
    opt.step()
    assert float(w.detach().norm()) <= 1.0 + 1e-6
    opt.param_groups[0]["lr"] = 1.5  # a scheduler pushing η past 1/β
    with pytest.raises(AssumptionError):
        opt.step()
    acc = HiddenStateAccountant(lipschitz=1, strong_convexity=0.1, n=10, sigma=1, smoothness=1)
    with pytest.raises(AssumptionError):
        acc.step(lr=1.0)


def test_init_and_projection():
    w = torch.zeros(1000, requires_grad=True)
    opt = SGLD([w], lr=0.5, sigma=0.1, l2=0.5, radius=100.0, smoothness=1.0)
    opt.init_params()
    assert float(w.detach().std()) == pytest.approx(math.sqrt(2 * 0.01 / 0.5), rel=0.1)
    opt2 = SGLD([w], lr=0.5, sigma=1.0, l2=0.01, radius=2.0, smoothness=1.0)
    opt2.init_params()
    assert float(w.detach().norm()) == pytest.approx(2.0, rel=1e-5)


def test_dp_logistic_regression_learns_digits():
    d = load_digits()
    x = d.data / 16.0
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    clf = DPLogisticRegression(10, l2=0.01, epsilon=8.0, delta=1e-5)
    clf.fit(x[:1500], d.target[:1500], steps=400, batch_size=100)
    assert clf.epsilon_spent(1e-5) <= 8.0 + 1e-9
    assert clf.score(x[1500:], d.target[1500:]) > 0.7
    assert clf.lipschitz == pytest.approx(math.sqrt(2) + 0.01 * clf.radius)
    with pytest.raises(ValueError):
        clf.fit(x[:10], np.full(10, 12), steps=1, batch_size=5)
