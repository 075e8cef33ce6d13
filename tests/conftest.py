"""Suite-wide settings: hypothesis without per-example deadlines (CI machines are shared
and noisy; speed is measured by the benchmarks, not by the tests)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "veil",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("veil")
