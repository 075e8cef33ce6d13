"""DP-SGLD: noisy projected SGD whose intermediate iterates stay hidden.

Algorithm (Chourasia, Ye, Shokri 2021; Ryffel, Bach, Pointcheval 2022): for a loss
that is L-Lipschitz, λ-strongly convex and β-smooth on a convex set C,

    θ_0 ~ Π_C(N(0, 2σ²/λ · I)),   θ_{k+1} = Π_C(θ_k − η ∇L_B(θ_k) + sqrt(2ησ²) Z_k)

with a random batch B at each update and step η < 1/β; only the last iterate is
released. Its Rényi DP of order α after K *updates* is

    ε(α) = 4αL² / (λ n² σ²) · (1 − exp(−ληK/2)),

which converges to a constant as K grows (unlike the composition bounds of DP-SGD,
which grow with every step). With varying steps η_k (each < 1/β) Veil applies the
per-update contraction step by step, which gives 1 − exp(−λ Σ_k η_k / 2): a
decreasing schedule simply accumulates "time" more slowly. (ε, δ) follows from
ε = min_α ε(α) + log(1/δ)/(α − 1); since ε(α) = cα this is c + 2√(c log(1/δ)).

K counts updates. The published experiments appear to plug the number of *epochs*
into K, which understates ε by a factor up to n/b updates per epoch before saturation
(see docs/dp.md for numbers).

Example
-------
>>> eps, alpha = sgld_epsilon(1e-5, lipschitz=1.5, strong_convexity=0.01, n=30000,
...                           sigma=0.0073, lr=1.0, steps=2000)
>>> round(eps, 2)
0.95
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from veil.csprng import CSPRNG, default_generator


class AssumptionError(ValueError):
    """The conditions under which the hidden-state bound holds are not met."""


def check_assumptions(
    *, lipschitz: float, strong_convexity: float, smoothness: float | None, n: int,
    sigma: float, lr: float | Sequence[float],
) -> None:
    """Refuse parameters outside the theorem: L, λ, σ > 0, n >= 1, 0 < η_k < 1/β, λ <= β.

    Example
    -------
    >>> check_assumptions(lipschitz=1, strong_convexity=0.1, smoothness=1.0, n=100,
    ...                   sigma=0.1, lr=2.0)
    Traceback (most recent call last):
    ...
    veil.dp.sgld.AssumptionError: step size 2 >= 1/β = 1: the bound needs η < 1/β
    """
    for name, v in (("lipschitz", lipschitz), ("strong_convexity", strong_convexity),
                    ("sigma", sigma)):
        if not (v > 0 and math.isfinite(v)):
            raise AssumptionError(f"{name} must be a positive finite number, got {v}")
    if int(n) != n or n < 1:
        raise AssumptionError(f"n must be a positive integer, got {n}")
    lrs = np.atleast_1d(np.asarray(lr, dtype=np.float64))
    if lrs.size == 0 or not np.all(lrs > 0) or not np.all(np.isfinite(lrs)):
        raise AssumptionError("step sizes must be positive and finite")
    if smoothness is None:
        raise AssumptionError("the smoothness constant β is required (to check η < 1/β)")
    if not (smoothness > 0 and math.isfinite(smoothness)):
        raise AssumptionError(f"smoothness must be positive, got {smoothness}")
    if strong_convexity > smoothness:
        raise AssumptionError(
            f"strong convexity λ={strong_convexity} > smoothness β={smoothness} is impossible")
    worst = float(lrs.max())
    if worst >= 1 / smoothness:
        raise AssumptionError(
            f"step size {worst:g} >= 1/β = {1 / smoothness:g}: the bound needs η < 1/β")


def _time(lr: float | Sequence[float], steps: int | None) -> float:
    if isinstance(lr, int | float):
        if steps is None or steps < 0:
            raise ValueError("steps (number of updates, >= 0) is required with a constant lr")
        return float(lr) * steps
    lrs = np.asarray(lr, dtype=np.float64)
    if steps is not None and steps != lrs.size:
        raise ValueError(f"{lrs.size} step sizes given for steps={steps}")
    return float(lrs.sum())


def sgld_rdp(
    alpha: float, *, lipschitz: float, strong_convexity: float, n: int, sigma: float,
    lr: float | Sequence[float], steps: int | None = None,
) -> float:
    """Rényi DP ε(α) of DP-SGLD after ``steps`` updates (or one entry per update in ``lr``).

    Example
    -------
    >>> sgld_rdp(2.0, lipschitz=1, strong_convexity=1, n=10, sigma=1, lr=0.1, steps=10**6)
    0.08
    """
    if alpha <= 1:
        raise ValueError("alpha must be > 1")
    t = _time(lr, steps)
    c_inf = 4 * lipschitz**2 / (strong_convexity * n**2 * sigma**2)
    return alpha * c_inf * -math.expm1(-strong_convexity * t / 2)


def sgld_epsilon(
    delta: float, *, lipschitz: float, strong_convexity: float, n: int, sigma: float,
    lr: float | Sequence[float], steps: int | None = None, smoothness: float | None = None,
) -> tuple[float, float]:
    """(ε, best α) of DP-SGLD at the given δ, optimising α in closed form.

    With ``smoothness`` given, the assumptions are checked first.
    """
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    if smoothness is not None:
        check_assumptions(lipschitz=lipschitz, strong_convexity=strong_convexity,
                          smoothness=smoothness, n=n, sigma=sigma, lr=lr)
    c = sgld_rdp(2.0, lipschitz=lipschitz, strong_convexity=strong_convexity, n=n,
                 sigma=sigma, lr=lr, steps=steps) / 2.0
    log_d = math.log(1 / delta)
    if c == 0:
        return 0.0, math.inf
    alpha = 1 + math.sqrt(log_d / c)
    return c * alpha + log_d / (alpha - 1), alpha


def sigma_for_epsilon(
    epsilon: float, delta: float, *, lipschitz: float, strong_convexity: float, n: int,
    lr: float, steps: int | None = None,
) -> float:
    """Temperature σ such that DP-SGLD is (ε, δ)-DP (after ``steps`` updates, or at
    saturation when ``steps`` is None)."""
    if not epsilon > 0:
        raise ValueError("epsilon must be positive")
    log_d = math.log(1 / delta)
    # ε = c + 2√(c·log(1/δ))  ⇔  √c = √(log(1/δ) + ε) − √(log(1/δ))
    c = (math.sqrt(log_d + epsilon) - math.sqrt(log_d)) ** 2
    frac = 1.0 if steps is None else -math.expm1(-strong_convexity * lr * steps / 2)
    return math.sqrt(4 * lipschitz**2 * frac / (strong_convexity * n**2 * c))


class HiddenStateAccountant:
    """Tracks the updates of one DP-SGLD run and reports the hidden-state ε.

    Example
    -------
    >>> acc = HiddenStateAccountant(lipschitz=1.5, strong_convexity=0.01, n=30000,
    ...                             sigma=0.0073, smoothness=0.51)
    >>> for _ in range(100):
    ...     acc.step(lr=1.0)
    >>> acc.get_epsilon(1e-5) < 1.0
    True
    """

    def __init__(self, *, lipschitz: float, strong_convexity: float, n: int, sigma: float,
                 smoothness: float) -> None:
        check_assumptions(lipschitz=lipschitz, strong_convexity=strong_convexity,
                          smoothness=smoothness, n=n, sigma=sigma, lr=0.5 / smoothness)
        self.lipschitz, self.strong_convexity, self.n = lipschitz, strong_convexity, n
        self.sigma, self.smoothness = sigma, smoothness
        self.time = 0.0
        self.steps = 0

    def step(self, lr: float) -> None:
        if not 0 < lr < 1 / self.smoothness:
            raise AssumptionError(f"step size {lr:g} outside (0, 1/β = {1 / self.smoothness:g})")
        self.time += lr
        self.steps += 1

    def get_epsilon(self, delta: float) -> float:
        if self.steps == 0:
            return 0.0
        return sgld_epsilon(delta, lipschitz=self.lipschitz,
                            strong_convexity=self.strong_convexity, n=self.n,
                            sigma=self.sigma, lr=self.time, steps=1)[0]


class SGLD(torch.optim.Optimizer):
    """Projected Langevin update θ ← Π_C(θ − η(∇L_B(θ) + λθ) + sqrt(2ησ²)·Z).

    The L2 term λθ (strong convexity) is added here; the gradient in ``.grad`` must be
    that of the *mean* data loss on the batch. C is the L2 ball of radius ``radius``
    over all parameters jointly. Noise comes from :mod:`veil.csprng`. The step size is
    checked against 1/β at every update.

    Parameters
    ----------
    params:
        Parameters to train.
    lr, sigma, l2, radius, smoothness:
        η, σ (temperature σ²), λ, the radius of C and β (of the regularised loss).
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float, sigma: float, l2: float,
                 radius: float, smoothness: float, generator: CSPRNG | None = None) -> None:
        if not (radius > 0 and math.isfinite(radius)):
            raise AssumptionError("radius must be positive and finite (C must be bounded for "
                                  "the loss, with its L2 term, to be Lipschitz)")
        if not l2 > 0:
            raise AssumptionError("l2 (strong convexity λ) must be > 0")
        super().__init__(params, dict(lr=lr, sigma=sigma, l2=l2))
        self.radius, self.smoothness = float(radius), float(smoothness)
        self.generator = generator or default_generator()
        self.step_hooks: list = []

    @torch.no_grad()
    def init_params(self) -> None:
        """θ_0 ~ Π_C(N(0, 2σ²/λ · I)): the start the analysis assumes."""
        for group in self.param_groups:
            std = math.sqrt(2 * group["sigma"] ** 2 / group["l2"])
            for p in group["params"]:
                p.copy_(self.generator.normal(p.shape, std=std, dtype=p.dtype))
        self._project()

    @torch.no_grad()
    def _project(self) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        norm = math.sqrt(sum(float(p.pow(2).sum()) for p in params))
        if norm > self.radius:
            for p in params:
                p.mul_(self.radius / norm)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        for group in self.param_groups:
            lr, sigma, l2 = group["lr"], group["sigma"], group["l2"]
            if not 0 < lr < 1 / self.smoothness:
                raise AssumptionError(f"step size {lr:g} >= 1/β = {1 / self.smoothness:g}")
            for p in group["params"]:
                if p.grad is None:
                    raise RuntimeError("a parameter has no gradient: call backward() first")
                if not torch.isfinite(p.grad).all():
                    raise FloatingPointError("non-finite gradient")
                noise = self.generator.normal(p.shape, std=math.sqrt(2 * lr * sigma**2),
                                              dtype=p.dtype)
                p.add_(p.grad + l2 * p, alpha=-lr).add_(noise.to(p.device))
        self._project()
        for hook in self.step_hooks:
            hook(self)


