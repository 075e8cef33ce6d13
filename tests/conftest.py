"""Suite-wide settings: hypothesis without per-example deadlines (CI machines are shared
and noisy; speed is measured by the benchmarks, not by the tests)."""

import os
import tempfile

from hypothesis import HealthCheck, settings

# Durable state (the ledger of consumed preprocessing stores) goes to a scratch folder, not
# the user's ~/.local/state; subprocesses started by tests inherit it.
os.environ.setdefault("VEIL_STATE_DIR", tempfile.mkdtemp(prefix="veil-test-state-"))

settings.register_profile(
    "veil",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("veil")
