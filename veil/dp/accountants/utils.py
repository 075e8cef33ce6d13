"""``get_noise_multiplier`` with Opacus' signature (``opacus.accountants.utils``)."""

from __future__ import annotations

from veil.dp.calibration import noise_multiplier_for


def get_noise_multiplier(*, target_epsilon: float, target_delta: float, sample_rate: float,
                         epochs: float | None = None, steps: int | None = None,
                         accountant: str = "rdp", epsilon_tolerance: float = 0.01,
                         **_ignored) -> float:
    """Smallest σ whose ε after ``steps`` (or ``epochs / sample_rate``) steps is at most
    ``target_epsilon`` (within ``epsilon_tolerance``).

    Example
    -------
    >>> s = get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5,
    ...                          sample_rate=256 / 60000, epochs=10)
    >>> 1.0 < s < 1.5
    True
    """
    if steps is None:
        if epochs is None:
            raise ValueError("give epochs or steps")
        steps = int(epochs / sample_rate)
    return noise_multiplier_for(target_epsilon, target_delta, sample_rate, steps,
                                accountant=accountant, tolerance=epsilon_tolerance)
