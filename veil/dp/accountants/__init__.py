"""Privacy accountants for the Poisson-subsampled Gaussian mechanism (tensor-free).

- :class:`RDPAccountant`: Rényi DP (Mironov 2017; Mironov, Talwar, Zhang 2019),
  converted to (ε, δ) with the tight conversion of Balle et al. 2020.
- :class:`PLDAccountant`: privacy loss distributions with connect-the-dots
  discretisation (Doroshenko, Ghazi, Kamath, Kumar, Manurangsi 2022), composed by FFT.
  Tighter than RDP (typically 10-20 % smaller ε), still a certified upper bound.

Both are implemented here from the formulas (numpy/scipy only) and cross-checked in
the tests against Google's ``dp-accounting``.

Example
-------
>>> from veil.dp.accountants import RDPAccountant, PLDAccountant
>>> acc = RDPAccountant()
>>> acc.step(noise_multiplier=1.1, sample_rate=256 / 60000, steps=2340)
>>> round(acc.get_epsilon(1e-5), 2)
1.1
"""

from veil.dp.accountants.base import Accountant, make_accountant
from veil.dp.accountants.gdp import GaussianAccountant
from veil.dp.accountants.pld import PLDAccountant, PRVAccountant
from veil.dp.accountants.rdp import RDPAccountant, compute_rdp, rdp_to_epsilon

__all__ = [
    "Accountant",
    "GaussianAccountant",
    "PLDAccountant",
    "PRVAccountant",
    "RDPAccountant",
    "compute_rdp",
    "make_accountant",
    "rdp_to_epsilon",
]
