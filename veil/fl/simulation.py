"""Run a federation in Flower's simulation engine (Ray backend) and collect its history.

Example
-------
>>> from veil.fl import FLConfig, Task, simulate
>>> cfg = FLConfig(task=Task(model="mlp", dataset="digits", num_clients=10), rounds=2)
>>> history = simulate(cfg)                     # doctest: +SKIP
>>> history["rounds"][-1]["accuracy"] > 0.5     # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from veil.fl.apps import RoundLog, client_app, make_server_app, secaggplus_client_app
from veil.fl.config import FLConfig


def simulate(cfg: FLConfig, progress: Callable[[dict], None] | None = None,
             num_cpus: int | None = None, quiet: bool = True) -> dict:
    """Run ``cfg`` with ``cfg.task.num_clients`` virtual SuperNodes; return its history.

    The history holds the initial and per-round accuracy and loss on the test
    set, measured bytes per client per round (up and down), server time per
    round (the round's wall time minus the time spent waiting for clients),
    ε when DP is on, and the final global arrays.
    """
    from flwr.simulation import run_simulation

    log_ = RoundLog(progress)
    server = make_server_app(cfg, log_)
    client = secaggplus_client_app() if cfg.aggregation == "secagg+" else client_app
    cpus = num_cpus or os.cpu_count() or 1
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False,
                             "log_to_driver": not quiet}}
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        run_simulation(server_app=server, client_app=client,
                       num_supernodes=cfg.task.num_clients, backend_config=backend)
    finally:
        flwr_logger.setLevel(level)
    if len(log_.rounds) != cfg.rounds:
        raise RuntimeError(f"the simulation stopped after {len(log_.rounds)} of {cfg.rounds} "
                           "rounds (see Flower's log above)")
    return {"config": cfg.to_flat(), "initial": log_.initial, "rounds": log_.rounds,
            "wall_s": time.perf_counter() - start, "final_arrays": log_.final_arrays}
