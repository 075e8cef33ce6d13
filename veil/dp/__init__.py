"""Differential privacy: mechanisms for statistics, DP-SGD with accountants, and DP-SGLD
(noisy SGD with hidden intermediate iterates).

Example
-------
>>> from veil.dp import PrivacyEngine
>>> engine = PrivacyEngine(accountant="pld")
"""

from veil.dp.accountants import (
    GaussianAccountant,
    PLDAccountant,
    PRVAccountant,
    RDPAccountant,
    make_accountant,
)
from veil.dp.accountants.utils import get_noise_multiplier
from veil.dp.calibration import epsilon_for, noise_multiplier_for
from veil.dp.data_loader import DPDataLoader
from veil.dp.engine import PrivacyEngine, virtual_batches
from veil.dp.grad_sample import GradSampleModule
from veil.dp.optimizer import DPOptimizer
from veil.dp.sampling import PoissonBatchSampler, poisson_loader
from veil.dp.validators import ModuleValidator, UnsupportedModuleError, fix_batchnorm, validate

__all__ = [
    "DPDataLoader",
    "DPOptimizer",
    "GaussianAccountant",
    "GradSampleModule",
    "ModuleValidator",
    "PLDAccountant",
    "PRVAccountant",
    "PoissonBatchSampler",
    "PrivacyEngine",
    "RDPAccountant",
    "UnsupportedModuleError",
    "epsilon_for",
    "fix_batchnorm",
    "get_noise_multiplier",
    "make_accountant",
    "noise_multiplier_for",
    "poisson_loader",
    "validate",
    "virtual_batches",
]
