"""What every accountant shares: the history of (noise multiplier, sample rate, steps)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod


class Accountant(ABC):
    """Tracks the composition of Poisson-subsampled Gaussian mechanisms.

    Each call to :meth:`step` records ``steps`` applications of the mechanism with
    noise multiplier ``σ`` (noise std / sensitivity) and Poisson sampling rate ``q``.
    Consecutive calls with the same ``(σ, q)`` are merged.
    """

    name: str = "base"

    def __init__(self) -> None:
        self.history: list[tuple[float, float, int]] = []

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` applications of the subsampled Gaussian mechanism."""
        if noise_multiplier == 0 and 0 <= sample_rate <= 1:  # clipping only: no privacy
            noise_multiplier = 0.0
        else:
            check_mechanism(noise_multiplier, sample_rate, steps)
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            sigma, q, k = self.history[-1]
            self.history[-1] = (sigma, q, k + steps)
        else:
            self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    @property
    def steps(self) -> int:
        """Total number of recorded mechanism applications."""
        return sum(k for _, _, k in self.history)

    @abstractmethod
    def get_epsilon(self, delta: float) -> float:
        """The ε such that the recorded composition is (ε, δ)-DP."""

    @classmethod
    def mechanism(cls) -> str:
        """The accountant's name (``"rdp"``, ``"pld"``, ``"prv"``, ``"gdp"``), as in Opacus."""
        return cls.name

    def get_privacy_spent(self, *, delta: float, **_ignored) -> tuple[float, float | None]:
        """``(ε, None)`` (the RDP accountant gives ``(ε, best order α)``), as in Opacus."""
        return self.get_epsilon(delta), None

    def state_dict(self) -> dict:
        """The recorded history (for checkpoints)."""
        return {"mechanism": self.name, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mechanism", self.name) != self.name:
            raise ValueError(f"checkpoint of a {state['mechanism']!r} accountant, this is "
                             f"{self.name!r}")
        self.history = [(float(s), float(q), int(k)) for s, q, k in state["history"]]

    def _noiseless(self) -> bool:
        """A step without noise (σ = 0, q > 0) was recorded: ε is infinite."""
        return any(sigma == 0 and q > 0 and k > 0 for sigma, q, k in self.history)

    def __len__(self) -> int:
        return self.steps


def check_mechanism(noise_multiplier: float, sample_rate: float, steps: int) -> None:
    """Refuse parameters for which no finite guarantee (or no meaning) exists."""
    if not (isinstance(noise_multiplier, int | float) and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be a finite number, got {noise_multiplier!r}")
    if noise_multiplier <= 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")


def check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def make_accountant(name: str) -> Accountant:
    """``"rdp"``, ``"pld"``, ``"prv"`` (privacy random variables: the same tight
    computation as PLD) or ``"gdp"`` (CLT approximation, not a bound)."""
    from veil.dp.accountants.gdp import GaussianAccountant
    from veil.dp.accountants.pld import PLDAccountant, PRVAccountant
    from veil.dp.accountants.rdp import RDPAccountant

    kinds = {"rdp": RDPAccountant, "pld": PLDAccountant, "prv": PRVAccountant,
             "gdp": GaussianAccountant}
    key = name.lower() if isinstance(name, str) else name
    if key not in kinds:
        raise ValueError(f"unknown accountant {name!r}; choose one of {sorted(kinds)}")
    return kinds[key]()
