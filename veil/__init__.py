"""Veil: privacy-preserving machine learning on PyTorch.

Three goals: training data is never directly exposed (secret sharing,
federated learning); a trained model does not disclose its training data
(differential privacy, measured with attacks); a model is usable but not
visible (two-party computation with function secret sharing, functional
encryption).

The top-level names are imported lazily, so ``import veil`` is cheap.

Example
-------
>>> import torch, veil
>>> def job(party):
...     x = party.share(torch.ones(2, 2) if party.rank == 0 else None, owner=0, shape=(2, 2))
...     return (x * 3).reveal()
>>> results = veil.run(job, transport="local")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "run": "veil.mpc.runtime",
    "secure_inference": "veil.nn.inference",
    "secure_train": "veil.nn.training",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'veil' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
