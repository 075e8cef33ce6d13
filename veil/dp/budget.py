"""A privacy budget that refuses to be overspent (basic sequential composition)."""

from __future__ import annotations

import math
import threading


class BudgetExceededError(RuntimeError):
    """Answering this query would spend more than the remaining budget."""


class PrivacyBudget:
    """Total (ε, δ) for a set of queries on one dataset; each query spends part of it.

    Under basic composition the ε's and δ's of the answered queries add up. A query
    that would exceed the total is refused *before* any noise is drawn.

    Example
    -------
    >>> b = PrivacyBudget(epsilon=1.0)
    >>> b.spend(0.4); b.spend(0.4)
    >>> round(b.remaining_epsilon, 6)
    0.2
    >>> b.spend(0.5)
    Traceback (most recent call last):
    ...
    veil.dp.budget.BudgetExceededError: query needs ε=0.5, δ=0 but only ε=0.2, δ=0 remain
    """

    def __init__(self, epsilon: float, delta: float = 0.0) -> None:
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError("epsilon must be a positive finite number")
        if not 0 <= delta < 1:
            raise ValueError("delta must be in [0, 1)")
        self.epsilon, self.delta = float(epsilon), float(delta)
        self.spent_epsilon, self.spent_delta = 0.0, 0.0
        self.log: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    @property
    def remaining_epsilon(self) -> float:
        return self.epsilon - self.spent_epsilon

    @property
    def remaining_delta(self) -> float:
        return self.delta - self.spent_delta

    def spend(self, epsilon: float, delta: float = 0.0, label: str = "") -> None:
        """Reserve (ε, δ) for one query, or raise :class:`BudgetExceededError`."""
        if not (epsilon > 0 and math.isfinite(epsilon)) or delta < 0:
            raise ValueError("a query needs ε > 0 and δ >= 0")
        tol = 1e-12
        with self._lock:
            if (self.spent_epsilon + epsilon > self.epsilon + tol
                    or self.spent_delta + delta > self.delta + tol):
                raise BudgetExceededError(
                    f"query needs ε={epsilon:g}, δ={delta:g} but only "
                    f"ε={self.remaining_epsilon:.6g}, δ={self.remaining_delta:.6g} remain"
                )
            self.spent_epsilon += epsilon
            self.spent_delta += delta
            self.log.append((label, epsilon, delta))
