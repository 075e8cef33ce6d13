"""Client-level differential privacy for federated averaging (DP-FedAvg).

McMahan, Ramage, Talwar, Zhang 2018 ("Learning differentially private recurrent
language models"): every round each client is included independently with
probability ``q`` (Poisson sampling), clips its model update to L2 norm ``C``,
the server adds Gaussian noise N(0, (zC)²) to the *sum* and divides by the
*expected* number of clients ``qN`` (a fixed denominator, so one client changes
the average by at most ``C/(qN)`` whatever the others do). Each round is then
the Poisson-subsampled Gaussian mechanism with noise multiplier ``z`` and
sampling rate ``q``, and ε comes from :mod:`veil.dp.accountants` (RDP or PLD).

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021): clients also
report whether their update fitted under ``C``; the server estimates the
fraction with noise N(0, σ_b²) and moves ``C <- C·exp(-η(b - γ))`` towards the
γ-quantile of update norms. The bits cost privacy too: the update noise is
raised so that the pair stays a Gaussian mechanism of multiplier ``z``:
``z_Δ = (z^-2 - (2σ_b)^-2)^-1/2``.

Why Veil's own and not Flower's ``DifferentialPrivacy*`` wrappers (flwr 1.42):
those sample a fixed number of clients without replacement (``random.sample``)
while the accountants assume Poisson sampling, draw the noise from numpy's
default generator (``np.random.normal``, predictable), and only account
without amplification. Here the sampling, the noise (:mod:`veil.csprng`) and
the accountant agree, and the secure aggregators can add the noise
themselves (:mod:`veil.fl.twoserver`).

What Veil refuses rather than report a wrong ε: a population smaller or larger
than the number of connected clients (the sampling rate would be wrong), an
expected cohort ``qN < 1``, ``z <= 0``, adaptive clipping whose bit noise leaves
no budget for the update noise. Clients that are sampled but do not return only
cost utility: the fixed denominator keeps the guarantee (logged as a warning).

Example
-------
>>> dp = ClientDP(noise_multiplier=1.0, clip=0.5, sample_rate=0.1, population=100)
>>> dp.noise_std            # on the sum of clipped updates
0.5
>>> round(dp.epsilon(rounds=50, delta=1e-5), 2) > 0
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from veil.csprng import CSPRNG


@dataclass
class ClientDP:
    """Parameters and state of client-level central DP for one federation.

    Parameters
    ----------
    noise_multiplier:
        ``z``: noise std on the sum is ``z·C``.
    clip:
        ``C``: L2 bound on one client's update (initial value when adaptive).
    sample_rate:
        ``q``: probability that a client takes part in a round (Poisson).
    population:
        ``N``: number of clients; must equal the number of connected clients.
    adaptive:
        Adapt ``C`` towards the ``target_quantile`` of update norms.
    accountant:
        ``"rdp"`` or ``"pld"``.
    """

    noise_multiplier: float
    clip: float
    sample_rate: float
    population: int
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    bit_noise_std: float | None = None
    accountant: str = "rdp"
    delta: float = 1e-5
    rounds_done: int = field(default=0, init=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(
                "client-level DP needs noise_multiplier > 0 (z = 0 gives no guarantee)")
        if not self.clip > 0:
            raise ValueError("the clipping norm must be > 0")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"the client sampling rate must be in (0, 1], got {self.sample_rate}")
        if self.sample_rate * self.population < 1:
            raise ValueError(
                f"an expected cohort of q·N = {self.sample_rate * self.population:.2f} < 1 client: "
                "raise the sampling rate or the population")
        if self.adaptive:
            if self.bit_noise_std is None:
                self.bit_noise_std = self.expected_clients / 20
            if self.update_noise_multiplier <= 0 or not math.isfinite(self.update_noise_multiplier):
                raise ValueError(
                    f"adaptive clipping with bit noise {self.bit_noise_std} leaves no budget "
                    f"for the update noise at z = {self.noise_multiplier}: raise bit_noise_std")
        from veil.dp.accountants import make_accountant  # scipy: only where DP is used
        make_accountant(self.accountant)  # unknown names fail now, not after training

    @property
    def expected_clients(self) -> float:
        return self.sample_rate * self.population

    @property
    def update_noise_multiplier(self) -> float:
        """The noise multiplier used on updates (``z``, or less with adaptive clipping)."""
        if not self.adaptive:
            return self.noise_multiplier
        rest = self.noise_multiplier ** -2 - (2 * self.bit_noise_std) ** -2
        return rest ** -0.5 if rest > 0 else -1.0

    @property
    def noise_std(self) -> float:
        """Std of the Gaussian noise on the sum of clipped updates this round."""
        return self.update_noise_multiplier * self.clip

    def sample(self, node_ids: list[int], rng: CSPRNG) -> list[int]:
        """Poisson sampling: each connected client independently with probability ``q``."""
        if len(node_ids) != self.population:
            raise ValueError(
                f"{len(node_ids)} clients are connected but the DP population is "
                f"{self.population}: "
                "the true sampling rate would differ from the one accounted for; refusing")
        u = rng.uniform(len(node_ids)).numpy()
        return [n for n, keep in zip(node_ids, u < self.sample_rate, strict=True) if keep]

    def clip_update(self, delta: np.ndarray) -> tuple[np.ndarray, bool]:
        """``delta`` scaled to norm <= ``clip``; and whether it already fitted."""
        norm = float(np.linalg.norm(delta))
        fits = norm <= self.clip
        return (delta if fits else delta * (self.clip / norm)), fits

    def update_clip(self, fitted_bits: float, rng: CSPRNG) -> None:
        """Adaptive step from the (plain) count of clients whose update fitted."""
        noisy = fitted_bits + float(rng.normal((1,))[0]) * float(self.bit_noise_std)
        frac = noisy / self.expected_clients
        self.clip *= math.exp(-self.clip_lr * (frac - self.target_quantile))

    def epsilon(self, rounds: int | None = None, delta: float | None = None) -> float:
        """ε after ``rounds`` rounds (default: those run so far) at ``delta`` (default: ours)."""
        k = self.rounds_done if rounds is None else rounds
        d = self.delta if delta is None else delta
        if k == 0:
            return 0.0
        if (k, d) not in self._cache:
            from veil.dp.accountants import make_accountant
            acc = make_accountant(self.accountant)
            acc.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=k)
            self._cache[(k, d)] = acc.get_epsilon(d)
        return self._cache[(k, d)]
