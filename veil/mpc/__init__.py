"""Two-party secure computation: parties, secret tensors, Beaver protocols, the runtime.

- :func:`run` (also ``veil.run``): run an SPMD job in two parties plus a dealer;
- :class:`Party`: a computing party (``share``, ``exchange``, ``material``, ``stats``);
- :class:`SecretTensor`: an additively shared fixed-point tensor;
- :mod:`veil.mpc.beaver`: one-round products from Beaver triples;
- :mod:`veil.mpc.nonlinear`: comparisons, ReLU, max (function secret sharing).
"""

from veil.mpc.party import Party
from veil.mpc.runtime import PartyFailedError, run
from veil.mpc.tensor import FixedSecretTensor, SecretTensor, cat, conv2d, stack

__all__ = ["FixedSecretTensor", "Party", "PartyFailedError", "SecretTensor", "cat", "conv2d",
           "run", "stack"]
