"""Federated learning on Flower, with secure aggregation and client-level DP.

Veil contributes Flower apps and strategies; Flower's simulation engine (Ray)
and deployment engine (SuperLink and SuperNodes over gRPC) run them.

- :class:`Task`: model, dataset, IID / Dirichlet partition, local training (SGD,
  FedProx, optional DP-SGD through :mod:`veil.dp`).
- :class:`FLConfig` and :func:`simulate`: one run in the simulation engine.
- Aggregation: ``"plain"`` (Flower's FedAvg), ``"secagg+"`` (Flower's SecAgg+) or
  ``"two-server"`` (:mod:`veil.fl.twoserver`: two non-colluding aggregators).
- :class:`ClientDP`: client-level central DP (fixed or adaptive clipping), ε from
  Veil's RDP/PLD accountants with the true client sampling rate.
- :mod:`veil.fl.deploy`: SuperLink + SuperNodes as separate processes.

Flower 1.42 needs Python >= 3.11; on older Pythons Veil installs without it
and importing this package raises an ImportError that says so.

Example
-------
>>> from veil.fl import FLConfig, Task
>>> cfg = FLConfig(task=Task(model="lenet", dataset="mnist", num_clients=100,
...                          partition="dirichlet:0.5"), rounds=20, fraction=0.1,
...                aggregation="two-server")
>>> cfg.aggregation
'two-server'
"""

import sys

if sys.version_info < (3, 11):  # pragma: no cover
    raise ImportError("veil.fl needs Flower 1.42, which needs Python >= 3.11 "
                      f"(this is {sys.version.split()[0]})")
try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError("veil.fl needs Flower: pip install 'flwr[simulation]>=1.42,<1.43'") from exc

from veil.fl.config import FLConfig
from veil.fl.partition import partition
from veil.fl.task import Task
from veil.fl.twoserver import TwoServerConfig

__all__ = ["ClientDP", "FLConfig", "Task", "TwoServerConfig", "partition", "simulate"]


def __getattr__(name: str):
    # loaded on use: a ClientApp process imports this package and needs neither
    # the DP accountants (scipy) nor the simulation engine (Ray)
    if name == "ClientDP":
        from veil.fl.dp import ClientDP
        return ClientDP
    if name == "simulate":
        from veil.fl.simulation import simulate
        return simulate
    raise AttributeError(f"module 'veil.fl' has no attribute {name!r}")