class DPLogisticRegression:
    """Worked example: L2-regularised multinomial logistic regression trained by DP-SGLD.

    The constants are derived, not assumed: feature vectors are clipped to L2 norm
    ``feature_bound`` = X; the softmax cross-entropy gradient (p − e_y)xᵀ has norm at
    most √2·X, its Hessian is at most X²/2 (the largest eigenvalue of diag(p) − ppᵀ is
    <= 1/2); with the L2 term (λ/2)‖W‖² on the ball ‖W‖ <= R the loss is
    L = √2·X + λR Lipschitz, λ-strongly convex and β = X²/2 + λ smooth.

    Parameters
    ----------
    l2:
        λ. ``radius`` defaults to √(2 log k / λ), which contains the minimiser
        (F(0) = log k >= λ/2 ‖W*‖²).

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)   # not-secret: synthetic example data
    >>> x = rng.normal(size=(500, 5)); y = (x[:, 0] > 0).astype(int)
    >>> clf = DPLogisticRegression(num_classes=2, l2=0.01, epsilon=3.0, delta=1e-5)
    >>> clf.fit(x, y, steps=300, batch_size=50)   # doctest: +ELLIPSIS
    DPLogisticRegression(...)
    >>> clf.epsilon_spent(1e-5) <= 3.0
    True
    """

    def __init__(self, num_classes: int, *, l2: float, epsilon: float | None = None,
                 delta: float = 1e-5, sigma: float | None = None, feature_bound: float = 1.0,
                 radius: float | None = None, lr: float | None = None,
                 generator: CSPRNG | None = None) -> None:
        if (epsilon is None) == (sigma is None):
            raise ValueError("give exactly one of epsilon (σ calibrated) or sigma")
        self.k, self.l2, self.X = num_classes, float(l2), float(feature_bound)
        self.radius = radius if radius is not None else math.sqrt(2 * math.log(num_classes) / l2)
        self.lipschitz = math.sqrt(2) * self.X + self.l2 * self.radius
        self.smoothness = self.X**2 / 2 + self.l2
        self.lr = lr if lr is not None else 0.9 / self.smoothness
        self.epsilon, self.delta, self.sigma = epsilon, delta, sigma
        self.generator = generator or default_generator()
        self.weight: torch.Tensor | None = None
        self.accountant: HiddenStateAccountant | None = None

    def __repr__(self) -> str:
        return (f"DPLogisticRegression(k={self.k}, λ={self.l2}, σ={self.sigma}, "
                f"L={self.lipschitz:.3g}, β={self.smoothness:.3g})")

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        norms = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return x * (self.X / norms).clamp(max=1.0)

    def fit(self, x, y, *, steps: int, batch_size: int, progress=None) -> DPLogisticRegression:
        """Train for ``steps`` updates on random batches (a fresh secret shuffle per epoch)."""
        x = self._clip(torch.as_tensor(np.asarray(x), dtype=torch.float32))
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        n, d = x.shape
        if y.shape != (n,) or int(y.min()) < 0 or int(y.max()) >= self.k:
            raise ValueError("labels must be a 1-d array of integers in [0, num_classes)")
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size must be in [1, {n}]")
        if self.epsilon is not None:
            self.sigma = sigma_for_epsilon(self.epsilon, self.delta, lipschitz=self.lipschitz,
                                           strong_convexity=self.l2, n=n, lr=self.lr,
                                           steps=steps)
        assert self.sigma is not None
        self.accountant = HiddenStateAccountant(
            lipschitz=self.lipschitz, strong_convexity=self.l2, n=n, sigma=self.sigma,
            smoothness=self.smoothness)
        w = torch.zeros(self.k, d, requires_grad=True)
        opt = SGLD([w], lr=self.lr, sigma=self.sigma, l2=self.l2, radius=self.radius,
                   smoothness=self.smoothness, generator=self.generator)
        opt.init_params()
        order = torch.empty(0, dtype=torch.long)
        pos = 0
        for k in range(steps):
            if pos + batch_size > order.numel():  # secret reshuffle
                order = torch.argsort(self.generator.integers(n))
                pos = 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            opt.zero_grad()
            loss = nn.functional.cross_entropy(x[idx] @ w.t(), y[idx])
            loss.backward()
            opt.step()
            self.accountant.step(self.lr)
            if progress is not None:
                progress(k, float(loss.detach()))
        self.weight = w.detach()
        return self

    def epsilon_spent(self, delta: float) -> float:
        if self.accountant is None:
            raise RuntimeError("fit first")
        return self.accountant.get_epsilon(delta)

    def predict(self, x) -> np.ndarray:
        if self.weight is None:
            raise RuntimeError("fit first")
        xt = self._clip(torch.as_tensor(np.asarray(x), dtype=torch.float32))
        return (xt @ self.weight.t()).argmax(1).numpy()

    def score(self, x, y) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y)))

